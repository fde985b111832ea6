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

from schedules import objectives as obj
from schedules.objectives import COST_NAMES, FIGURE_NAMES
from schedules.provenance import ORIGIN_LABELS, describe, origin
from store import DONE, SEARCH, EvaluationRecord, StudyInfo, StudySummary

#: Columns of an evaluation table that are not metrics; metric `m` lives in column `metric:m`
#: (a prefix, so a metric can never shadow a column such as `id` or `step`). `origin` and `found_by`
#: are the provenance's (`schedules.provenance`).
BASE_COLUMNS = ("id", "schedule_hash", "status", "kind", "step", *FIGURE_NAMES, "compute_fraction", "recorded_at",
                "worker", "error", "n_thumbnails", "prompt_set_hash")
DERIVED_COLUMNS = ("origin", "found_by", "searcher")
_NUMERIC = (*COST_NAMES, "latency_s", "compute_fraction", "recorded_at")


def column(objective: str) -> str:
    """Column of an objective in an evaluation table (cost figures are plain columns)."""
    if objective in FIGURE_NAMES:
        return objective
    return f"metric:{objective}"


@dataclass(frozen=True)
class EvalTable:
    """One study's evaluations as a frame (one row per evaluation, in recording order)."""

    study: str
    frame: pd.DataFrame
    metrics: tuple[str, ...] = field(default=())

    def done(self) -> pd.DataFrame:
        """Done evaluations of the search itself (other kinds never enter fronts)."""
        return self.frame[(self.frame["status"] == DONE) & (self.frame["kind"] == SEARCH)]

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
    data["origin"] = [origin(r.provenance) for r in records]
    data["found_by"] = [describe(r.provenance) for r in records]
    data["searcher"] = [str(r.provenance.get("searcher") or "") for r in records]
    for m in metrics:
        data[f"metric:{m}"] = [r.metrics.get(m) for r in records]
    frame = pd.DataFrame(data, columns=[*BASE_COLUMNS, *DERIVED_COLUMNS, *(f"metric:{m}" for m in metrics)])
    for c in _NUMERIC + tuple(f"metric:{m}" for m in metrics):
        frame[c] = pd.to_numeric(frame[c], errors="coerce").astype(float)
    return EvalTable(study, frame, tuple(metrics))


def front_ids(table: EvalTable, info: StudyInfo, quality: str, cost: str) -> list[int]:
    """Ids of the front on (quality, cost), ordered like `Store.front` (cost ascending, then id).
    Same rule and same non-dominance code as the store (`schedules.objectives`), applied to the table
    the page already holds, so a 10,000-evaluation study is read once per change, not once per question."""
    pts = table.points(quality, cost)
    if not len(pts):
        return []
    flags = info.pair(quality, cost).maximise_flags
    values = np.column_stack([pts[column(quality)].to_numpy(dtype=float), pts[column(cost)].to_numpy(dtype=float)])
    mask = obj.nondominated(values, flags)
    sign = 1.0 if flags[1] else -1.0
    members = sorted(zip(sign * values[mask, 1], pts["id"].to_numpy()[mask]))
    return [int(i) for _, i in members]


def knee_id(table: EvalTable, info: StudyInfo, quality: str, cost: str) -> int | None:
    """The knee of the front (`schedules.objectives.knee_index`, as `cachesearch export --pick knee`)."""
    ids = front_ids(table, info, quality, cost)
    if not ids:
        return None
    pts = table.frame.set_index("id").loc[ids, [column(quality), column(cost)]].to_numpy(dtype=float)
    return ids[obj.knee_index(pts, info.pair(quality, cost).maximise_flags)]


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
    """A local time stamp, '' for none (None or NaN: an unfinished evaluation)."""
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts and ts == ts else ""


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
            "last update": _when(s.updated_at), "model": s.model_name, "model signature": s.model_signature,
        })
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------- units, names
def unit(info: StudyInfo | None, name: str) -> str:
    """Display unit of an objective or metric: the study objective's, else the unit the search
    recorded for the evaluation's metrics (`metric_units` in the study config); costs are 'x'."""
    if name in COST_NAMES:
        return obj.COST_UNIT
    if info is None:
        return ""
    listed = info.objectives.get(name)
    if listed is not None and listed.unit:
        return listed.unit
    return str((info.config.get("metric_units") or {}).get(name, ""))


