"""What the CLI prints: rich tables for people, JSON documents for scripts (`--json`), from the same
records, so both show the same evaluation ids, figures and provenance. Imports no torch: the store
commands use it."""

from __future__ import annotations

import time
from typing import Any, Sequence

from rich.markup import escape
from rich.table import Table

from schedules.objectives import COST_NAMES, FIGURE_NAMES, Objectives, label
from schedules.provenance import describe, origin


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _speedup(value: float | None) -> str:
    return f"{value:.3g}x" if value is not None else "-"


def front_table(records: Sequence[Any], pair: Objectives, title: str, limit: int | None = None) -> Table:
    """Front members (store EvaluationRecords, sorted by cost ascending), fastest first, by evaluation
    id; every cost figure, and who found each one."""
    quality, cost = pair[0], pair[1]
    table = Table(title=title, title_justify="left")
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("hash", no_wrap=True)
    table.add_column(quality.label, justify="right", no_wrap=True)
    for name in COST_NAMES:
        table.add_column(label(name) + (" *" if name == cost.name else ""), justify="right", no_wrap=True)
    table.add_column("computed", justify="right", no_wrap=True)
    table.add_column("found by")
    rows = list(reversed(records))
    for r in rows[:limit] if limit else rows:
        table.add_row(str(r.id), r.schedule_hash[:12], _fmt(r.objective(quality.name)),
                      *(_speedup(r.objective(name)) for name in COST_NAMES),
                      f"{r.compute_fraction:.0%}" if r.compute_fraction is not None else "-", describe(r.provenance))
    notes = [f"* the front's speed axis ({cost.name})"]
    if limit and len(rows) > limit:
        notes.append(f"{len(rows) - limit} more front members not shown")
    table.caption = "; ".join(notes)
    table.caption_justify = "left"
    return table


def member_doc(record: Any, pair: Objectives | None = None) -> dict[str, Any]:
    """One evaluation as JSON: id, hash, status, every figure, metrics, provenance and who found it."""
    doc: dict[str, Any] = {"id": record.id, "hash": record.schedule_hash, "status": record.status,
                           "kind": record.kind}
    if pair is not None:
        doc.update({o.name: record.objective(o.name) for o in pair})
    doc.update({name: getattr(record, name) for name in FIGURE_NAMES})
    doc.update({"metrics": dict(record.metrics), "compute_fraction": record.compute_fraction,
                "step": record.step, "prompt_set_hash": record.prompt_set_hash, "origin": origin(record.provenance),
                "found_by": describe(record.provenance), "provenance": dict(record.provenance)})
    return doc


def front_doc(info: Any, pair: Objectives, records: Sequence[Any], hypervolume: float | None,
              hypervolume_note: str | None) -> dict[str, Any]:
    """`cachesearch front --json`: the front fastest first, with the objectives it is on."""
    return {"study": info.name, "quality": pair[0].name, "cost": pair[1].name,
            "maximize": {o.name: o.maximize for o in pair}, "hypervolume": hypervolume,
            "hypervolume_note": hypervolume_note, "members": [member_doc(r, pair) for r in reversed(records)]}


def studies_table(summaries: Sequence[Any], now: float | None = None) -> Table:
    """One row per study; a `running` study whose heartbeat stopped shows as "stale (last seen ...)"."""
    now = time.time() if now is None else now
    table = Table(title="studies", title_justify="left")
    for col in ("name", "model", "searcher", "status", "evaluations", "failed", "front", "best quality",
                "best speedup", "updated"):
        table.add_column(col, justify="left" if col in ("name", "model", "searcher", "status") else "right",
                         no_wrap=col in ("name", "status", "model"))
    for s in summaries:
        updated = time.strftime("%Y-%m-%d %H:%M", time.localtime(s.updated_at))
        best_q = f"{_fmt(s.best_quality)} {s.quality}" if s.best_quality is not None else "-"
        best_c = f"{_speedup(s.best_speedup)} {label(s.cost)}" if s.best_speedup is not None else "-"
        table.add_row(s.name, s.model_name, s.searcher, s.display_status(now), str(s.n_evaluations), str(s.n_failed),
                      str(s.front_size), best_q, best_c, updated)
    return table


