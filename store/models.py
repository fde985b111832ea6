"""The SQL schema, as SQLAlchemy 2 typed ORM classes.

One row per study, per schedule (keyed by content hash and shared by every study that evaluates it),
per evaluation of a schedule in a study on a prompt set, per thumbnail, and per study for the
searcher's resume state. Summary columns (compute fraction, per-component fractions, thumbnail
count) are denormalised at write time so dashboard listings never parse plans or read image bytes.

Bump `SCHEMA_VERSION` on any change to these tables; `engine.ensure_schema` then refuses to open
databases of the other version with a message saying so.
"""

from __future__ import annotations

from typing import Any, Optional

from sqlalchemy import (
    JSON, BigInteger, CheckConstraint, Float, ForeignKey, Index, Integer, LargeBinary, String, Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

SCHEMA_VERSION = 1
SCHEMA_TABLE = "cachesearch_schema"


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class SchemaInfo(Base):
    """Key/value facts about the database itself; the `version` row is checked on every open."""

    __tablename__ = SCHEMA_TABLE
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


class Study(Base):
    __tablename__ = "studies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    config: Mapped[dict[str, Any]]
    model_signature: Mapped[str] = mapped_column(String(512))
    searcher: Mapped[str] = mapped_column(String(100))
    searcher_settings: Mapped[dict[str, Any]]
    objectives: Mapped[list[Any]]                 # [{"name": ..., "maximize": ...}]
    reference_point: Mapped[dict[str, Any]]       # objective name -> float
    status: Mapped[str] = mapped_column(String(20), default="created")
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)

    evaluations: Mapped[list["Evaluation"]] = relationship(
        back_populates="study", cascade="all, delete-orphan", passive_deletes=True)


class ScheduleRow(Base):
    """A schedule by content hash: the canonical JSON (behaviour only; metrics live on evaluations)."""

    __tablename__ = "schedules"
    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    canonical_json: Mapped[str] = mapped_column(Text)
    family: Mapped[str] = mapped_column(String(50))
    transformer_class: Mapped[str] = mapped_column(String(200))
    model_id: Mapped[Optional[str]] = mapped_column(String(512))
    num_steps: Mapped[int] = mapped_column(Integer)
    compute_fraction: Mapped[float] = mapped_column(Float)
    fractions: Mapped[dict[str, Any]]             # "group.component" -> fraction computed
    created_at: Mapped[float] = mapped_column(Float)


