"""Plain records the store hands out. They hold values, not ORM objects, so they never drag a session
along, cross process and thread boundaries freely (Streamlit reruns, Ray), and compare by value."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from schedules.objectives import Objective, Objectives, objective_value

#: Status values of one evaluation row, in lifecycle order.
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
EVALUATION_STATUSES = (QUEUED, RUNNING, DONE, FAILED)

#: What an evaluation is for. `search` results are the study's own: its front, hypervolume, budget
#: and resume. The others are reserved for results kept beside a study without entering those: peers
#: evaluated as baselines on the same prompts, front members re-scored on held-out prompts.
SEARCH, BASELINE, VALIDATION = "search", "baseline", "validation"
RESULT_KINDS = (SEARCH, BASELINE, VALIDATION)

#: Status values of a study.
STUDY_STATUSES = ("created", "running", "interrupted", "finished", "failed")


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
    objectives: Objectives                   # roles and hypervolume references included
    reference_point: dict[str, float]        # every stored reference (objectives' and any extra name's)
    status: str
    created_at: float
    updated_at: float
    run: RunInfo | None = None      # the live run's heartbeat (None when no run holds the study)

    def display_status(self, now: float) -> str:
        return run_status(self.status, self.run, now)

    @property
    def model_name(self) -> str:
        return model_name(self.config, self.model_signature)

    @property
    def quality(self) -> str:
        """The primary quality objective's name (the first with role quality)."""
        return self.objectives.quality.name

    @property
    def cost(self) -> str:
        """The primary cost objective's name (the first with role cost)."""
        return self.objectives.cost.name

    def maximize(self, name: str) -> bool:
        """Direction of an objective; names the study does not list count as larger-is-better."""
        return self.objectives.maximize(name)

    def pair(self, quality: str | None = None, cost: str | None = None) -> Objectives:
        """The (quality, cost) objectives of a 2-D front, the primary ones unless named; references
        from the study's stored reference point."""
        pair = self.objectives.pair(quality, cost)
        return Objectives(o if o.reference is not None or o.name not in self.reference_point
                          else Objective(o.name, o.maximize, o.role, self.reference_point[o.name], o.unit)
                          for o in pair)


def model_name(config: dict[str, Any], signature: str) -> str:
    """What to call a study's model on a page: the name the search recorded (`model_name` in the
    study config), else the config's `evaluation.model`, else the signature (shortened when it is a
    bare hash)."""
    named = config.get("model_name") or (config.get("evaluation") or {}).get("model")
    if named:
        return str(named)
    if len(signature) == 64 and all(ch in "0123456789abcdef" for ch in signature):
        return f"model {signature[:12]}"
    return signature


@dataclass(frozen=True)
class StudySummary:
    """One line of the studies table (what `list_studies` returns). `best_quality` / `best_speedup`
    are on the study's primary objectives, named by `quality` / `cost`."""

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
    quality: str | None = None
    cost: str | None = None
    model_name: str = ""

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
    latency_speedup_model: float | None = None
    error: str | None = None
    worker: str | None = None
    prompt_set_hash: str | None = None
    kind: str = SEARCH                      # RESULT_KINDS
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
        """A cost figure or metric by name, None unless present and finite: the value rule of
        `schedules.objectives`, so fronts agree with what searchers were told."""
        return objective_value(self, name)


class HVPoint(NamedTuple):
    """Hypervolume after the first `n_evaluations` finished evaluations (in the order recorded)."""

    n_evaluations: int
    hypervolume: float
