"""Everything the dashboard reads from the store, in two layers.

- `load_*`: plain functions of a `Store` (no Streamlit), so the bench can time them and tests can call
  them directly.
- Cached wrappers keyed by the database URL: `st.cache_resource` holds one `Store` per URL. The study
  list is cached for `LIVE_TTL` seconds only, so a page redrawn while a search writes shows new
  evaluations within seconds. A study's evaluation table (and its front, knee, hypervolume) is keyed
  by the study's *version* (last update time and counts from that list): it is re-read only after the
  study changed, so clicking around a finished 10,000-evaluation study never re-reads it, and a running
  one is re-read at most once per write. `MAX_AGE` is a backstop for changes that leave the version
  alone. Schedules are content-addressed and never change, so they are cached without expiry.

Every store failure is turned into a `DashboardError` with a message meant for the page (missing file,
other schema version, not a store, database busy); the page shows it instead of a traceback.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, TypeVar

import streamlit as st
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from schedules import Schedule
from store import (
    DatabaseUnavailable, EvaluationRecord, ExportError, HVPoint, NothingQualifies, ObjectiveError,
    SchemaVersionError, Store, StoreError, StudyInfo, StudySummary, safe_filename,
)
from store.export import annotated_schedule, choose, write_schedule
from store.validation import ValidationPair, heldout_sets, validation_pairs

from .frames import EvalTable, evaluation_table, front_ids as _front_ids, knee_id as _knee_id

LIVE_TTL = 3.0          # seconds the study list may be stale (a running search shows up this fast)
MAX_AGE = 60.0          # seconds a versioned result is kept at most
Version = tuple[float, int, int]   # (updated_at, finished evaluations, pending): changes on every write
T = TypeVar("T")

class DashboardError(Exception):
    """A problem to show on the page. `kind`: missing, version, not_store, busy or error."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


# ---------------------------------------------------------------------------------------- errors
def explain(exc: BaseException, url: str) -> DashboardError:
    """The page message for a store failure."""
    if isinstance(exc, DashboardError):
        return exc
    if isinstance(exc, SchemaVersionError):
        return DashboardError("version", str(exc))
    if isinstance(exc, OperationalError) and "locked" in str(exc).lower():
        return DashboardError("busy", "The database is busy (a search is writing to it); this page "
                                      "refreshes with the new data in a moment.")
    if isinstance(exc, DatabaseUnavailable):
        not_ours = ("not_store", "foreign", "not_sqlite")
        kind = exc.kind if exc.kind == "missing" else "not_store" if exc.kind in not_ours else "error"
        return DashboardError(kind, str(exc))
    if isinstance(exc, (StoreError, ObjectiveError)):
        return DashboardError("error", str(exc))
    if isinstance(exc, SQLAlchemyError):
        return DashboardError("error", f"Cannot read the database {url}: {exc.__class__.__name__}: "
                                       f"{str(exc).splitlines()[0]}")
    return DashboardError("error", f"{exc.__class__.__name__}: {exc}")


def guarded(url: str, work: Callable[[], T]) -> T:
    """Run a store read, turning any store/SQL failure into a `DashboardError`."""
    try:
        return work()
    except (StoreError, ObjectiveError, SQLAlchemyError, DashboardError) as exc:
        raise explain(exc, url) from None


# ---------------------------------------------------------------------------------------- plain loaders
def open_store(url: str) -> Store:
    """Open read-only in spirit: `create=False` never makes a file or tables where there were none."""
    return guarded(url, lambda: Store(url, create=False))


def load_studies(store: Store) -> tuple[list[StudySummary], dict[str, StudyInfo]]:
    """Summaries (counts, front size) plus each study's objectives and settings."""
    summaries = store.list_studies()
    return summaries, {s.name: store.get_study(s.name) for s in summaries}


def load_evaluations(store: Store, study: str) -> EvalTable:
    """All evaluations of a study without per-prompt values (the bulk of each row)."""
    return evaluation_table(study, store.evaluations(study, per_prompt=False))


def version(summary: StudySummary) -> Version:
    return (summary.updated_at, summary.n_evaluations, summary.n_pending)


def load_hypervolume(store: Store, study: str, quality: str, cost: str) -> list[HVPoint] | str:
    """The hypervolume history, or the reason there is none (e.g. no reference value for `quality`)."""
    try:
        return store.hypervolume_history(study, quality, cost)
    except ObjectiveError as exc:
        return str(exc)


def load_baselines(store: Store, study: str) -> list:
    """The peer methods the study scored (store.baselines)."""
    return store.baselines(study)


def load_validation(store: Store, study: str, quality: str) -> tuple[list[ValidationPair], list[dict]]:
    """Front members with their held-out results on the newest held-out set, and every set."""
    return validation_pairs(store, study, quality), heldout_sets(store, study)


def load_pick(store: Store, study: str, rule: str, quality: str, cost: str) -> int | str:
    """Id of the evaluation a pick rule (`knee`, `fastest-with psnr>=30`, ...) chooses, or why none."""
    try:
        return choose(store, study, rule, quality=quality, cost=cost).id
    except (NothingQualifies, ObjectiveError) as exc:
        return str(exc)


