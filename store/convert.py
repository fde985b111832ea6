"""Conversions between database rows and the plain records the store hands out, and the column
selections that read them (which also read older stores lacking `models.ADDED_COLUMNS`)."""

from __future__ import annotations

from typing import Any, Collection

from sqlalchemy import Select, literal, null, select

from schedules.objectives import Objectives

from .models import ADDED_COLUMNS, Evaluation, ScheduleRow, Study
from .records import SEARCH, EvaluationRecord, StudyInfo


def study_info(row: Study) -> StudyInfo:
    """The study's record. Objectives stored by an older store ({"name", "maximize"}, references kept
    apart) get their role from their name and their reference from the stored reference point."""
    reference = {k: float(v) for k, v in (row.reference_point or {}).items()}
    return StudyInfo(
        id=row.id, name=row.name, config=dict(row.config or {}), model_signature=row.model_signature,
        searcher=row.searcher, searcher_settings=dict(row.searcher_settings or {}),
        objectives=Objectives.from_list(row.objectives or [], reference, require_roles=False),
        reference_point=reference, status=row.status, created_at=row.created_at, updated_at=row.updated_at,
    )


def evaluation_column(name: str, missing: Collection[str] = ()) -> Any:
    """`Evaluation.<name>`, or, in a store that lacks that added column, the value its rows have."""
    if name not in missing:
        return getattr(Evaluation, name)
    value = ADDED_COLUMNS["evaluations"][name]
    return (null() if value is None else literal(value)).label(name)


def search_results(query: Select[Any], missing: Collection[str] = ()) -> Select[Any]:
    """Only the study's own results (kind `search`; a store without the column holds nothing else)."""
    return query if "kind" in missing else query.where(Evaluation.kind == SEARCH)


# Columns read for a record; per_prompt is optional because it is by far the largest field.
_BASE_COLUMNS = (
    "id", "schedule_hash", "status", "metrics", "macs", "mac_speedup", "latency_s", "latency_speedup",
    "latency_speedup_model", "error", "worker", "prompt_set_hash", "step", "provenance", "kind", "queued_at",
    "started_at", "finished_at", "recorded_at", "n_thumbnails",
)
#: Raw objective columns of a finished evaluation (fronts, hypervolume, listings).
OBJECTIVE_COLUMNS = ("id", "status", "metrics", "mac_speedup", "latency_speedup", "latency_speedup_model", "macs",
                     "latency_s")


def objective_select(missing: Collection[str] = ()) -> Select[Any]:
    return select(*(evaluation_column(c, missing) for c in OBJECTIVE_COLUMNS))


def record_select(with_per_prompt: bool, missing: Collection[str] = ()) -> Select[Any]:
    """SELECT of the columns `record_from_row` reads, joined to the schedule's summary columns."""
    cols = [evaluation_column(c, missing) for c in _BASE_COLUMNS]
    cols += [ScheduleRow.compute_fraction, ScheduleRow.fractions]
    if with_per_prompt:
        cols.append(Evaluation.per_prompt)
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
        latency_speedup=m["latency_speedup"], latency_speedup_model=m["latency_speedup_model"], error=m["error"],
        worker=m["worker"], prompt_set_hash=m["prompt_set_hash"] or None, kind=m["kind"] or SEARCH, step=m["step"],
        provenance=dict(m["provenance"] or {}), queued_at=m["queued_at"], started_at=m["started_at"],
        finished_at=m["finished_at"], recorded_at=m["recorded_at"], compute_fraction=m["compute_fraction"],
        fractions=dict(m["fractions"] or {}), n_thumbnails=m["n_thumbnails"] or 0,
    )