class Evaluation(Base):
    """One schedule scored in one study on one prompt set; completed in place from queued/running.

    `prompt_set_hash` is '' when unknown, so the uniqueness constraint also holds without one (SQL
    treats NULLs as distinct). `recorded_at` orders finished evaluations for hypervolume history.
    `kind` says what the result is for (`records.RESULT_KINDS`): `search` results make the study's
    front, hypervolume and budget; other kinds (peers' baselines, held-out validation) are kept
    beside them and never enter those.
    """

    __tablename__ = "evaluations"
    __table_args__ = (
        UniqueConstraint("study_id", "schedule_hash", "prompt_set_hash", name="uq_evaluation"),
        Index("ix_evaluations_study_status", "study_id", "status"),
        Index("ix_evaluations_study_recorded", "study_id", "recorded_at"),
        CheckConstraint("status IN ('queued', 'running', 'done', 'failed')", name="ck_evaluation_status"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    schedule_hash: Mapped[str] = mapped_column(ForeignKey("schedules.hash"), index=True)
    prompt_set_hash: Mapped[str] = mapped_column(String(128), default="")
    status: Mapped[str] = mapped_column(String(10))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    per_prompt: Mapped[dict[str, Any]] = mapped_column(default=dict)
    macs: Mapped[Optional[int]] = mapped_column(BigInteger)
    mac_speedup: Mapped[Optional[float]] = mapped_column(Float)
    latency_s: Mapped[Optional[float]] = mapped_column(Float)
    latency_speedup: Mapped[Optional[float]] = mapped_column(Float)
    latency_speedup_model: Mapped[Optional[float]] = mapped_column(Float)    # added after version 1 (ADDED_COLUMNS)
    kind: Mapped[str] = mapped_column(String(20), default="search", server_default="search")   # added after v1
    # racing and images (added after version 1): pairs scored of pairs total (fewer: a partial, raced
    # result, stored with status done and shown as raced), denoising steps run per pair, summed
    pairs_scored: Mapped[Optional[int]] = mapped_column(Integer)
    pairs_total: Mapped[Optional[int]] = mapped_column(Integer)
    image_steps: Mapped[Optional[int]] = mapped_column(BigInteger)
    error: Mapped[Optional[str]] = mapped_column(Text)
    worker: Mapped[Optional[str]] = mapped_column(String(200))
    step: Mapped[Optional[int]] = mapped_column(Integer)
    provenance: Mapped[dict[str, Any]] = mapped_column(default=dict)
    queued_at: Mapped[Optional[float]] = mapped_column(Float)
    started_at: Mapped[Optional[float]] = mapped_column(Float)
    finished_at: Mapped[Optional[float]] = mapped_column(Float)
    recorded_at: Mapped[Optional[float]] = mapped_column(Float)
    n_thumbnails: Mapped[int] = mapped_column(Integer, default=0)

    study: Mapped[Study] = relationship(back_populates="evaluations")


class Thumbnail(Base):
    """PNG bytes of one image: an evaluation's (evaluation_id) or a study's reference (study_id)."""

    __tablename__ = "thumbnails"
    __table_args__ = (
        CheckConstraint("(evaluation_id IS NULL) <> (study_id IS NULL)", name="ck_thumbnail_owner"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    evaluation_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("evaluations.id", ondelete="CASCADE"), index=True)
    study_id: Mapped[Optional[int]] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    png: Mapped[bytes] = mapped_column(LargeBinary)


class SearcherState(Base):
    """The searcher's last JSON state and generation/trial number, replaced on every save."""

    __tablename__ = "searcher_states"
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer)
    state: Mapped[dict[str, Any]]
    saved_at: Mapped[float] = mapped_column(Float)


class StudyRun(Base):
    """The process running a study now and its heartbeat (Optuna's `heartbeat_interval` pattern): the
    run beats every `interval_s`; a `running` study whose beat is older than a few intervals was
    killed, and `--resume` may take it over. One row per study, deleted when the run ends.

    Added after version 1 without a version bump: an additive table that older readers ignore, and
    that a writer creates in a version-1 database it opens (`engine.ensure_schema`)."""

    __tablename__ = "study_runs"
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))          # host:pid of the running process
    started_at: Mapped[float] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float)
    interval_s: Mapped[float] = mapped_column(Float)


class BaselineRun(Base):
    """A peer method (diffusers' FirstBlockCache, TaylorSeer, MagCache, ...) scored in a study like a
    schedule, on the same prompts, seeds and metrics: not a schedule, so never a search candidate,
    in no front or hypervolume, never exported. One row per (study, setting label, prompt set).
    `macs` is measured (FlopCounterMode on every denoiser call: dynamic methods decide per prompt);
    `hooked` lists the modules it attached to (a method that hooks nothing is a failure).
    Added after version 1, like StudyRun: an additive table a writer creates in an older store."""

    __tablename__ = "baseline_runs"
    __table_args__ = (UniqueConstraint("study_id", "label", "prompt_set_hash", name="uq_baseline_run"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(String(300))
    method: Mapped[str] = mapped_column(String(100))
    settings: Mapped[dict[str, Any]]
    prompt_set_hash: Mapped[str] = mapped_column(String(128), default="")
    status: Mapped[str] = mapped_column(String(10))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    per_prompt: Mapped[dict[str, Any]] = mapped_column(default=dict)
    macs: Mapped[Optional[int]] = mapped_column(BigInteger)
    mac_speedup: Mapped[Optional[float]] = mapped_column(Float)
    latency_s: Mapped[Optional[float]] = mapped_column(Float)
    latency_speedup: Mapped[Optional[float]] = mapped_column(Float)
    hooked: Mapped[list[Any]] = mapped_column(default=list)
    error: Mapped[Optional[str]] = mapped_column(Text)
    worker: Mapped[Optional[str]] = mapped_column(String(200))
    finished_at: Mapped[Optional[float]] = mapped_column(Float)
    recorded_at: Mapped[float] = mapped_column(Float)


TABLES = [t.name for t in Base.metadata.sorted_tables]
OPTIONAL_TABLES = ("study_runs", "baseline_runs")   # may be absent from a version-1 store (StudyRun, BaselineRun)

#: Columns added after version 1 without a version bump, as the heartbeat table was: additive, with
#: the value rows of an older store have (None: not measured). A writer opening a version-1 store adds
#: them (`engine.ensure_schema`); a reader of one that lacks them reads these values instead.
ADDED_COLUMNS: dict[str, dict[str, Any]] = {
    "evaluations": {"latency_speedup_model": None, "kind": "search", "pairs_scored": None, "pairs_total": None,
                    "image_steps": None},
}
