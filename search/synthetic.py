"""A synthetic evaluator pool with an analytic quality: for tests and demos of the *mechanics* only
(budgets, resume, duplicates, fronts, DP exactness). It says nothing about real schedules.

The model: every (group, component, block) unit u drifts from step a to step s by
    D_u[a, s] = w_u * (r_{a+1} + ... + r_s)
and reusing a cached output computed at step a at step s costs D_u[a, s]; a skipped slot costs
`skip_penalty * w_u`. Quality = `q0 - scale * total cost` (a PSNR-like "higher is better" number), so
the cost of a plan is exactly the sum of "compute at a, reuse until b" segment costs that the DP
optimises, and the DP's front is the true front. Timestep choices add the one-jump cost
C[i, j] = v_i * (j - i - 1)^2 of each jump on the fine grid (the same matrix `timestep_costs` hands
to the BOSS DP), minus the cost of the default even spacing of the study's N steps, so fewer steps
cost quality. MACs come from a fixed CostTable; speedups are against all compute at N steps.
`sensitivity` scales a component's true cost without showing in the profile (what the DP's
calibration has to discover).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from schedules import (
    COMPUTE, DAMPED, FORECAST, REUSE, SKIP, BlockGroup, CostTable, EvaluationResult, ModelSpec, SamplingSpec, Schedule, mac_speedup,
    schedule_macs,
)

SYNTHETIC_CLASS = "PixArtTransformer2DModel"
COMPONENT_MACS = {"attn1": 40, "attn2": 15, "ff": 60}


def synthetic_spec(num_blocks: int = 4, components: Sequence[str] = ("attn1", "attn2", "ff")) -> ModelSpec:
    return ModelSpec("pixart", SYNTHETIC_CLASS,
                     (BlockGroup("transformer_blocks", num_blocks, tuple(components)),), "synthetic")


#: error of a served cell relative to reuse (a forecast recovers part of the drift, more when damped)
SERVED_ERROR = {REUSE: 1.0, FORECAST: 0.6, DAMPED: 0.75}


class SyntheticPool:
    """Drop-in for an evaluator pool: `evaluate`, `profile`, `model_spec`, `all_compute_schedule`,
    `cost_table`, `timestep_costs`. Counts every evaluation in `evaluated` (hashes, in order)."""

    metric = "quality"

    def __init__(self, num_blocks: int = 4, num_steps: int = 8, seed: int = 0, q0: float = 40.0,
                 scale: float = 4.0, skip_penalty: float = 3.0, delay: float = 0.0,
                 components: Sequence[str] = ("attn1", "attn2", "ff"), fail_hashes: Iterable[str] = (),
                 grid: Sequence[float] | None = None, sensitivity: dict[str, float] | None = None,
                 clock: Callable[[], float] = time.time):
        """`clock` stamps each evaluation's start and end (what evaluator-second budgets count); tests
        give a deterministic one."""
        self.clock = clock
        self.spec = synthetic_spec(num_blocks, components)
        self.sampling = SamplingSpec(num_steps, scheduler="synthetic", cfg="none")
        rng = np.random.default_rng(seed)
        self.q0, self.scale, self.skip_penalty, self.delay = q0, scale, skip_penalty, delay
        self.weights = {(g.name, c): rng.uniform(0.2, 1.0, g.num_blocks)
                        for g in self.spec.block_groups for c in g.components}
        self.rates = np.concatenate([[0.0], rng.uniform(0.05, 0.3, num_steps - 1)])
        self.table = CostTable(SYNTHETIC_CLASS,
                               {g.name: {c: (COMPONENT_MACS.get(c, 30),) * g.num_blocks for c in g.components}
                                for g in self.spec.block_groups}, other_macs=20)
        self.fail_hashes = set(fail_hashes)
        self.grid = tuple(grid) if grid is not None else None
        self.sensitivity = dict(sensitivity or {})   # hidden from `profile`: what calibration must learn
        self.evaluated: list[str] = []
        self.profiles = 0
        self.num_workers = 1

    # ------------------------------------------------------------------ pool interface
    def model_spec(self) -> ModelSpec:
        return self.spec

    def all_compute_schedule(self) -> Schedule:
        return Schedule.all_compute(self.spec, self.sampling)

    def cost_table(self) -> CostTable:
        return self.table

    def evaluate(self, schedules: Sequence[Schedule]) -> Iterator[EvaluationResult]:
        for s in schedules:
            start = self.clock()
            if self.delay:
                time.sleep(self.delay)
            self.evaluated.append(s.hash)
            if s.hash in self.fail_hashes:
                yield EvaluationResult.failed(s, "synthetic failure", worker="synthetic",
                                              started_at=start, finished_at=self.clock())
                continue
            q = self.quality(s)
            yield EvaluationResult(
                schedule=s, status="done", metrics={self.metric: q}, per_prompt={self.metric: [q]},
                macs=schedule_macs(s, self.table), mac_speedup=mac_speedup(s, self.table, self.all_compute_schedule()),
                worker="synthetic", started_at=start, finished_at=self.clock(), prompt_set_hash="synthetic")

    def _cumulative(self, steps: int) -> np.ndarray:
        """Cumulative drift at each of `steps` steps: step s sits at position s * N / steps of the N
        steps the rates are drawn for (so fewer steps drift more per step)."""
        n = len(self.rates)
        return np.cumsum(self.rates)[[min(n - 1, round(s * n / steps)) for s in range(steps)]]

    def profile(self, schedule: Schedule | None = None) -> Any:
        """D[b, a, s] for every unit along the schedule's steps: the same drift whatever trajectory;
        forecasts err by their SERVED_ERROR share of it, whatever the older compute."""
        from evaluators.profiling import DriftProfile

        self.profiles += 1
        n = schedule.num_steps if schedule is not None else len(self.rates)
        cum = self._cumulative(n)
        drift = np.abs(cum[None, :] - cum[:, None])          # [a, s] = r_{a+1} + ... + r_s
        drifts = {key: w[:, None, None] * drift[None, :, :] for key, w in self.weights.items()}
        forecast = {(g, c, mode): np.broadcast_to(factor * d[:, None, :, :], (d.shape[0], n, n, n)).copy()
                    for (g, c), d in drifts.items() for mode, factor in SERVED_ERROR.items() if mode != REUSE}
        return DriftProfile(drift=drifts, seconds=0.0, forecast=forecast)

    def timestep_grid(self, steps: int) -> tuple[str, tuple[float, ...]]:
        """The grid the analytic quality scores against (made at construction), else a fresh one."""
        from .space import fine_grid
        return "timesteps", self.grid if self.grid is not None else fine_grid(steps)

    def timestep_costs(self, grid: Sequence[float]) -> np.ndarray:
        m = len(grid)
        v = np.linspace(2.0, 0.5, m + 1)
        i, j = np.meshgrid(np.arange(m + 1), np.arange(m + 1), indexing="ij")
        return np.where(j > i, v[:, None] * (j - i - 1.0) ** 2, np.inf)

    def close(self) -> None:
        pass

    # ------------------------------------------------------------------ the analytic quality
    def plan_cost(self, schedule: Schedule) -> float:
        cum = self._cumulative(schedule.num_steps)
        total = 0.0
        for (g, c), w in self.weights.items():
            w = w * self.sensitivity.get(c, 1.0)
            rows = schedule.rows(g, c)
            for b in range(len(w)):
                last = 0
                for s, row in enumerate(rows):
                    ch = row[b]
                    if ch == COMPUTE:
                        last = s
                    elif ch == SKIP:
                        total += self.skip_penalty * w[b]
                    elif ch in SERVED_ERROR:
                        total += SERVED_ERROR[ch] * w[b] * (cum[s] - cum[last])
                    else:
                        raise ValueError(f"the synthetic pool has no quality model of mode {ch!r}")
        return total

    def timestep_cost(self, schedule: Schedule, grid: Sequence[float]) -> float:
        if schedule.sampling.timesteps is None:
            return 0.0
        where = {t: i for i, t in enumerate(grid)}
        idx = [where[float(t)] for t in schedule.sampling.timesteps] + [len(grid)]
        c = self.timestep_costs(grid)
        k = self.sampling.num_inference_steps
        even = [i * len(grid) // k for i in range(k)] + [len(grid)]
        return float(sum(c[a, b] for a, b in zip(idx, idx[1:])) - sum(c[a, b] for a, b in zip(even, even[1:])))

    def quality(self, schedule: Schedule) -> float:
        cost = self.plan_cost(schedule)
        if self.grid is not None:
            cost += self.timestep_cost(schedule, self.grid)
        return float(self.q0 - self.scale * cost)