def studies_doc(summaries: Sequence[Any], now: float) -> list[dict[str, Any]]:
    """`cachesearch studies --json`."""
    return [{"name": s.name, "model": s.model_name, "model_signature": s.model_signature, "searcher": s.searcher,
             "status": s.display_status(now), "evaluations": s.n_evaluations, "done": s.n_done,
             "failed": s.n_failed, "pending": s.n_pending, "front_size": s.front_size, "quality": s.quality,
             "best_quality": s.best_quality, "cost": s.cost, "best_speedup": s.best_speedup,
             "created_at": s.created_at, "updated_at": s.updated_at,
             "heartbeat_at": s.run.heartbeat_at if s.run is not None else None} for s in summaries]


def written_line(written: Any, pair: Objectives) -> str:
    """'wrote fast.json: evaluation 12 (3fa9c0d1e2b4), psnr 31.2 dB, MAC speedup 2.41x, ...; found by ...'"""
    r = written.record
    quality = pair[0]
    figures = [f"{quality.name} {_fmt(r.objective(quality.name))}{' ' + quality.unit if quality.unit else ''}"]
    figures += [f"{label(n)} {_speedup(r.objective(n))}" for n in COST_NAMES if r.objective(n) is not None]
    return (f"wrote {written.path}: evaluation {r.id} ({r.schedule_hash[:12]}), {', '.join(figures)}; "
            f"found by {describe(r.provenance)}")


def written_doc(written: Sequence[Any], pair: Objectives, pick: str | None) -> dict[str, Any]:
    """`cachesearch export --json`: each file written and the evaluation it holds."""
    return {"pick": pick, "quality": pair[0].name, "cost": pair[1].name,
            "written": [{"path": str(w.path), **member_doc(w.record, pair)} for w in written]}


