"""`Store`: the only thing other packages use to persist and read search results.

    store = Store("sqlite:///cachesearch.db")          # or any SQLAlchemy URL (postgresql://...)
    info = store.create_study("pixart-ecad", config, model_signature, "ecad", settings,
                              [ObjectiveSpec("psnr"), ObjectiveSpec("mac_speedup")],
                              reference_point={"psnr": 20.0, "mac_speedup": 1.0})
    store.record_evaluation("pixart-ecad", result)      # one transaction per result
    store.front("pixart-ecad", "psnr")                  # non-dominated done evaluations

Every method opens its own short session and returns plain records (`store.records`), so callers never
hold a session, a lock or an ORM object. Writes on SQLite take the write lock up front
(BEGIN IMMEDIATE) and the file runs in WAL mode, so a dashboard reads while a search writes.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from schedules import EvaluationResult, Schedule

from .records import EvaluationRecord, HVPoint, ObjectiveSpec, StudyInfo, StudySummary

DEFAULT_URL = "sqlite:///cachesearch.db"


class Store:
    """A cachesearch result database at a SQLAlchemy URL.

    `create=False` refuses to create a missing SQLite file or missing tables (the dashboard opens
    read-only and should say "no database here" rather than make an empty one). Opening a database
    written by another schema version raises `SchemaVersionError`.
    """

    def __init__(self, url: str = DEFAULT_URL, *, create: bool = True, echo: bool = False) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Dispose of the connection pool. The store is unusable afterwards."""
        raise NotImplementedError

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ studies
    def create_study(self, name: str, config: dict[str, Any], model_signature: str, searcher: str,
                     searcher_settings: dict[str, Any], objectives: Sequence[ObjectiveSpec],
                     reference_point: dict[str, float] | None = None, *,
                     exist_ok: bool = False) -> StudyInfo:
        """Create a study. `objectives` lists the primary objectives (first quality metric and first
        cost are the defaults for fronts); `reference_point` fixes the hypervolume reference per
        objective name (costs default to 1.0, i.e. no speedup) so hypervolumes are comparable across
        studies of the same model and prompt set. With `exist_ok`, an existing study of that name is
        returned when its model signature and searcher match (resume), else `StudyExists`."""
        raise NotImplementedError

    def get_study(self, name: str) -> StudyInfo:
        """The study, or `StudyNotFound` naming the studies that do exist."""
        raise NotImplementedError

    def list_studies(self) -> list[StudySummary]:
        """Every study with counts, front size and best figures on its primary objectives."""
        raise NotImplementedError

    def set_study_status(self, name: str, status: str) -> None:
        """Set one of `records.STUDY_STATUSES` (created, running, interrupted, finished, failed)."""
        raise NotImplementedError

    def delete_study(self, name: str) -> None:
        """Delete a study with its evaluations, thumbnails and searcher state (schedules stay: they
        are shared by hash across studies)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ evaluations: writes
    def mark_queued(self, study: str, schedules: Iterable[Schedule], step: int | None = None) -> list[int]:
        """Record that these schedules were dispatched (status queued); returns evaluation ids.
        Schedules already finished in this study are left untouched (their existing id is returned)."""
        raise NotImplementedError

    def mark_running(self, study: str, schedule_hash: str, worker: str | None = None) -> None:
        """Flag a queued evaluation as running on `worker` (creates the row if it was never queued)."""
        raise NotImplementedError

    def record_evaluation(self, study: str, result: EvaluationResult, step: int | None = None) -> int:
        """Persist one finished result in one transaction: upsert the schedule row by hash, write or
        update the evaluation row (a queued/running/failed row of the same schedule and prompt set is
        completed in place), and store its thumbnails. Recording a schedule that is already done in
        this study keeps the first result and returns its id (evaluated once, never twice)."""
        raise NotImplementedError

    def record_evaluations(self, study: str, results: Sequence[EvaluationResult],
                           step: int | None = None) -> list[int]:
        """Several results in one transaction (a generation at once); same rules as
        `record_evaluation`."""
        raise NotImplementedError

    # ------------------------------------------------------------------ evaluations: reads
    def finished_hashes(self, study: str, *, include_failed: bool = True,
                        prompt_set_hash: str | None = None) -> set[str]:
        """Hashes of schedules finished in this study, for resume: never evaluate twice."""
        raise NotImplementedError

    def unfinished_schedules(self, study: str) -> list[Schedule]:
        """Schedules left queued or running (e.g. by a killed search), to re-dispatch on resume."""
        raise NotImplementedError

    def evaluations(self, study: str, status: str | None = None, *,
                    prompt_set_hash: str | None = None) -> list[EvaluationRecord]:
        """Evaluations of a study in the order they finished (unfinished ones last), optionally only
        one status."""
        raise NotImplementedError

    def evaluation(self, evaluation_id: int) -> EvaluationRecord:
        """One evaluation by id."""
        raise NotImplementedError

    def results(self, study: str) -> list[EvaluationResult]:
        """Finished evaluations as the contract's `EvaluationResult` (schedule included, thumbnails
        not), e.g. to re-tell a searcher on resume."""
        raise NotImplementedError

    def schedule(self, schedule_hash: str) -> Schedule:
        """The schedule with that content hash (a unique prefix of at least 8 characters works)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ thumbnails
    def thumbnails(self, evaluation_id: int) -> list[bytes]:
        """PNG bytes of an evaluation's thumbnails, in the evaluator's prompt order."""
        raise NotImplementedError

    def set_reference_thumbnails(self, study: str, images: Sequence[bytes]) -> None:
        """Replace the study's all-compute reference thumbnails (PNG bytes, prompt order)."""
        raise NotImplementedError

    def reference_thumbnails(self, study: str) -> list[bytes]:
        """The study's reference thumbnails (empty if none were stored)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ searcher state
    def save_searcher_state(self, study: str, state: dict[str, Any], step: int) -> None:
        """Replace the searcher's JSON state (no pickle) and its generation/trial number."""
        raise NotImplementedError

    def load_searcher_state(self, study: str) -> tuple[dict[str, Any], int] | None:
        """The last saved (state, step), or None if the searcher never saved one."""
        raise NotImplementedError

    # ------------------------------------------------------------------ fronts and progress
    def front(self, study: str, quality: str | None = None, cost: str | None = None, *,
              prompt_set_hash: str | None = None) -> list[EvaluationRecord]:
        """Non-dominated done evaluations over (quality, cost), sorted by cost ascending. Defaults are
        the study's primary objectives; directions come from the study (unlisted: maximise).
        Evaluations lacking a finite value for either objective are left out."""
        raise NotImplementedError

    def hypervolume(self, study: str, quality: str | None = None, cost: str | None = None, *,
                    reference: dict[str, float] | None = None,
                    prompt_set_hash: str | None = None) -> float:
        """Hypervolume of the study's front against the study's fixed reference point (or
        `reference`, per objective name). Raises `ObjectiveError` if an objective has no reference."""
        raise NotImplementedError

    def hypervolume_history(self, study: str, quality: str | None = None, cost: str | None = None, *,
                            reference: dict[str, float] | None = None,
                            prompt_set_hash: str | None = None) -> list[HVPoint]:
        """Hypervolume after each finished evaluation (failed ones count toward the budget and add
        nothing), in recording order: one `HVPoint(n_evaluations, hypervolume)` per finished one."""
        raise NotImplementedError
