"""Rich tables the CLI prints: the front of a study, the list of studies, a search's summary."""

from __future__ import annotations

import time
from typing import Any, Sequence

from rich.table import Table


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def front_table(records: Sequence[Any], quality: str, cost: str, title: str, limit: int | None = None) -> Table:
    """Front members (store EvaluationRecords, sorted by cost ascending), fastest first."""
    table = Table(title=title, title_justify="left")
    for col, justify in (("#", "right"), ("hash", "left"), (quality, "right"), (cost, "right"),
                         ("mac", "right"), ("latency", "right"), ("computed", "right"), ("from", "left")):
        table.add_column(col, justify=justify)
    rows = list(reversed(records))
    for i, r in enumerate(rows[:limit] if limit else rows):
        prov = r.provenance or {}
        origin = prov.get("heuristic") or prov.get("searcher") or ""
        table.add_row(str(i), r.schedule_hash[:12], _fmt(r.objective(quality)), _fmt(r.objective(cost)),
                      _fmt(r.mac_speedup, 3) + "x" if r.mac_speedup else "-",
                      _fmt(r.latency_speedup, 3) + "x" if r.latency_speedup else "-",
                      f"{r.compute_fraction:.0%}" if r.compute_fraction is not None else "-", str(origin))
    if limit and len(rows) > limit:
        table.caption = f"{len(rows) - limit} more front members not shown"
    return table


def studies_table(summaries: Sequence[Any], now: float | None = None) -> Table:
    """One row per study; a `running` study whose heartbeat stopped shows as "stale (last seen ...)"."""
    now = time.time() if now is None else now
    table = Table(title="studies", title_justify="left")
    for col in ("name", "searcher", "status", "evaluations", "failed", "front", "best quality", "best speedup",
                "updated"):
        table.add_column(col, justify="left" if col in ("name", "searcher", "status") else "right",
                         no_wrap=col in ("name", "status"))
    for s in summaries:
        updated = time.strftime("%Y-%m-%d %H:%M", time.localtime(s.updated_at))
        table.add_row(s.name, s.searcher, s.display_status(now), str(s.n_evaluations), str(s.n_failed),
                      str(s.front_size), _fmt(s.best_quality), _fmt(s.best_speedup), updated)
    return table


def metrics_table(result: Any, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("status", result.status)
    if result.error:
        table.add_row("error", result.error)
    for k, v in sorted(result.metrics.items()):
        table.add_row(k, _fmt(v))
    table.add_row("mac_speedup", _fmt(result.mac_speedup))
    table.add_row("latency_speedup", _fmt(result.latency_speedup))
    table.add_row("latency_s per image", _fmt(result.latency_s))
    return table


def describe_table(spec: Any, cost_table: Any | None) -> Table:
    table = Table(title=f"{spec.transformer_class} ({spec.family})", title_justify="left")
    for col in ("group", "blocks", "component", "MACs per call (all blocks)"):
        table.add_column(col)
    for g in spec.block_groups:
        for c in g.components:
            macs = sum(cost_table.component_macs[g.name][c]) if cost_table is not None else None
            table.add_row(g.name, str(g.num_blocks), c, f"{macs:,}" if macs is not None else "-")
    if cost_table is not None:
        table.caption = f"rest of one call: {cost_table.other_macs:,} MACs; full call {cost_table.call_macs:,}"
    return table
