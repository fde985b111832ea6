"""Plain records the store hands out. They hold values, not ORM objects, so they never drag a session
along, cross process and thread boundaries freely (Streamlit reruns, Ray), and compare by value."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .errors import ObjectiveError

#: Cost objectives every evaluation carries as columns; anything else is a metric name.
COST_OBJECTIVES = ("mac_speedup", "latency_speedup")

#: Status values of one evaluation row, in lifecycle order.
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
EVALUATION_STATUSES = (QUEUED, RUNNING, DONE, FAILED)

#: Status values of a study.
STUDY_STATUSES = ("created", "running", "interrupted", "finished", "failed")


@dataclass(frozen=True)
class ObjectiveSpec:
    """One objective of a study: a metric name (``psnr``, ``ssim``, ``adherence``, ...) or a cost
    (``mac_speedup``, ``latency_speedup``) and whether larger is better."""

    name: str
    maximize: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "maximize": self.maximize}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "ObjectiveSpec":
        return cls(str(doc["name"]), bool(doc.get("maximize", True)))


#: A running study whose heartbeat is older than this many intervals counts as stale (its run died).
STALE_AFTER_INTERVALS = 3


@dataclass(frozen=True)
class RunInfo:
    """Who runs a study and when it last beat (`models.StudyRun`)."""

    owner: str
    started_at: float
    heartbeat_at: float
    interval_s: float

    def stale(self, now: float) -> bool:
        return now - self.heartbeat_at > STALE_AFTER_INTERVALS * self.interval_s


def run_status(status: str, run: RunInfo | None, now: float) -> str:
    """The status to show: a `running` study without a live heartbeat is "stale (last seen ... ago)"."""
    if status != "running":
        return status
    if run is None:
        return "stale (no heartbeat)"
    if run.stale(now):
        return f"stale (last seen {format_age(now - run.heartbeat_at)} ago)"
    return "running"


def format_age(seconds: float) -> str:
    """'12 s', '5 min', '3.2 h', '2.0 days'."""
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


@dataclass(frozen=True)
class StudyInfo:
    """A study as created: what it searches, how, and the fixed hypervolume reference point."""

    id: int
    name: str
    config: dict[str, Any]
    model_signature: str
    searcher: str
    searcher_settings: dict[str, Any]
    objectives: tuple[ObjectiveSpec, ...]
    reference_point: dict[str, float]
    status: str
    created_at: float
    updated_at: float
    run: RunInfo | None = None      # the live run's heartbeat (None when no run holds the study)

    def display_status(self, now: float) -> str:
        return run_status(self.status, self.run, now)

    @property
    def quality(self) -> str:
        """The primary quality objective: the first objective that is not a cost."""
        for o in self.objectives:
            if o.name not in COST_OBJECTIVES:
                return o.name
        raise ObjectiveError(f"study '{self.name}' lists no quality objective; name one (e.g. quality='psnr')")

    @property
    def cost(self) -> str:
        """The primary cost objective: the first cost objective listed, else ``mac_speedup``."""
        for o in self.objectives:
            if o.name in COST_OBJECTIVES:
                return o.name
        return "mac_speedup"

    def maximize(self, name: str) -> bool:
        """Direction of an objective; names the study does not list count as larger-is-better."""
        for o in self.objectives:
            if o.name == name:
                return o.maximize
        return True


@dataclass(frozen=True)
class StudySummary:
    """One line of the studies table (what `list_studies` returns)."""

    name: str
    model_signature: str
    searcher: str
    status: str
    n_evaluations: int          # finished (done + failed)
    n_done: int
    n_failed: int
    n_pending: int              # queued + running
    front_size: int             # on the study's primary (quality, cost) objectives
    best_quality: float | None
    best_speedup: float | None
    created_at: float
    updated_at: float
    run: RunInfo | None = None

    def display_status(self, now: float) -> str:
        return run_status(self.status, self.run, now)


@dataclass(frozen=True)
class EvaluationRecord:
    """One evaluation row with its schedule's summary figures (not the plan itself: `Store.schedule`)."""

    id: int
    study: str
    schedule_hash: str
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    per_prompt: dict[str, list[float]] = field(default_factory=dict)
    macs: int | None = None
    mac_speedup: float | None = None
    latency_s: float | None = None
    latency_speedup: float | None = None
    error: str | None = None
    worker: str | None = None
    prompt_set_hash: str | None = None
    step: int | None = None                 # generation / trial number it was asked in
    provenance: dict[str, Any] = field(default_factory=dict)   # the schedule's provenance when recorded
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    recorded_at: float | None = None
    compute_fraction: float | None = None
    fractions: dict[str, float] = field(default_factory=dict)  # "group.component" -> fraction computed
    n_thumbnails: int = 0

    @property
    def ok(self) -> bool:
        return self.status == DONE

    def objective(self, name: str) -> float | None:
        """A metric or cost by name; None when absent or not finite (same rule as
        `EvaluationResult.objective`, so fronts agree with what searchers were told)."""
        if name in ("mac_speedup", "latency_speedup", "macs", "latency_s"):
            value = getattr(self, name)
        else:
            value = self.metrics.get(name)
        if value is None:
            return None
        try:
            value = float(value)
        except (TypeError, ValueError):
            return None
        return value if math.isfinite(value) else None


class HVPoint(NamedTuple):
    """Hypervolume after the first `n_evaluations` finished evaluations (in the order recorded)."""

    n_evaluations: int
    hypervolume: float