def export_bytes(store: Store, info: StudyInfo, record: EvaluationRecord, fmt: str,
                 quality: str | None = None, cost: str | None = None) -> tuple[bytes, str]:
    """The exact file `cachesearch export` would write for this evaluation, as (bytes, file name).
    Goes through `store.export.write_schedule` (a temporary file) so the download and the CLI never
    disagree; raises `ExportError` with the reason when the plan does not fit cache-dit."""
    schedule = annotated_schedule(store, info, record, f"dashboard: evaluation {record.id}", quality, cost)
    ext = "yaml" if fmt == "cache-dit" else "json"
    name = safe_filename(info.name, record.id, record.schedule_hash[:12]) + f".{ext}"
    with tempfile.TemporaryDirectory(prefix="cachesearch-export-") as tmp:
        path = write_schedule(schedule, Path(tmp) / name, fmt)
        return path.read_bytes(), name


# ---------------------------------------------------------------------------------------- cached wrappers
@st.cache_resource(show_spinner=False, max_entries=4)
def _store(url: str) -> Store:
    return open_store(url)


def store(url: str) -> Store:
    """The shared `Store` for `url` (one connection pool per server process)."""
    return _store(url)


@st.cache_data(ttl=LIVE_TTL, show_spinner=False, max_entries=8)
def studies(url: str) -> tuple[list[StudySummary], dict[str, StudyInfo]]:
    return guarded(url, lambda: load_studies(store(url)))


def _info(url: str, study: str) -> StudyInfo:
    info = studies(url)[1].get(study)
    if info is None:
        raise DashboardError("error", f"study '{study}' is no longer in the database {url}")
    return info


@st.cache_data(ttl=MAX_AGE, show_spinner=False, max_entries=16)
def evaluations(url: str, study: str, version: Version) -> EvalTable:
    return guarded(url, lambda: load_evaluations(store(url), study))


@st.cache_data(ttl=MAX_AGE, show_spinner=False, max_entries=64)
def front_ids(url: str, study: str, quality: str, cost: str, version: Version) -> list[int]:
    """The study's front (see `frames.front_ids`), from the cached evaluation table."""
    info = _info(url, study)
    return _front_ids(evaluations(url, study, version), info, quality, cost)


@st.cache_data(ttl=MAX_AGE, show_spinner=False, max_entries=64)
def knee(url: str, study: str, quality: str, cost: str, version: Version) -> int | None:
    info = _info(url, study)
    return _knee_id(evaluations(url, study, version), info, quality, cost)


@st.cache_data(ttl=MAX_AGE, show_spinner=False, max_entries=64)
def hypervolume(url: str, study: str, quality: str, cost: str, version: Version) -> list[HVPoint] | str:
    return guarded(url, lambda: load_hypervolume(store(url), study, quality, cost))


@st.cache_data(ttl=MAX_AGE, show_spinner=False, max_entries=32)
def baselines(url: str, study: str, version: Version) -> list:
    return guarded(url, lambda: load_baselines(store(url), study))


@st.cache_data(ttl=MAX_AGE, show_spinner=False, max_entries=32)
def validation(url: str, study: str, quality: str, version: Version) -> tuple[list[ValidationPair], list[dict]]:
    return guarded(url, lambda: load_validation(store(url), study, quality))


@st.cache_data(ttl=LIVE_TTL, show_spinner=False, max_entries=64)
def pick(url: str, study: str, rule: str, quality: str, cost: str) -> int | str:
    return guarded(url, lambda: load_pick(store(url), study, rule, quality, cost))


@st.cache_data(ttl=LIVE_TTL, show_spinner=False, max_entries=256)
def evaluation(url: str, evaluation_id: int) -> EvaluationRecord:
    return guarded(url, lambda: store(url).evaluation(int(evaluation_id)))


@st.cache_data(show_spinner=False, max_entries=256)
def schedule(url: str, schedule_hash: str) -> Schedule:
    return guarded(url, lambda: store(url).schedule(schedule_hash))


@st.cache_data(show_spinner=False, max_entries=128)
def thumbnails(url: str, evaluation_id: int, n_thumbnails: int) -> list[bytes]:
    """`n_thumbnails` is part of the key: a queued evaluation gains its images when it finishes."""
    return guarded(url, lambda: store(url).thumbnails(int(evaluation_id)))


@st.cache_data(ttl=LIVE_TTL, show_spinner=False, max_entries=32)
def reference_thumbnails(url: str, study: str) -> list[bytes]:
    return guarded(url, lambda: store(url).reference_thumbnails(study))


def export_file(url: str, study: str, evaluation_id: int, fmt: str, quality: str | None = None,
                cost: str | None = None) -> tuple[bytes, str] | str:
    """Bytes and file name of the export, or the reason it cannot be written in `fmt` (not cached:
    the file carries an export time stamp)."""
    def work() -> tuple[bytes, str] | str:
        s = store(url)
        try:
            return export_bytes(s, s.get_study(study), s.evaluation(int(evaluation_id)), fmt, quality, cost)
        except ExportError as exc:
            return str(exc)
    return guarded(url, work)


def clear() -> None:
    """Forget cached query results (the sidebar's Refresh button)."""
    st.cache_data.clear()
