"""Pareto fronts and hypervolume read straight from the evaluation table, as a mixin of `Store`.

Kept apart from the persistence code because it is the analysis layer the dashboard and the searchers'
progress reports lean on: it reads only the objective columns (never the per-prompt payloads) and hands
non-dominated sorting and hypervolume to `pareto` (moocore).  The host class provides `_reading()` (a
read session) and `_study_row(session, name)`.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from typing import Any, Sequence

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from . import pareto
from .convert import finished_order, record_from_row, record_select, study_info
from .errors import ObjectiveError
from .models import Evaluation, Study
from .records import COST_OBJECTIVES, DONE, FAILED, EvaluationRecord, HVPoint, StudyInfo

# Raw objective columns of a finished evaluation, in recording order (fronts, hypervolume, listings).
OBJECTIVE_COLUMNS = (Evaluation.id, Evaluation.status, Evaluation.metrics, Evaluation.mac_speedup,
                      Evaluation.latency_speedup, Evaluation.macs, Evaluation.latency_s)


def _objective(row: Any, name: str) -> float | None:
    """Same rule as `EvaluationResult.objective`: a cost column or a metric, None unless finite."""
    if name in ("mac_speedup", "latency_speedup", "macs", "latency_s"):
        value = getattr(row, name)
    else:
        value = (row.metrics or {}).get(name)
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


class FrontierQueries:
    """Fronts, hypervolume and its history over a study's (quality, cost) objectives."""

    # provided by the host class (`Store`)
    def _reading(self) -> AbstractContextManager[Session]: ...
    def _study_row(self, session: Session, name: str) -> Study: ...

    @staticmethod
    def _default_quality(info: StudyInfo, required: bool = True) -> str | None:
        if required or any(o.name not in COST_OBJECTIVES for o in info.objectives):
            return info.quality
        return None

    @staticmethod
    def _points(rows: Sequence[Any], quality: str, cost: str) -> tuple[np.ndarray, list[int]]:
        """(quality, cost) of the rows that have both, with their positions in `rows`."""
        pts, idx = [], []
        for i, row in enumerate(rows):
            q, c = _objective(row, quality), _objective(row, cost)
            if q is not None and c is not None:
                pts.append((q, c))
                idx.append(i)
        return np.asarray(pts, dtype=float).reshape(-1, 2), idx

    def _objective_rows(self, session: Session, study_id: int, statuses: tuple[str, ...],
                        prompt_set_hash: str | None) -> list[Any]:
        q = select(*OBJECTIVE_COLUMNS).where(Evaluation.study_id == study_id, Evaluation.status.in_(statuses))
        if prompt_set_hash is not None:
            q = q.where(Evaluation.prompt_set_hash == prompt_set_hash)
        return list(session.execute(q.order_by(*finished_order())).all())

    def _resolve(self, info: StudyInfo, quality: str | None, cost: str | None) -> tuple[str, str]:
        quality = quality or self._default_quality(info)
        cost = cost or info.cost
        assert quality is not None
        return quality, cost

    def _reference(self, info: StudyInfo, names: Sequence[str], override: dict[str, float] | None) -> list[float]:
        ref = {**info.reference_point, **(override or {})}
        missing = [n for n in names if n not in ref]
        if missing:
            raise ObjectiveError(
                f"study '{info.name}' has no hypervolume reference value for {missing} (it has "
                f"{sorted(ref) or 'none'}); set reference_point when creating the study or pass reference=")
        return [float(ref[n]) for n in names]

    def front(self, study: str, quality: str | None = None, cost: str | None = None, *,
              prompt_set_hash: str | None = None, per_prompt: bool = False) -> list[EvaluationRecord]:
        """Non-dominated done evaluations over (quality, cost), sorted by cost ascending. Defaults are
        the study's primary objectives; directions come from the study (unlisted: maximise).
        Evaluations lacking a finite value for either objective are left out. Per-prompt values are
        left out unless `per_prompt=True` (a front can hold hundreds of members)."""
        with self._reading() as session:
            row = self._study_row(session, study)
            info = study_info(row)
            quality, cost = self._resolve(info, quality, cost)
            rows = self._objective_rows(session, row.id, (DONE,), prompt_set_hash)
            pts, idx = self._points(rows, quality, cost)
            if not len(pts):
                return []
            mask = pareto.nondominated(pts, [info.maximize(quality), info.maximize(cost)])
            ids = [rows[idx[i]].id for i in np.flatnonzero(mask)]
            members = [m for k in range(0, len(ids), 500)       # chunks: stay under any bound-parameter limit
                       for m in session.execute(record_select(per_prompt).where(Evaluation.id.in_(ids[k:k + 500])))]
        records = [record_from_row(r, study) for r in members]
        sign = 1.0 if info.maximize(cost) else -1.0
        records.sort(key=lambda r: (sign * (r.objective(cost) or 0.0), r.id))
        return records

    def hypervolume(self, study: str, quality: str | None = None, cost: str | None = None, *,
                    reference: dict[str, float] | None = None,
                    prompt_set_hash: str | None = None) -> float:
        """Hypervolume of the study's front against the study's fixed reference point (or
        `reference`, per objective name). Raises `ObjectiveError` if an objective has no reference."""
        with self._reading() as session:
            row = self._study_row(session, study)
            info = study_info(row)
            quality, cost = self._resolve(info, quality, cost)
            ref = self._reference(info, (quality, cost), reference)
            rows = self._objective_rows(session, row.id, (DONE,), prompt_set_hash)
        pts, _ = self._points(rows, quality, cost)
        return pareto.hypervolume(pts, ref, [info.maximize(quality), info.maximize(cost)])

    def hypervolume_history(self, study: str, quality: str | None = None, cost: str | None = None, *,
                            reference: dict[str, float] | None = None,
                            prompt_set_hash: str | None = None) -> list[HVPoint]:
        """Hypervolume after each finished evaluation (failed ones count toward the budget and add
        nothing), in recording order: one `HVPoint(n_evaluations, hypervolume)` per finished one."""
        with self._reading() as session:
            row = self._study_row(session, study)
            info = study_info(row)
            quality, cost = self._resolve(info, quality, cost)
            ref = self._reference(info, (quality, cost), reference)
            rows = self._objective_rows(session, row.id, (DONE, FAILED), prompt_set_hash)
        points: list[tuple[float, float] | None] = []
        for r in rows:
            q, c = (_objective(r, quality), _objective(r, cost)) if r.status == DONE else (None, None)
            points.append((q, c) if q is not None and c is not None else None)
        values = pareto.hypervolume_history(points, ref, [info.maximize(quality), info.maximize(cost)])
        return [HVPoint(i + 1, v) for i, v in enumerate(values)]
