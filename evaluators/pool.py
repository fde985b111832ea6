"""The one evaluator-pool interface the search loop codes against.

    with make_pool(config) as pool:                      # LocalPool or RayPool from config.pool.kind
        base = pool.all_compute_schedule()               # the study's model + sampling, all compute
        for result in pool.evaluate(schedules):          # streamed as each finishes
            store.add(result)
        drift = pool.profile(None)                       # per-step drift for the DP searcher
        kind, grid = pool.timestep_grid(40)              # a timesteps space's fine grid ...
        jumps = pool.timestep_costs(grid)                # ... and the BOSS DP's one-jump costs

`evaluate` yields exactly one `EvaluationResult` per *distinct* schedule hash in the request (a
duplicate is evaluated once; map results back by `result.schedule.hash`), in completion order, and
never raises for a bad schedule: a mismatch, a NaN, a dead worker after all retries or a timeout is a
result with status 'failed' and the reason in `error`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, TYPE_CHECKING

import numpy as np

from schedules import CostTable, EvaluationResult, ModelSpec, SamplingSpec, Schedule

from .config import EvaluationConfig

if TYPE_CHECKING:
    from .profiling import DriftProfile


class PoolStartError(RuntimeError):
    """The evaluator pool could not start (Ray cluster, actors); the message names the setting to change."""


class EvaluatorPool(ABC):
    """Scores schedules on a study's prompts x seeds; identical metrics whatever the backend."""

    config: EvaluationConfig

    @abstractmethod
    def evaluate(self, schedules: Iterable[Schedule], races: Mapping[str, Any] | None = None
                 ) -> Iterator[EvaluationResult]:
        """One result per distinct schedule hash, streamed in completion order. `races`: schedule
        hash -> `evaluators.racing.Race` for candidates to stop early once dominated."""

    @abstractmethod
    def model_spec(self) -> ModelSpec:
        """The loaded model's block groups (what schedules for this study must target)."""

    @abstractmethod
    def sampling_spec(self) -> SamplingSpec:
        """The study's sampling settings as the schedule contract records them."""

    def all_compute_schedule(self) -> Schedule:
        """The reference schedule: every component computed at every step."""
        return Schedule.all_compute(self.model_spec(), self.sampling_spec())

    @abstractmethod
    def cost_table(self) -> CostTable:
        """MACs per denoiser call and component, measured at the study's batch (`batch_size`) and
        resolution: the knapsack weights of the DP searcher. `EvaluationResult.macs` is per image."""

    @property
    def num_workers(self) -> int:
        """How many schedules the pool scores at once (submit at least this many per request)."""
        return 1

    @abstractmethod
    def reference_thumbnails(self) -> list[bytes]:
        """PNG bytes of the all-compute reference images of the first prompts (thumbnail order)."""

    @abstractmethod
    def profile(self, schedule: Schedule | None = None) -> "DriftProfile":
        """Per-component step-to-step drift along `schedule` (all compute when None); see profiling."""

    @abstractmethod
    def timestep_grid(self, steps: int) -> tuple[str, tuple[float, ...]]:
        """("timesteps" | "sigmas", values): a `steps`-point fine grid in the scheduler's own terms, for
        a timesteps search space; raises `ScheduleMismatchError` naming a scheduler that cannot
        sample custom values."""

    @abstractmethod
    def timestep_costs(self, grid: Sequence[float]) -> np.ndarray:
        """[M+1, M+1] one-jump costs on `grid` (see evaluators.jumps): the BOSS-style DP's input."""

    @abstractmethod
    def close(self) -> None:
        """Release workers; idempotent."""

    def worker_info(self) -> list[dict[str, Any]]:
        """One dict per worker (name, pid, device, reference latency): for logs and tests."""
        return []

    def evaluate_baselines(self, requests: Sequence[tuple[str, dict[str, Any]]]) -> Iterator[Any]:
        """One `schedules.BaselineResult` per (method, settings) request: peer methods scored like
        schedules (`Evaluator.evaluate_baseline`). Pools without a real model have none."""
        raise NotImplementedError(f"{type(self).__name__} cannot score peer methods")

    def __enter__(self) -> "EvaluatorPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def unique(schedules: Iterable[Schedule]) -> list[Schedule]:
    """Distinct schedules by content hash, first occurrence kept, request order preserved."""
    seen: set[str] = set()
    out: list[Schedule] = []
    for s in schedules:
        if s.hash not in seen:
            seen.add(s.hash)
            out.append(s)
    return out


def make_pool(config: EvaluationConfig, progress: Callable[..., None] | None = None) -> EvaluatorPool:
    """The pool `config.pool.kind` names; it loads the model (once per worker) before returning,
    reporting its start-up to `progress(phase, done, total)`."""
    if config.pool.kind == "ray":
        from .ray_pool import RayPool
        return RayPool(config, progress=progress)
    from .local import LocalPool
    return LocalPool(config, progress=progress)
