"""The scored result of evaluating one schedule: what evaluators produce, the store keeps, searchers
are told, and the dashboard shows. A plain record (JSON-able apart from the schedule and thumbnails)
so it crosses process boundaries (Ray) and lands in any SQL store without a parallel representation.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from .objectives import objective_value
from .schedule import Schedule

DONE = "done"
FAILED = "failed"
RACED = "raced"      # stopped early, dominated on a subset of the pairs: a partial result


@dataclass
class EvaluationResult:
    schedule: Schedule
    status: str                                   # DONE or FAILED
    metrics: dict[str, float] = field(default_factory=dict)          # aggregate per metric name
    per_prompt: dict[str, list[float]] = field(default_factory=dict)  # metric -> value per (prompt, seed)
    macs: int | None = None                       # one full sampling run under the schedule
    mac_speedup: float | None = None              # all-compute MACs / schedule MACs
    latency_s: float | None = None                # seconds per image, median of repeats
    latency_speedup: float | None = None          # all-compute latency / schedule latency, same worker
    latency_speedup_model: float | None = None    # the latency cost model's predicted speedup (when asked for)
    error: str | None = None                      # why it failed (status FAILED)
    worker: str | None = None                     # which evaluator produced it
    started_at: float | None = None               # unix seconds
    finished_at: float | None = None
    thumbnails: list[bytes] = field(default_factory=list)   # PNG bytes, first prompts, request order
    prompt_set_hash: str | None = None            # which calibration set/seeds/settings it was scored on
    pairs_scored: int | None = None               # (prompt, seed) pairs scored (< pairs_total: RACED)
    pairs_total: int | None = None
    image_steps: int | None = None                # denoising steps run per pair, summed over pairs (a
                                                  # prefix-shared run counts only the steps it ran)

    @property
    def ok(self) -> bool:
        """A full result: scored on every pair (a RACED one is partial and enters no front)."""
        return self.status == DONE

    @classmethod
    def failed(cls, schedule: Schedule, error: str, **kwargs: Any) -> "EvaluationResult":
        return cls(schedule=schedule, status=FAILED, error=error, **kwargs)

    def objective(self, name: str) -> float | None:
        """A cost figure or metric by name, None unless present and finite (`objectives.objective_value`)."""
        return objective_value(self, name)

    def summary(self) -> dict[str, Any]:
        """JSON-able view without the schedule body or image bytes."""
        doc = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("schedule", "thumbnails")}
        doc["metrics"] = dict(self.metrics)
        doc["per_prompt"] = {k: list(v) for k, v in self.per_prompt.items()}
        doc["schedule_hash"] = self.schedule.hash
        return doc


@dataclass
class BaselineResult:
    """A peer caching method (`evaluators.baselines`) scored like a schedule, on the same prompts,
    seeds and metrics. Not a schedule: it never enters a front and is never exported. `macs` (per
    image) is measured on the run itself, since dynamic methods decide per prompt."""

    method: str
    settings: dict[str, Any]
    label: str
    status: str                                   # DONE or FAILED
    metrics: dict[str, float] = field(default_factory=dict)
    per_prompt: dict[str, list[float]] = field(default_factory=dict)
    macs: int | None = None
    mac_speedup: float | None = None
    latency_s: float | None = None
    latency_speedup: float | None = None
    hooked: list[str] = field(default_factory=list)   # modules the method attached to
    error: str | None = None                      # why it could not run (status FAILED)
    worker: str | None = None
    prompt_set_hash: str | None = None
    finished_at: float | None = None
    latency_speedup_model: float | None = None    # never modelled: a peer is not a plan the model reads

    @property
    def ok(self) -> bool:
        return self.status == DONE

    def objective(self, name: str) -> float | None:
        return objective_value(self, name)
