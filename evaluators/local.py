"""`LocalPool`: the default pool, one in-process `Evaluator` (CPU or one GPU)."""

from __future__ import annotations

import time
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from schedules import CostTable, EvaluationResult, ModelSpec, SamplingSpec, Schedule

from .config import EvaluationConfig
from .pool import EvaluatorPool, unique
from .profiling import DriftProfile
from .racing import Race
from .timing import Clock
from .worker import Evaluator, StartupProgress


class LocalPool(EvaluatorPool):
    def __init__(self, config: EvaluationConfig, pipe: Any = None, *, progress: StartupProgress | None = None,
                 clock: Clock = time.perf_counter) -> None:
        """`pipe`: an already loaded pipeline to score with (skips `load_model`); `progress` and
        `clock`: see `Evaluator`."""
        self.config = config
        self.evaluator = Evaluator(config, pipe=pipe, progress=progress, clock=clock)

    def evaluate(self, schedules: Iterable[Schedule], races: Mapping[str, Race] | None = None
                 ) -> Iterator[EvaluationResult]:
        for schedule in self.evaluator.plan(list(unique(schedules))):   # prefix-tree order
            yield self.evaluator.evaluate(schedule, (races or {}).get(schedule.hash))

    def model_spec(self) -> ModelSpec:
        return self.evaluator.spec

    def sampling_spec(self) -> SamplingSpec:
        return self.evaluator.sampling

    def cost_table(self) -> CostTable:
        return self.evaluator.cost_table

    def reference_thumbnails(self) -> list[bytes]:
        return self.evaluator.reference_thumbnails()

    def profile(self, schedule: Schedule | None = None) -> DriftProfile:
        return self.evaluator.profile(schedule)

    def evaluate_baselines(self, requests: Sequence[tuple[str, dict[str, Any]]]) -> Iterator[Any]:
        for method, settings in requests:
            yield self.evaluator.evaluate_baseline(method, settings)

    def timestep_grid(self, steps: int) -> tuple[str, tuple[float, ...]]:
        return self.evaluator.timestep_grid(steps)

    def timestep_costs(self, grid: Sequence[float]) -> np.ndarray:
        return self.evaluator.timestep_costs(grid)

    def worker_info(self) -> list[dict[str, Any]]:
        return [self.evaluator.info()]

    def close(self) -> None:
        pass
