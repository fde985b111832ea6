"""Pareto fronts, knees and hypervolume read straight from the evaluation table, as a mixin of `Store`.

Kept apart from the persistence code because it is the analysis layer the dashboard, export and the
searchers' progress reports lean on: it reads only the objective columns (never the per-prompt
payloads), only the study's own (`search`) results, and hands non-dominated sorting, hypervolume and
the knee to `schedules.objectives` (moocore), the one home of those definitions. The host class
provides `_reading()` (a read session), `_study_row(session, name)` and `_missing` (added columns an
older store lacks).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Collection, Sequence

import numpy as np
from sqlalchemy.orm import Session

from schedules import objectives as obj
from schedules.objectives import Objectives, objective_value

from .convert import finished_order, objective_select, record_from_row, record_select, search_results, study_info
from .models import Evaluation, Study
from .records import DONE, FAILED, EvaluationRecord, HVPoint, StudyInfo


def points_of(rows: Sequence[Any], pair: Objectives) -> tuple[np.ndarray, list[int]]:
    """(quality, cost) of the rows that have both (the value rule), with their positions in `rows`."""
    pts, idx = [], []
    for i, row in enumerate(rows):
        q, c = objective_value(row, pair[0].name), objective_value(row, pair[1].name)
        if q is not None and c is not None:
            pts.append((q, c))
            idx.append(i)
    return np.asarray(pts, dtype=float).reshape(-1, 2), idx


class FrontierQueries:
    """Fronts, knees, hypervolume and its history over a study's (quality, cost) objectives."""

    _missing: Collection[str] = ()

    # provided by the host class (`Store`)
    def _reading(self) -> AbstractContextManager[Session]: ...
    def _study_row(self, session: Session, name: str) -> Study: ...

    def _objective_rows(self, session: Session, study_id: int, statuses: tuple[str, ...],
                        prompt_set_hash: str | None) -> list[Any]:
        q = search_results(objective_select(self._missing), self._missing).where(
            Evaluation.study_id == study_id, Evaluation.status.in_(statuses))
        if prompt_set_hash is not None:
            q = q.where(Evaluation.prompt_set_hash == prompt_set_hash)
        return list(session.execute(q.order_by(*finished_order())).all())

    def _pair(self, info: StudyInfo, quality: str | None, cost: str | None,
              reference: dict[str, float] | None = None) -> Objectives:
        pair = info.pair(quality, cost)
        if reference:
            pair = Objectives(obj.Objective(o.name, o.maximize, o.role, reference.get(o.name, o.reference), o.unit)
                              for o in pair)
        return pair

    def front(self, study: str, quality: str | None = None, cost: str | None = None, *,
              prompt_set_hash: str | None = None, per_prompt: bool = False) -> list[EvaluationRecord]:
        """Non-dominated done evaluations over (quality, cost), sorted by cost ascending (then id).
        Defaults are the study's primary objectives; directions come from the study (unlisted:
        maximise). Evaluations lacking a finite value for either objective are left out; a front
        needs no hypervolume reference. Per-prompt values are left out unless `per_prompt=True`."""
        with self._reading() as session:
            row = self._study_row(session, study)
            pair = self._pair(study_info(row), quality, cost)
            rows = self._objective_rows(session, row.id, (DONE,), prompt_set_hash)
            pts, idx = points_of(rows, pair)
            if not len(pts):
                return []
            mask = obj.nondominated(pts, pair.maximise_flags)
            ids = [rows[idx[i]].id for i in np.flatnonzero(mask)]
            members = [m for k in range(0, len(ids), 500)       # chunks: stay under any bound-parameter limit
                       for m in session.execute(record_select(per_prompt, self._missing).where(
                           Evaluation.id.in_(ids[k:k + 500])))]
        records = [record_from_row(r, study) for r in members]
        sign = 1.0 if pair[1].maximize else -1.0
        records.sort(key=lambda r: (sign * (r.objective(pair[1].name) or 0.0), r.id))
        return records

    def knee(self, study: str, quality: str | None = None, cost: str | None = None, *,
             prompt_set_hash: str | None = None) -> EvaluationRecord | None:
        """The knee of the study's front (`schedules.objectives.knee_index`), or None without a front."""
        front = self.front(study, quality, cost, prompt_set_hash=prompt_set_hash)
        if not front:
            return None
        pair = self._pair(self.get_study(study), quality, cost)    # type: ignore[attr-defined]
        pts, _ = points_of(front, pair)
        return front[obj.knee_index(pts, pair.maximise_flags)]

    def hypervolume(self, study: str, quality: str | None = None, cost: str | None = None, *,
                    reference: dict[str, float] | None = None,
                    prompt_set_hash: str | None = None) -> float:
        """Hypervolume of the study's front against the study's fixed reference point (or
        `reference`, per objective name). `ObjectiveError` if an objective has no reference."""
        with self._reading() as session:
            row = self._study_row(session, study)
            pair = self._pair(study_info(row), quality, cost, reference)
            ref = pair.references()
            rows = self._objective_rows(session, row.id, (DONE,), prompt_set_hash)
        pts, _ = points_of(rows, pair)
        return obj.hypervolume(pts, ref, pair.maximise_flags)

    def hypervolume_history(self, study: str, quality: str | None = None, cost: str | None = None, *,
                            reference: dict[str, float] | None = None,
                            prompt_set_hash: str | None = None) -> list[HVPoint]:
        """Hypervolume after each finished evaluation (failed ones count toward the budget and add
        nothing), in recording order: one `HVPoint(n_evaluations, hypervolume)` per finished one."""
        with self._reading() as session:
            row = self._study_row(session, study)
            pair = self._pair(study_info(row), quality, cost, reference)
            ref = pair.references()
            rows = self._objective_rows(session, row.id, (DONE, FAILED), prompt_set_hash)
        points: list[tuple[float, float] | None] = []
        for r in rows:
            values = pair.values(r) if r.status == DONE else None
            points.append(values)   # type: ignore[arg-type]
        values = obj.hypervolume_history(points, ref, pair.maximise_flags)
        return [HVPoint(i + 1, v) for i, v in enumerate(values)]
