"""Evaluations and studies as pandas frames: the shapes every page and figure works from.

Pure functions of store records (no Streamlit, no database), so they are tested and timed directly.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from store import COST_OBJECTIVES, DONE, EvaluationRecord, StudyInfo, StudySummary, pareto

#: Columns of an evaluation table that are not metrics; metric `m` lives in column `metric:m`
#: (a prefix, so a metric can never shadow a column such as `id` or `step`).
BASE_COLUMNS = ("id", "schedule_hash", "status", "step", "mac_speedup", "latency_speedup", "macs",
                "latency_s", "compute_fraction", "recorded_at", "worker", "error", "n_thumbnails")
_NUMERIC = ("mac_speedup", "latency_speedup", "latency_s", "compute_fraction", "recorded_at")


def column(objective: str) -> str:
    """Column of an objective in an evaluation table (cost figures are plain columns)."""
    if objective in COST_OBJECTIVES or objective in ("macs", "latency_s"):
        return objective
    return f"metric:{objective}"


@dataclass(frozen=True)
class EvalTable:
    """One study's evaluations as a frame (one row per evaluation, in recording order)."""

    study: str
    frame: pd.DataFrame
    metrics: tuple[str, ...] = field(default=())

    def done(self) -> pd.DataFrame:
        return self.frame[self.frame["status"] == DONE]

    def points(self, quality: str, cost: str) -> pd.DataFrame:
        """Done evaluations with finite values for both objectives (what a front is made of)."""
        q, c = column(quality), column(cost)
        if q not in self.frame or c not in self.frame:
            # no done evaluation has the metric yet (a study that has just started): no points, but
            # the columns the figures read
            return self.frame.iloc[0:0].assign(**{col: pd.Series(dtype=float) for col in (q, c)
                                                   if col not in self.frame})
        done = self.done()
        ok = np.isfinite(done[q].to_numpy(dtype=float)) & np.isfinite(done[c].to_numpy(dtype=float))
        return done[ok]


def evaluation_table(study: str, records: Sequence[EvaluationRecord]) -> EvalTable:
    metrics = sorted({k for r in records for k in r.metrics})
    data: dict[str, list[Any]] = {c: [getattr(r, c) for r in records] for c in BASE_COLUMNS}
    for m in metrics:
        data[f"metric:{m}"] = [r.metrics.get(m) for r in records]
    frame = pd.DataFrame(data, columns=list(BASE_COLUMNS) + [f"metric:{m}" for m in metrics])
    for c in _NUMERIC + tuple(f"metric:{m}" for m in metrics):
        frame[c] = pd.to_numeric(frame[c], errors="coerce").astype(float)
    return EvalTable(study, frame, tuple(metrics))


def front_ids(table: EvalTable, info: StudyInfo, quality: str, cost: str) -> list[int]:
    """Ids of the front on (quality, cost), ordered like `Store.front` (cost ascending, then id).
    Same rule and same non-dominance code as the store (`store.pareto`), applied to the table the page
    already holds, so a 10,000-evaluation study is read once per change, not once per question."""
    pts = table.points(quality, cost)
    if not len(pts):
        return []
    values = np.column_stack([pts[column(quality)].to_numpy(dtype=float), pts[column(cost)].to_numpy(dtype=float)])
    mask = pareto.nondominated(values, [info.maximize(quality), info.maximize(cost)])
    sign = 1.0 if info.maximize(cost) else -1.0
    members = sorted(zip(sign * values[mask, 1], pts["id"].to_numpy()[mask]))
    return [int(i) for _, i in members]


def knee_id(table: EvalTable, info: StudyInfo, quality: str, cost: str) -> int | None:
    """The knee of the front (`store.pareto.knee_index`, as `cachesearch export --pick knee`)."""
    ids = front_ids(table, info, quality, cost)
    if not ids:
        return None
    pts = table.frame.set_index("id").loc[ids, [column(quality), column(cost)]].to_numpy(dtype=float)
    return ids[pareto.knee_index(pts, [info.maximize(quality), info.maximize(cost)])]


def best_cost_at(table: EvalTable, info: StudyInfo, quality: str, cost: str, threshold: float) -> float | None:
    """Best `cost` among done evaluations whose `quality` meets `threshold` (>= when the study
    maximises it, <= when it minimises, e.g. latent MSE). None when nothing qualifies."""
    pts = table.points(quality, cost)
    if not len(pts):
        return None
    q = pts[column(quality)].to_numpy(dtype=float)
    c = pts[column(cost)].to_numpy(dtype=float)
    ok = q >= threshold if info.maximize(quality) else q <= threshold
    if not ok.any():
        return None
    return float(c[ok].max() if info.maximize(cost) else c[ok].min())


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else ""


def studies_frame(summaries: Sequence[StudySummary], infos: Mapping[str, StudyInfo],
                  tables: Mapping[str, EvalTable], quality: str, cost: str, threshold: float,
                  now: float | None = None) -> pd.DataFrame:
    """The studies table: one row per study, best `cost` among evaluations meeting the quality bar;
    a running study whose heartbeat stopped shows as "stale (last seen ...)"."""
    now = time.time() if now is None else now
    rows = []
    for s in summaries:
        info = infos[s.name]
        table = tables.get(s.name)
        best = best_cost_at(table, info, quality, cost, threshold) if table is not None else None
        rows.append({
            "study": s.name, "searcher": s.searcher, "status": s.display_status(now), "evaluations": s.n_evaluations,
            "failed": s.n_failed, "pending": s.n_pending, "front size": s.front_size,
            f"best {cost} at {quality} bar": best,
            "primary quality": info.quality if _has_quality(info) else "", "best quality": s.best_quality,
            "last update": _when(s.updated_at), "model": s.model_signature,
        })
    return pd.DataFrame(rows)


def _has_quality(info: StudyInfo) -> bool:
    return any(o.name not in COST_OBJECTIVES for o in info.objectives)


def quality_metrics(infos: Sequence[StudyInfo], tables: Sequence[EvalTable]) -> list[str]:
    """Metrics worth offering as the quality axis: primary objectives first, then any metric seen."""
    out: list[str] = []
    for info in infos:
        for o in info.objectives:
            if o.name not in COST_OBJECTIVES and o.name not in out:
                out.append(o.name)
    for t in tables:
        out += [m for m in t.metrics if m not in out]
    return out
