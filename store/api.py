"""`Store`: the only thing other packages use to persist and read search results.

    store = Store("sqlite:///cachesearch.db")          # or any SQLAlchemy URL (postgresql://...)
    info = store.create_study("pixart-ecad", config, model_signature, "ecad", settings,
                              [Objective("psnr", reference=20.0), Objective("mac_speedup")])
    store.record_evaluation("pixart-ecad", result)      # one transaction per result
    store.front("pixart-ecad", "psnr")                  # non-dominated done evaluations
    store.knee("pixart-ecad")                           # the front's knee (schedules.objectives)

Every method opens its own short session and returns plain records (`store.records`), so callers never
hold a session, a lock or an ORM object. Writes on SQLite take the write lock up front
(BEGIN IMMEDIATE) and the file runs in WAL mode, so a dashboard reads while a search writes.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from schedules import EvaluationResult, Schedule
from schedules import objectives as obj
from schedules.objectives import Objective, ObjectiveError, Objectives

from . import codec
from .convert import (
    finished_order, objective_select, record_from_row, record_select, search_results, study_info,
)
from .engine import (
    DEFAULT_URL, WRITE_OPTION, database_url, ensure_schema, explain_connection_error, has_table, make_engine,
    missing_columns,
)
from .errors import ScheduleNotFound, StoreError, StudyBusy, StudyExists, StudyNotFound
from .frontier import FrontierQueries, points_of
from .names import check_study_name
from .models import Evaluation, ScheduleRow, SearcherState, Study, StudyRun, Thumbnail
from .records import (
    DONE, EVALUATION_STATUSES, FAILED, QUEUED, RACED, RESULT_KINDS, RUNNING, SEARCH, STUDY_STATUSES, EvaluationRecord,
    RunInfo, StudyInfo, StudySummary, format_age,
)
from .writes import any_evaluation, record_result, set_thumbnails, upsert_schedule, upsert_schedules

T = TypeVar("T")

_RETRY_SQLSTATES = ("40001", "40P01")   # PostgreSQL: serialization_failure, deadlock_detected


def _transient(exc: DBAPIError) -> bool:
    """A write worth retrying whole: SQLite still locked after its busy timeout, or a PostgreSQL
    transaction aborted only because of another one."""
    state = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return state in _RETRY_SQLSTATES or (isinstance(exc, OperationalError) and "locked" in str(exc).lower())


def _shown(value: Any) -> str:
    """Objectives as `psnr (quality, max, ref 20)`; anything else as its repr (StudyExists messages)."""
    if isinstance(value, Objectives):
        return "[" + ", ".join(f"{o.name} ({o.role}, {'max' if o.maximize else 'min'}, ref {o.reference})"
                               for o in value) + "]"
    return repr(value)


class Store(FrontierQueries):
    """A cachesearch result database at a SQLAlchemy URL.

    `create=False` refuses to create a missing SQLite file or missing tables (the dashboard opens
    read-only and should say "no database here" rather than make an empty one). Opening a database
    written by another schema version raises `SchemaVersionError`.
    """

    WRITE_RETRIES = 5   # on "database is locked" after the 30 s busy timeout (a stuck writer)

    def __init__(self, url: str = DEFAULT_URL, *, create: bool = True, echo: bool = False) -> None:
        self.url = database_url(url)
        try:
            self._engine = make_engine(self.url, create=create, echo=echo)
        except (OperationalError, DBAPIError) as exc:
            raise explain_connection_error(exc, self.url, create) from None
        try:
            ensure_schema(self._engine, create=create)
            self._has_runs = has_table(self._engine, StudyRun.__tablename__)
            self._has_baselines = has_table(self._engine, "baseline_runs")   # absent from older read-only opens
            self._missing = missing_columns(self._engine)     # only a read-only open of an older store
        except (OperationalError, DBAPIError) as exc:
            self._engine.dispose()
            raise explain_connection_error(exc, self.url, create) from None
        except BaseException:
            self._engine.dispose()
            raise
        self._read = sessionmaker(self._engine, expire_on_commit=False)
        self._write = sessionmaker(self._engine.execution_options(**{WRITE_OPTION: True}), expire_on_commit=False)

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Dispose of the connection pool. The store is unusable afterwards."""
        self._engine.dispose()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self._engine.url.render_as_string(hide_password=True)!r})"

    # ------------------------------------------------------------------ sessions
    @contextmanager
    def _reading(self) -> Iterator[Session]:
        with self._read() as session:
            yield session

    def _transaction(self, work: Callable[[Session], T]) -> T:
        """Run `work` in one write transaction; retried whole if the database stays locked (SQLite) or
        PostgreSQL aborts it for a deadlock or a serialization failure (several drivers at once)."""
        for attempt in range(self.WRITE_RETRIES):
            try:
                with self._write() as session, session.begin():
                    return work(session)
            except (OperationalError, DBAPIError) as exc:
                if not _transient(exc) or attempt == self.WRITE_RETRIES - 1:
                    raise
                time.sleep(0.1 * (attempt + 1))
        raise AssertionError("unreachable")

    def _study_row(self, session: Session, name: str) -> Study:
        row = session.scalars(select(Study).where(Study.name == name)).first()
        if row is None:
            raise StudyNotFound(name, list(session.scalars(select(Study.name).order_by(Study.name))))
        return row

    def _study_id(self, session: Session, name: str) -> int:
        sid = session.scalar(select(Study.id).where(Study.name == name))
        if sid is None:
            raise StudyNotFound(name, list(session.scalars(select(Study.name).order_by(Study.name))))
        return sid

    @staticmethod
    def _touch(session: Session, study_id: int) -> None:
        session.execute(update(Study).where(Study.id == study_id).values(updated_at=time.time()))

    # ------------------------------------------------------------------ studies
    def create_study(self, name: str, config: dict[str, Any], model_signature: str, searcher: str,
                     searcher_settings: dict[str, Any], objectives: Sequence[Objective | str],
                     reference_point: dict[str, float] | None = None, *,
                     exist_ok: bool = False) -> StudyInfo:
        """Create a study. `objectives` (`schedules.objectives.Objective`, roles explicit or from their
        names) must include a quality and a cost objective; the first of each role is the default of
        fronts. Each objective's `reference` fixes the hypervolume corner (costs default to 1.0, no
        speedup) so hypervolumes are comparable across studies of the same model and prompt set;
        `reference_point` sets references by name (also for names that are not objectives, for
        hypervolumes on other metrics). A new study's `name` must follow `names.STUDY_NAME_RULE` (it
        becomes part of exported file names). With `exist_ok`, an existing study of that name is
        returned when its model signature, searcher, objectives and reference point match (resume),
        else `StudyExists` says what differs."""
        extra: dict[str, float] = {}
        for key, value in (reference_point or {}).items():
            try:
                extra[key] = float(value)
            except (TypeError, ValueError):
                raise ObjectiveError(f"reference point for '{key}' must be a number, got {value!r}") from None
            if not math.isfinite(extra[key]):
                raise ObjectiveError(f"reference point for '{key}' must be finite, got {value!r}")
        items = tuple(o if isinstance(o, Objective) else Objective(str(o)) for o in objectives)
        items = tuple(Objective(o.name, o.maximize, o.role, extra[o.name], o.unit) if o.name in extra else o
                      for o in items)
        asked = Objectives(items, require_roles=False)           # names and roles checked; both roles below
        reference = {**extra, **{o.name: o.reference for o in asked if o.reference is not None}}
        config = codec.check(config, "config")
        searcher_settings = codec.check(searcher_settings, "searcher_settings")

        def work(session: Session) -> StudyInfo:
            existing = session.scalars(select(Study).where(Study.name == name)).first()
            if existing is not None:
                info = study_info(existing)
                wanted = {"model signature": model_signature, "searcher": searcher,
                          "objectives": asked, "reference point": reference}
                have = {"model signature": info.model_signature, "searcher": info.searcher,
                        "objectives": info.objectives, "reference point": info.reference_point}
                diffs = [f"{k}: stored {_shown(have[k])}, asked {_shown(wanted[k])}"
                         for k in wanted if have[k] != wanted[k]]
                if not exist_ok:
                    raise StudyExists(f"a study named '{name}' already exists (pick another name, or resume it)")
                if diffs:
                    raise StudyExists(f"study '{name}' exists with different settings; " + "; ".join(diffs))
                return info
            check_study_name(name)          # new studies only: a database may hold older names
            full = Objectives(items)         # a new study names both roles
            now = time.time()
            row = Study(name=name, config=config, model_signature=model_signature, searcher=searcher,
                        searcher_settings=searcher_settings, objectives=full.to_list(),
                        reference_point=reference, status="created", created_at=now, updated_at=now)
            session.add(row)
            session.flush()
            return study_info(row)

        return self._transaction(work)

    def get_study(self, name: str) -> StudyInfo:
        """The study (with its live run, if any), or `StudyNotFound` naming the studies that do exist."""
        with self._reading() as session:
            row = self._study_row(session, name)
            return replace(study_info(row), run=self._runs(session).get(row.id))

    def _runs(self, session: Session) -> dict[int, RunInfo]:
        if not self._has_runs:
            return {}
        return {r.study_id: RunInfo(r.owner, r.started_at, r.heartbeat_at, r.interval_s)
                for r in session.scalars(select(StudyRun))}

    def list_studies(self) -> list[StudySummary]:
        """Every study with counts (of its own `search` results), front size and best figures on its
        primary objectives."""
        with self._reading() as session:
            studies = [study_info(r) for r in session.scalars(select(Study).order_by(Study.created_at, Study.id))]
            runs = self._runs(session)
            counted = search_results(select(Evaluation.study_id, Evaluation.status, func.count()), self._missing)
            counts: dict[tuple[int, str], int] = {
                (sid, status): n for sid, status, n in session.execute(
                    counted.group_by(Evaluation.study_id, Evaluation.status))}
            done_rows: dict[int, list[Any]] = {s.id: [] for s in studies}
            for row in session.execute(search_results(objective_select(self._missing).add_columns(
                    Evaluation.study_id), self._missing).where(Evaluation.status == DONE)):
                done_rows[row.study_id].append(row)
        out = []
        for s in studies:
            try:
                pair = s.pair()
            except ObjectiveError:           # an older study that lists no quality or no cost objective
                pair = None
            front_size, best_q, best_c = 0, None, None
            if pair is not None:
                pts, _ = points_of(done_rows[s.id], pair)
                if len(pts):
                    front_size = int(obj.nondominated(pts, pair.maximise_flags).sum())
                    best_q = float(pts[:, 0].max() if pair[0].maximize else pts[:, 0].min())
                    best_c = float(pts[:, 1].max())
            n_done, n_failed = counts.get((s.id, DONE), 0), counts.get((s.id, FAILED), 0)
            out.append(StudySummary(
                name=s.name, model_signature=s.model_signature, searcher=s.searcher, status=s.status,
                n_evaluations=n_done + n_failed, n_done=n_done, n_failed=n_failed,
                n_pending=counts.get((s.id, QUEUED), 0) + counts.get((s.id, RUNNING), 0),
                front_size=front_size, best_quality=best_q, best_speedup=best_c,
                created_at=s.created_at, updated_at=s.updated_at, run=runs.get(s.id),
                quality=pair[0].name if pair else None, cost=pair[1].name if pair else None,
                model_name=s.model_name))
        return out

    def set_study_status(self, name: str, status: str) -> None:
        """Set one of `records.STUDY_STATUSES` (created, running, interrupted, finished, failed)."""
        if status not in STUDY_STATUSES:
            raise StoreError(f"unknown study status {status!r} (one of {', '.join(STUDY_STATUSES)})")

        def work(session: Session) -> None:
            row = self._study_row(session, name)
            row.status = status
            row.updated_at = time.time()

        self._transaction(work)

    # ------------------------------------------------------------------ runs (heartbeat)
    def claim_run(self, name: str, owner: str, interval_s: float, *, now: float | None = None) -> RunInfo:
        """Take the study for this run: mark it running and record `owner`'s first heartbeat. A study
        held by another owner whose heartbeat is still fresh is `StudyBusy`; a stale one (its run was
        killed) is taken over."""
        if not interval_s > 0:
            raise StoreError(f"heartbeat interval must be > 0 s, got {interval_s!r}")
        self._require_runs()
        t = time.time() if now is None else now

        def work(session: Session) -> RunInfo:
            row = self._study_row(session, name)
            run = session.get(StudyRun, row.id)
            if run is not None and run.owner != owner and row.status == "running":
                held = RunInfo(run.owner, run.started_at, run.heartbeat_at, run.interval_s)
                if not held.stale(t):
                    raise StudyBusy(f"study '{name}' is being run by {run.owner} (last heartbeat "
                                    f"{format_age(t - run.heartbeat_at)} ago); stop that run first, or resume "
                                    "once it has stopped")
            if run is None:
                run = StudyRun(study_id=row.id)
                session.add(run)
            run.owner, run.started_at, run.heartbeat_at, run.interval_s = owner, t, t, float(interval_s)
            row.status, row.updated_at = "running", t
            return RunInfo(owner, t, t, float(interval_s))

        return self._transaction(work)

    def beat(self, name: str, owner: str, *, now: float | None = None) -> bool:
        """Record a heartbeat of `owner`'s run; False when the study is no longer held by `owner`
        (another run took it over after this one was seen as stale)."""
        self._require_runs()
        t = time.time() if now is None else now

        def work(session: Session) -> bool:
            sid = self._study_id(session, name)
            done = session.execute(update(StudyRun).where(StudyRun.study_id == sid, StudyRun.owner == owner)
                                   .values(heartbeat_at=t))
            return bool(done.rowcount)

        return self._transaction(work)

    def release_run(self, name: str, owner: str) -> None:
        """The run of `owner` ended (its status is set separately); forget its heartbeat."""
        self._require_runs()

        def work(session: Session) -> None:
            sid = self._study_id(session, name)
            session.execute(delete(StudyRun).where(StudyRun.study_id == sid, StudyRun.owner == owner))

        self._transaction(work)

    def _require_runs(self) -> None:
        if not self._has_runs:
            raise StoreError(f"{self!r} was opened read-only and predates heartbeats; open it for writing once")

    def delete_study(self, name: str) -> None:
        """Delete a study with its evaluations, thumbnails and searcher state (schedules stay: they
        are shared by hash across studies)."""
        def work(session: Session) -> None:
            session.delete(self._study_row(session, name))

        self._transaction(work)

    # ------------------------------------------------------------------ evaluations: writes
    def mark_queued(self, study: str, schedules: Iterable[Schedule], step: int | None = None) -> list[int]:
        """Record that these schedules were dispatched (status queued); returns evaluation ids.
        Schedules already done in this study are left untouched (their existing id is returned); a
        failed one is queued again (a retry)."""
        schedules = list(schedules)

        def work(session: Session) -> list[int]:
            sid = self._study_id(session, study)
            ids = []
            now = time.time()
            upsert_schedules(session, schedules)   # in hash order first: see upsert_schedules
            for schedule in schedules:
                key = upsert_schedule(session, schedule)
                row = any_evaluation(session, sid, key)
                if row is None:
                    row = Evaluation(study_id=sid, schedule_hash=key, prompt_set_hash="", status=QUEUED,
                                     metrics={}, per_prompt={}, provenance=codec.check(
                                         dict(schedule.provenance), "schedule.provenance"),
                                     step=step, queued_at=now, n_thumbnails=0)
                    session.add(row)
                    session.flush()
                elif row.status == FAILED:
                    row.status, row.error, row.queued_at, row.recorded_at = QUEUED, None, now, None
                    row.step = step if step is not None else row.step
                ids.append(row.id)
            self._touch(session, sid)
            return ids

        return self._transaction(work)

    def mark_running(self, study: str, schedule: Schedule | str, worker: str | None = None) -> None:
        """Flag a queued evaluation as running on `worker`. Given a Schedule, a row that was never
        queued is created; given only a hash, the schedule must already be stored."""
        def work(session: Session) -> None:
            sid = self._study_id(session, study)
            if isinstance(schedule, Schedule):
                key = upsert_schedule(session, schedule)
            else:
                key = schedule
                if session.get(ScheduleRow, key) is None:
                    raise ScheduleNotFound(f"no schedule with hash {key} in {self!r}")
            row = any_evaluation(session, sid, key)
            if row is None:
                row = Evaluation(study_id=sid, schedule_hash=key, prompt_set_hash="", metrics={},
                                 per_prompt={}, provenance={}, n_thumbnails=0, queued_at=time.time())
                session.add(row)
            elif row.status == DONE:
                return
            row.status, row.worker, row.started_at = RUNNING, worker, time.time()

        self._transaction(work)

    def record_evaluation(self, study: str, result: EvaluationResult, step: int | None = None, *,
                          kind: str = SEARCH) -> int:
        """Persist one finished result in one transaction: upsert the schedule row by hash, write or
        update the evaluation row (a queued/running/failed row of the same schedule and prompt set is
        completed in place), and store its thumbnails. Recording a schedule that is already done in
        this study keeps the first result and returns its id (evaluated once, never twice). `kind`
        (`records.RESULT_KINDS`): `search` for the study's own results; other kinds are kept beside
        them, outside its front, hypervolume, counts and resume."""
        return self.record_evaluations(study, [result], step, kind=kind)[0]

    def record_evaluations(self, study: str, results: Sequence[EvaluationResult],
                           step: int | None = None, *, kind: str = SEARCH) -> list[int]:
        """Several results in one transaction (a generation at once); same rules as
        `record_evaluation`."""
        if kind not in RESULT_KINDS:
            raise StoreError(f"unknown result kind {kind!r} (one of {', '.join(RESULT_KINDS)})")

        def work(session: Session) -> list[int]:
            sid = self._study_id(session, study)
            upsert_schedules(session, [r.schedule for r in results])
            ids = [record_result(session, sid, r, step, kind) for r in results]
            self._touch(session, sid)
            return ids

        return self._transaction(work)

    # ------------------------------------------------------------------ evaluations: reads
    def finished_hashes(self, study: str, *, include_failed: bool = True,
                        prompt_set_hash: str | None = None) -> set[str]:
        """Hashes of schedules the search finished in this study, for resume: never evaluate twice."""
        statuses = (DONE, FAILED) if include_failed else (DONE,)
        with self._reading() as session:
            q = search_results(select(Evaluation.schedule_hash), self._missing).where(
                Evaluation.study_id == self._study_id(session, study), Evaluation.status.in_(statuses))
            if prompt_set_hash is not None:
                q = q.where(Evaluation.prompt_set_hash == prompt_set_hash)
            return set(session.scalars(q))

    def unfinished_schedules(self, study: str) -> list[Schedule]:
        """Schedules left queued or running (e.g. by a killed search), to re-dispatch on resume."""
        with self._reading() as session:
            rows = session.execute(search_results(select(ScheduleRow.canonical_json, Evaluation.provenance).join(
                Evaluation, Evaluation.schedule_hash == ScheduleRow.hash), self._missing).where(
                Evaluation.study_id == self._study_id(session, study),
                Evaluation.status.in_((QUEUED, RUNNING))).order_by(Evaluation.id)).all()
        return [Schedule.from_json(text).with_info(provenance=prov or {}) for text, prov in rows]

    def evaluations(self, study: str, status: str | None = None, *, prompt_set_hash: str | None = None,
                    per_prompt: bool = True, kind: str | None = None) -> list[EvaluationRecord]:
        """Evaluations of a study in the order they finished (unfinished ones last), of every kind
        unless `kind` is given, optionally only one status. `per_prompt=False` leaves out the
        per-prompt values (the bulk of each row) for listings."""
        if status is not None and status not in EVALUATION_STATUSES:
            raise StoreError(f"unknown evaluation status {status!r} (one of {', '.join(EVALUATION_STATUSES)})")
        if kind is not None and kind not in RESULT_KINDS:
            raise StoreError(f"unknown result kind {kind!r} (one of {', '.join(RESULT_KINDS)})")
        with self._reading() as session:
            q = record_select(per_prompt, self._missing).where(Evaluation.study_id == self._study_id(session, study))
            if status == RACED:
                q = q.where(Evaluation.status == DONE, Evaluation.pairs_scored < Evaluation.pairs_total)
            elif status is not None:
                q = q.where(Evaluation.status == status)
            if prompt_set_hash is not None:
                q = q.where(Evaluation.prompt_set_hash == prompt_set_hash)
            if kind is not None and "kind" not in self._missing:
                q = q.where(Evaluation.kind == kind)
            elif kind not in (None, SEARCH):
                return []                        # an older store holds search results only
            rows = session.execute(q.order_by(*finished_order())).all()
        return [record_from_row(r, study) for r in rows]

    def evaluation(self, evaluation_id: int) -> EvaluationRecord:
        """One evaluation by id."""
        with self._reading() as session:
            row = session.execute(record_select(True, self._missing).add_columns(Study.name).join(
                Study, Study.id == Evaluation.study_id).where(Evaluation.id == evaluation_id)).first()
        if row is None:
            raise StoreError(f"no evaluation with id {evaluation_id}")
        return record_from_row(row, row.name)

    def results(self, study: str) -> list[EvaluationResult]:
        """The search's finished evaluations as the contract's `EvaluationResult` (schedule included,
        thumbnails not), in recording order, e.g. to re-tell a searcher on resume."""
        records = [r for r in self.evaluations(study, kind=SEARCH) if r.status in (DONE, FAILED, RACED)]
        with self._reading() as session:
            texts = dict(session.execute(select(ScheduleRow.hash, ScheduleRow.canonical_json).where(
                ScheduleRow.hash.in_({r.schedule_hash for r in records}))).all()) if records else {}
        parsed = {h: Schedule.from_json(t) for h, t in texts.items()}
        return [EvaluationResult(
            schedule=parsed[r.schedule_hash].with_info(provenance=r.provenance), status=r.status,
            metrics=dict(r.metrics), per_prompt={k: list(v) for k, v in r.per_prompt.items()}, macs=r.macs,
            mac_speedup=r.mac_speedup, latency_s=r.latency_s, latency_speedup=r.latency_speedup,
            latency_speedup_model=r.latency_speedup_model, error=r.error, worker=r.worker,
            started_at=r.started_at, finished_at=r.finished_at, prompt_set_hash=r.prompt_set_hash,
            pairs_scored=r.pairs_scored, pairs_total=r.pairs_total, image_steps=r.image_steps)
            for r in records]

    def schedule(self, schedule_hash: str) -> Schedule:
        """The schedule with that content hash (a unique prefix of at least 8 characters works)."""
        key = schedule_hash.strip().lower()
        with self._reading() as session:
            text = session.scalar(select(ScheduleRow.canonical_json).where(ScheduleRow.hash == key))
            if text is None and 8 <= len(key) < 64:
                hits = session.execute(select(ScheduleRow.hash, ScheduleRow.canonical_json).where(
                    ScheduleRow.hash.startswith(key, autoescape=True)).limit(2)).all()
                if len(hits) > 1:
                    raise ScheduleNotFound(f"hash prefix '{key}' is ambiguous; give more characters")
                text = hits[0][1] if hits else None
        if text is None:
            raise ScheduleNotFound(f"no schedule with hash '{key}' in {self!r}")
        return Schedule.from_json(text, source=f"store schedule {key[:12]}")

    # ------------------------------------------------------------------ thumbnails
    def thumbnails(self, evaluation_id: int) -> list[bytes]:
        """PNG bytes of an evaluation's thumbnails, in the evaluator's prompt order."""
        with self._reading() as session:
            return [bytes(b) for b in session.scalars(select(Thumbnail.png).where(
                Thumbnail.evaluation_id == evaluation_id).order_by(Thumbnail.position))]

    def set_reference_thumbnails(self, study: str, images: Sequence[bytes]) -> None:
        """Replace the study's all-compute reference thumbnails (PNG bytes, prompt order)."""
        def work(session: Session) -> None:
            sid = self._study_id(session, study)
            set_thumbnails(session, images, study_id=sid)
            self._touch(session, sid)

        self._transaction(work)

    def reference_thumbnails(self, study: str) -> list[bytes]:
        """The study's reference thumbnails (empty if none were stored)."""
        with self._reading() as session:
            sid = self._study_id(session, study)
            return [bytes(b) for b in session.scalars(select(Thumbnail.png).where(
                Thumbnail.study_id == sid).order_by(Thumbnail.position))]

    # ------------------------------------------------------------------ searcher state
    # ------------------------------------------------------------------ peers (store.baselines)
    def record_baseline(self, study: str, result: Any) -> int:
        """Store one peer setting's result (`schedules.BaselineResult`); a re-run on the same prompt
        set replaces it. Never part of a front, hypervolume or budget."""
        from .baselines import record_baseline

        def work(session: Session) -> int:
            return record_baseline(session, self._study_row(session, study).id, result)
        return self._transaction(work)

    def baselines(self, study: str) -> list[Any]:
        """The study's peer results (`store.baselines.BaselineRecord`), in the order recorded."""
        from .baselines import read_baselines
        with self._reading() as session:
            row = self._study_row(session, study)
            if not self._has_baselines:
                return []
            return read_baselines(session, row.id, study)

    def save_searcher_state(self, study: str, state: dict[str, Any], step: int) -> None:
        """Replace the searcher's JSON state (no pickle) and its generation/trial number. A value
        that is not JSON is a `StoreError` naming where it sits in the state."""
        if not isinstance(state, dict):
            raise StoreError(f"searcher state must be a dict, got {type(state).__name__}")
        clean = codec.check(state, "searcher state")

        def work(session: Session) -> None:
            sid = self._study_id(session, study)
            row = session.get(SearcherState, sid)
            if row is None:
                session.add(SearcherState(study_id=sid, step=int(step), state=clean, saved_at=time.time()))
            else:
                row.step, row.state, row.saved_at = int(step), clean, time.time()
            self._touch(session, sid)

        self._transaction(work)

    def load_searcher_state(self, study: str) -> tuple[dict[str, Any], int] | None:
        """The last saved (state, step), or None if the searcher never saved one."""
        with self._reading() as session:
            row = session.get(SearcherState, self._study_id(session, study))
            return None if row is None else (codec.decode(dict(row.state)), row.step)