def metrics_table(result: Any, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("status", result.status)
    if result.error:
        table.add_row("error", result.error)
    for k, v in sorted(result.metrics.items()):
        table.add_row(k, _fmt(v))
    for name in COST_NAMES:
        table.add_row(name, _fmt(getattr(result, name)))
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


def describe_doc(spec: Any, cost_table: Any | None) -> dict[str, Any]:
    """`cachesearch describe --json`: the model spec (as a schedule file carries it) and its MACs."""
    doc: dict[str, Any] = {"model": spec.to_dict(), "cost_table": None}
    if cost_table is not None:
        doc["cost_table"] = cost_table.to_dict()
        doc["macs_per_call"] = {"components": {g.name: {c: sum(cost_table.component_macs[g.name][c])
                                                        for c in g.components} for g in spec.block_groups},
                                "rest": cost_table.other_macs, "full": cost_table.call_macs}
    return doc


def validation_table(pairs: Sequence[Any], cost: str, max_drop: float, title: str) -> Table:
    """Front members: calibration vs held-out quality, the drop, and a flag beyond `max_drop`."""
    q = pairs[0].quality if pairs else None
    unit = f" ({q.unit})" if q is not None and q.unit else ""
    table = Table(title=title)
    for col in ("id", label(cost), f"calibration{unit}", f"held-out{unit}", "drop", ""):
        table.add_column(col, justify="right" if col else "left")
    for p in pairs:
        drop = p.drop
        table.add_row(str(p.original.id), _speedup(p.original.objective(cost)), _fmt(p.calibration_quality),
                      _fmt(p.heldout_quality) if p.heldout is not None else "not validated",
                      _fmt(drop) if drop is not None else "-", "DROPS" if p.flagged(max_drop) else "")
    return table


def validation_doc(pairs: Sequence[Any], cost: str, max_drop: float, heldout_set: str | None) -> dict[str, Any]:
    return {"prompt_set_hash": heldout_set, "max_drop": max_drop, "quality": pairs[0].quality.name if pairs else None,
            "members": [{"id": p.original.id, "schedule_hash": p.original.schedule_hash,
                         cost: p.original.objective(cost), "calibration": p.calibration_quality,
                         "heldout": p.heldout_quality, "heldout_id": p.heldout.id if p.heldout else None,
                         "drop": p.drop, "flagged": p.flagged(max_drop)} for p in pairs]}


def compare_table(comparisons: Sequence[Any], costs: Sequence[str], title: str) -> Table:
    """Per peer setting: its figures, and our front's best quality at >= its speed on each cost."""
    table = Table(title=title)
    table.add_column("peer setting", justify="left")
    table.add_column("quality", justify="right")
    for c in costs:
        table.add_column(label(c), justify="right")
        table.add_column(f"ours at >= ({c})", justify="right")
        table.add_column("margin", justify="right")
    for cmp in comparisons:
        peer = cmp.baseline
        if not peer.ok:
            table.add_row(peer.label, "cannot run", *(["", "", ""] * len(costs)))
            continue
        cells = [peer.label, _fmt(cmp.peer_quality)]
        for c in costs:
            m = cmp.by_cost[c]
            ours = f"{_fmt(m.ours_quality)} (#{m.ours_id})" if m.ours_id is not None else "nothing that fast"
            cells += [_speedup(m.peer_speed), ours, f"{m.margin:+.2f}" if m.margin is not None else "-"]
        table.add_row(*cells)
    return table


def compare_doc(comparisons: Sequence[Any], costs: Sequence[str]) -> dict[str, Any]:
    return {"peers": [{
        "label": c.baseline.label, "method": c.baseline.method, "settings": c.baseline.settings,
        "status": c.baseline.status, "error": c.baseline.error, "hooked": len(c.baseline.hooked),
        "quality": c.quality, "peer_quality": c.peer_quality,
        **{cost: {"peer": m.peer_speed, "ours_id": m.ours_id, "ours_quality": m.ours_quality,
                  "ours_speed": m.ours_speed, "margin": m.margin} for cost, m in c.by_cost.items()}}
        for c in comparisons]}


def compare_summary(comparisons: Sequence[Any], costs: Sequence[str]) -> list[str]:
    """One line per cost: the worst and median margin over the peers that ours can match in speed."""
    out = []
    for c in costs:
        margins = sorted(m.margin for cmp in comparisons if (m := cmp.by_cost.get(c)) and m.margin is not None
                         and (m.peer_speed or 0.0) > 1.0)       # a peer slower than all-compute saves nothing
        if margins:
            out.append(f"{label(c)}: our front vs {len(margins)} peer setting(s) faster than all-compute, at "
                       f"equal or higher speed: worst {margins[0]:+.2f}, median {margins[len(margins) // 2]:+.2f}")
        else:
            out.append(f"{label(c)}: no peer setting faster than all-compute that our front can match in speed")
    return out


def baselines_table(peers: Sequence[Any], pair: Objectives, title: str) -> Table:
    table = Table(title=title)
    for col in ("peer setting", label(pair[1].name), label("latency_speedup"), pair[0].name, "modules hooked"):
        table.add_column(col, justify="left" if col == "peer setting" else "right")
    for p in peers:
        if not p.ok:
            table.add_row(p.label, "-", "-", "cannot run", p.error or "")
            continue
        table.add_row(p.label, _speedup(p.objective(pair[1].name)), _speedup(p.latency_speedup),
                      _fmt(p.objective(pair[0].name)), str(len(p.hooked)))
    return table


def baselines_doc(peers: Sequence[Any], pair: Objectives) -> list[dict[str, Any]]:
    return [{"label": p.label, "method": p.method, "settings": p.settings, "status": p.status, "error": p.error,
             pair[1].name: p.objective(pair[1].name), "latency_speedup": p.latency_speedup,
             pair[0].name: p.objective(pair[0].name), "macs": p.macs, "hooked": p.hooked} for p in peers]


def peers_table(entries: Sequence[Any]) -> Table:
    """The registered peer methods (`cachesearch peers`): what each does and its default settings."""
    table = Table(title="peer methods a study's `baselines:` section can score", show_lines=True)
    for col in ("method", "default settings", "what it does"):
        table.add_column(col, overflow="fold")
    for b in entries:
        settings = ", ".join(f"{k}={v}" for k, v in b.defaults.items() if k != "mag_ratios")
        note = "" if b.available else f"\n(not installed: {b.install_hint})"
        table.add_row(b.name, escape(settings), escape(b.description + note))
    return table


def peers_doc(entries: Sequence[Any]) -> list[dict[str, Any]]:
    return [{"method": b.name, "description": b.description, "defaults": dict(b.defaults),
             "requires": b.requires, "available": b.available} for b in entries]