def axis_label(info: StudyInfo | None, name: str) -> str:
    """'psnr (dB)', 'MAC speedup (x)'."""
    u = unit(info, name)
    return f"{obj.label(name)} ({u})" if u else obj.label(name)


def model_labels(infos: Mapping[str, StudyInfo]) -> dict[str, str]:
    """Signature -> the model's name for pages; a name two signatures share gets the signature's start."""
    names: dict[str, str] = {}
    for info in infos.values():
        names.setdefault(info.model_signature, info.model_name)
    shared = {n for n in names.values() if list(names.values()).count(n) > 1}
    return {sig: f"{n} ({sig[:8]})" if n in shared else n for sig, n in names.items()}


def prompt_sets(table: EvalTable) -> frozenset[str]:
    """The prompt sets a study's own done evaluations were scored on."""
    done = table.done()
    return frozenset(str(p) for p in done["prompt_set_hash"].dropna() if p)


def comparable(info: StudyInfo, table: EvalTable, other: StudyInfo, other_table: EvalTable) -> bool:
    """Whether two studies' figures can share a plot: the same model (signature), scored on the same
    prompt sets, as far as known: a study with nothing done yet (e.g. another driver's, just started)
    has no known prompt set and counts as comparable until its results say otherwise."""
    if info.model_signature != other.model_signature:
        return False
    mine, theirs = prompt_sets(table), prompt_sets(other_table)
    return not mine or not theirs or mine == theirs


# ------------------------------------------------------------------------------------------- the evaluations table
def evaluations_frame(table: EvalTable, info: StudyInfo | None) -> pd.DataFrame:
    """Every evaluation of a study as the Evaluations page shows it (and its CSV holds): ids, status,
    who found it, each metric (headers with units), every cost figure, timing and errors."""
    f = table.frame
    out = pd.DataFrame({
        "id": f["id"], "status": f["status"], "kind": f["kind"],
        "found": f["origin"].map(lambda o: ORIGIN_LABELS.get(o, o)), "found by": f["found_by"],
        "searcher": f["searcher"], "step": f["step"]})
    for m in table.metrics:
        out[axis_label(info, m)] = f[f"metric:{m}"]
    for name in COST_NAMES:
        out[axis_label(info, name)] = f[name]
    out["computed"] = f["compute_fraction"]
    out["s per image"] = f["latency_s"]
    out["finished"] = [_when(t) for t in f["recorded_at"]]
    out["worker"] = f["worker"]
    out["error"] = f["error"]
    out["hash"] = f["schedule_hash"].str.slice(0, 12)
    return out.reset_index(drop=True)


def filter_evaluations(frame: pd.DataFrame, statuses: Sequence[str] | None = None,
                       found: Sequence[str] | None = None, searchers: Sequence[str] | None = None,
                       text: str = "") -> pd.DataFrame:
    """The rows matching every filter given (None or empty: no filter on that column); `text`
    matches the provenance line, the hash or the error, case-insensitively."""
    keep = pd.Series(True, index=frame.index)
    for col, wanted in (("status", statuses), ("found", found), ("searcher", searchers)):
        if wanted:
            keep &= frame[col].isin(list(wanted))
    if text.strip():
        needle = text.strip().lower()
        hay = frame["found by"].fillna("") + " " + frame["hash"].fillna("") + " " + frame["error"].fillna("")
        keep &= hay.str.lower().str.contains(needle, regex=False)
    return frame[keep].reset_index(drop=True)


def _has_quality(info: StudyInfo) -> bool:
    return any(o.role == obj.QUALITY for o in info.objectives)


def quality_metrics(infos: Sequence[StudyInfo], tables: Sequence[EvalTable]) -> list[str]:
    """Metrics worth offering as the quality axis: primary objectives first, then any metric seen."""
    out: list[str] = []
    for info in infos:
        for o in info.objectives:
            if o.role == obj.QUALITY and o.name not in out:
                out.append(o.name)
    for t in tables:
        out += [m for m in t.metrics if m not in out]
    return out
