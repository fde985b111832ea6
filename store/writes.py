"""The write steps `Store` composes inside one transaction: schedule upsert, evaluation completion,
thumbnails. Each takes an open session and never commits: the caller owns the transaction, so a
result is written whole or not at all."""

from __future__ import annotations

import time
from typing import Any, Iterable

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from schedules import EvaluationResult, Schedule

from . import codec
from .errors import StoreError
from .models import Evaluation, ScheduleRow, Thumbnail
from .records import DONE, FAILED, QUEUED, RACED, RUNNING, SEARCH

_INSERT_IGNORING_CONFLICTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def upsert_schedule(session: Session, schedule: Schedule) -> str:
    """Insert the schedule row unless its hash is already stored (content-addressed: never updated).

    Several drivers share one store (two studies of one model start from the same heuristic
    schedules), so the insert is one `INSERT ... ON CONFLICT DO NOTHING`: on PostgreSQL a second
    transaction storing the same hash waits for the first and then does nothing, instead of failing on
    the primary key (SQLite serialises writers anyway; the statement is the same there)."""
    key = schedule.hash
    if session.get(ScheduleRow, key) is not None:
        return key
    values = dict(hash=key, canonical_json=schedule.canonical_json(), family=schedule.model.family,
                  transformer_class=schedule.model.transformer_class, model_id=schedule.model.model_id,
                  num_steps=schedule.num_steps, compute_fraction=schedule.compute_fraction(),
                  fractions=schedule.fractions(), created_at=time.time())
    dialect = session.get_bind().dialect.name
    if dialect in _INSERT_IGNORING_CONFLICTS:
        session.execute(_INSERT_IGNORING_CONFLICTS[dialect](ScheduleRow).values(**values)
                        .on_conflict_do_nothing(index_elements=[ScheduleRow.hash]))
    else:   # another SQLAlchemy dialect: plain insert
        session.add(ScheduleRow(**values))
        session.flush()
    return key


def upsert_schedules(session: Session, schedules: Iterable[Schedule]) -> None:
    """Several schedule rows in one transaction, in hash order: two transactions inserting
    overlapping sets each wait for the other's rows in the same order, so they never deadlock."""
    for schedule in sorted({s.hash: s for s in schedules}.values(), key=lambda s: s.hash):
        upsert_schedule(session, schedule)


def find_evaluation(session: Session, study_id: int, schedule_hash: str,
                    prompt_set_hash: str) -> Evaluation | None:
    """The row for (study, schedule, prompt set); a queued/running row with an unknown prompt set ('')
    is adopted when the result names its prompt set."""
    base = select(Evaluation).where(Evaluation.study_id == study_id, Evaluation.schedule_hash == schedule_hash)
    row = session.scalars(base.where(Evaluation.prompt_set_hash == prompt_set_hash)).first()
    if row is None and prompt_set_hash:
        row = session.scalars(base.where(Evaluation.prompt_set_hash == "",
                                         Evaluation.status.in_((QUEUED, RUNNING)))).first()
        if row is not None:
            row.prompt_set_hash = prompt_set_hash
    return row


_PRIORITY = {DONE: 0, RUNNING: 1, QUEUED: 2, FAILED: 3}


def any_evaluation(session: Session, study_id: int, schedule_hash: str) -> Evaluation | None:
    """The row of this schedule in this study whatever its prompt set, preferring done, then running,
    queued, failed: what the search loop means by "this schedule" when it does not name a prompt set."""
    rows = session.scalars(select(Evaluation).where(Evaluation.study_id == study_id,
                                                    Evaluation.schedule_hash == schedule_hash)).all()
    return min(rows, key=lambda r: (_PRIORITY.get(r.status, 9), r.id), default=None)


def _float(value: Any, what: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise StoreError(f"{what} must be a number, got {value!r}") from None


def record_result(session: Session, study_id: int, result: EvaluationResult, step: int | None,
                  kind: str = SEARCH) -> int:
    """Write one finished result (see `Store.record_evaluation` for the rules). Returns its id."""
    if result.status not in (DONE, FAILED, RACED):
        raise StoreError(f"an evaluation result must have status '{DONE}', '{FAILED}' or '{RACED}', "
                         f"got {result.status!r}")
    if result.status == RACED and not (result.pairs_scored is not None and result.pairs_total is not None
                                       and result.pairs_scored < result.pairs_total):
        raise StoreError("a raced result must say how many of how many pairs it scored")
    schedule_hash = upsert_schedule(session, result.schedule)
    prompt_set = result.prompt_set_hash or ""
    row = find_evaluation(session, study_id, schedule_hash, prompt_set)
    if row is not None and row.status == DONE:
        return row.id                      # evaluated once: the first result stands
    if row is None:
        row = Evaluation(study_id=study_id, schedule_hash=schedule_hash, prompt_set_hash=prompt_set, kind=kind)
        session.add(row)
    macs = result.macs
    if macs is not None and (isinstance(macs, bool) or int(macs) != macs):
        raise StoreError(f"macs must be an integer, got {macs!r}")
    row.status = DONE if result.status == RACED else result.status   # raced = done on fewer pairs
    row.pairs_scored, row.pairs_total = result.pairs_scored, result.pairs_total
    row.image_steps = result.image_steps
    row.metrics = codec.check({k: _float(v, f"metrics.{k}") for k, v in result.metrics.items()}, "metrics")
    row.per_prompt = codec.check({k: [_float(x, f"per_prompt.{k}") for x in v]
                                  for k, v in result.per_prompt.items()}, "per_prompt")
    row.macs = int(macs) if macs is not None else None
    row.mac_speedup = _float(result.mac_speedup, "mac_speedup")
    row.latency_s = _float(result.latency_s, "latency_s")
    row.latency_speedup = _float(result.latency_speedup, "latency_speedup")
    row.latency_speedup_model = _float(result.latency_speedup_model, "latency_speedup_model")
    row.error = result.error
    row.worker = result.worker if result.worker is not None else row.worker
    if step is not None:
        row.step = step
    row.provenance = codec.check(dict(result.schedule.provenance), "schedule.provenance")
    row.started_at = result.started_at if result.started_at is not None else row.started_at
    row.finished_at = result.finished_at
    row.recorded_at = time.time()
    row.n_thumbnails = len(result.thumbnails)
    session.flush()
    set_thumbnails(session, result.thumbnails, evaluation_id=row.id)
    return row.id


def set_thumbnails(session: Session, images: Any, *, evaluation_id: int | None = None,
                   study_id: int | None = None) -> None:
    """Replace the thumbnails of one evaluation or the reference thumbnails of one study."""
    owner = (Thumbnail.evaluation_id == evaluation_id) if evaluation_id is not None else (
        Thumbnail.study_id == study_id)
    session.execute(delete(Thumbnail).where(owner))
    for i, png in enumerate(images):
        if not isinstance(png, (bytes, bytearray, memoryview)):
            raise StoreError(f"thumbnail {i} must be PNG bytes, got {type(png).__name__}")
        session.add(Thumbnail(evaluation_id=evaluation_id, study_id=study_id, position=i, png=bytes(png)))
