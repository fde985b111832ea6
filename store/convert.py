"""Conversions between database rows and the plain records the store hands out."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select

from .models import Evaluation, ScheduleRow, Study
from .records import EvaluationRecord, ObjectiveSpec, StudyInfo


def study_info(row: Study) -> StudyInfo:
    return StudyInfo(
        id=row.id, name=row.name, config=dict(row.config or {}), model_signature=row.model_signature,
        searcher=row.searcher, searcher_settings=dict(row.searcher_settings or {}),
        objectives=tuple(ObjectiveSpec.from_dict(o) for o in row.objectives or []),
        reference_point={k: float(v) for k, v in (row.reference_point or {}).items()},
        status=row.status, created_at=row.created_at, updated_at=row.updated_at,
    )


# Columns read for a record; per_prompt is optional because it is by far the largest field.
_BASE_COLUMNS = (
    Evaluation.id, Evaluation.schedule_hash, Evaluation.status, Evaluation.metrics,
    Evaluation.macs, Evaluation.mac_speedup, Evaluation.latency_s, Evaluation.latency_speedup,
    Evaluation.error, Evaluation.worker, Evaluation.prompt_set_hash, Evaluation.step, Evaluation.provenance,
    Evaluation.queued_at, Evaluation.started_at, Evaluation.finished_at, Evaluation.recorded_at,
    Evaluation.n_thumbnails, ScheduleRow.compute_fraction, ScheduleRow.fractions,
)


def record_select(with_per_prompt: bool) -> Select[Any]:
    """SELECT of the columns `record_from_row` reads, joined to the schedule's summary columns."""
    cols = _BASE_COLUMNS + ((Evaluation.per_prompt,) if with_per_prompt else ())
    return select(*cols).join(ScheduleRow, ScheduleRow.hash == Evaluation.schedule_hash)


def finished_order() -> tuple[Any, ...]:
    """Finished evaluations in recording order, then unfinished ones by id."""
    return (Evaluation.recorded_at.is_(None), Evaluation.recorded_at, Evaluation.id)


def record_from_row(row: Any, study: str) -> EvaluationRecord:
    m = row._mapping
    return EvaluationRecord(
        id=m["id"], study=study, schedule_hash=m["schedule_hash"], status=m["status"],
        metrics=dict(m["metrics"] or {}), per_prompt=dict(m.get("per_prompt") or {}),
        macs=m["macs"], mac_speedup=m["mac_speedup"], latency_s=m["latency_s"],
        latency_speedup=m["latency_speedup"], error=m["error"], worker=m["worker"],
        prompt_set_hash=m["prompt_set_hash"] or None, step=m["step"], provenance=dict(m["provenance"] or {}),
        queued_at=m["queued_at"], started_at=m["started_at"], finished_at=m["finished_at"],
        recorded_at=m["recorded_at"], compute_fraction=m["compute_fraction"],
        fractions=dict(m["fractions"] or {}), n_thumbnails=m["n_thumbnails"] or 0,
    )
