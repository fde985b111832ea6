"""What a study varies, and the flat bit genome every genetic/random searcher works on.

A study chooses any combination of three kinds:

- ``cache``: the step x block x component compute/reuse plan (ECAD's space). Genome: the contract's
  own bit layout (`Schedule.to_bits`), steps 1..N-1, components in canonical order, then blocks.
- ``timesteps``: which K = num_inference_steps of a fine grid of M timesteps to sample
  (AutoDiffusion/BOSS). The first (noisiest) grid point is always sampled, so the genome is M-1 bits
  with exactly K-1 ones. The choice is recorded in ``sampling.timesteps`` of the schedule.
- ``architecture``: which blocks are skipped ('-' on every component for steps >= 1; AutoDiffusion).
  Genome: one keep-bit per (group, block); at least one block of each group is kept.

Step 0 always computes (the contract demands it). A minimum-change constraint makes every candidate
differ from the study's baseline (all compute, default timesteps, no skipped block) in at least
``min_changes`` places, so no searcher spends an evaluation on the reference itself.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Iterable, Sequence

import numpy as np

from schedules import COMPUTE, REUSE, SKIP, ModelSpec, SamplingSpec, Schedule, genome_length

KINDS = ("cache", "timesteps", "architecture")
Genome = list[int]


def fine_grid(fine_steps: int, num_train_timesteps: int = 1000) -> tuple[float, ...]:
    """Descending timesteps with diffusers' default "linspace" spacing for `fine_steps` steps, so a
    K-of-M subset taken every M/K points equals the scheduler's own K-step schedule."""
    grid = np.linspace(0, num_train_timesteps - 1, fine_steps + 1).round()[::-1][:-1]
    return tuple(float(t) for t in grid)


@dataclass(frozen=True)
class SearchSpace:
    model: ModelSpec
    sampling: SamplingSpec
    kinds: tuple[str, ...] = ("cache",)
    grid: tuple[float, ...] | None = None      # fine timestep grid (descending), for "timesteps"
    min_changes: int = 1

    def __post_init__(self) -> None:
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise ValueError(f"space kinds must be a non-empty subset of {KINDS}, got {list(self.kinds)}")
        object.__setattr__(self, "kinds", tuple(k for k in KINDS if k in self.kinds))
        if "timesteps" in self.kinds:
            if not self.grid:
                raise ValueError("the timesteps space needs a fine timestep grid")
            if len(self.grid) < self.num_steps:
                raise ValueError(f"the fine grid has {len(self.grid)} timesteps, fewer than the "
                                 f"{self.num_steps} steps to choose")
        if self.min_changes < 1:
            raise ValueError("min_changes must be >= 1 (the all-compute plan is the reference)")

    # ------------------------------------------------------------------ layout
    @property
    def num_steps(self) -> int:
        return self.sampling.num_inference_steps

    @property
    def cache_length(self) -> int:
        return genome_length(self.model, self.num_steps) if "cache" in self.kinds else 0

    @property
    def timestep_length(self) -> int:
        return len(self.grid) - 1 if "timesteps" in self.kinds and self.grid else 0

    @property
    def arch_length(self) -> int:
        return sum(g.num_blocks for g in self.model.block_groups) if "architecture" in self.kinds else 0

    @property
    def length(self) -> int:
        return self.cache_length + self.timestep_length + self.arch_length

    def step_slots(self, step: int) -> list[int]:
        """Genome positions of every (component, block) slot at `step` (>= 1) in the cache part."""
        if "cache" not in self.kinds or not 1 <= step < self.num_steps:
            return []
        out, offset = [], 0
        for g in self.model.block_groups:
            for _c in g.components:
                start = offset + (step - 1) * g.num_blocks
                out.extend(range(start, start + g.num_blocks))
                offset += (self.num_steps - 1) * g.num_blocks
        return out

    def default_indices(self) -> list[int]:
        """Grid indices of the evenly spaced K-of-M choice (the scheduler's own schedule)."""
        m, k = len(self.grid or ()), self.num_steps
        return [i * m // k for i in range(k)]

    # ------------------------------------------------------------------ baseline
    def baseline(self) -> Schedule:
        """All compute, default timesteps, no skipped block: the reference every candidate must differ from."""
        return self.decode(self.baseline_genome())

    def baseline_genome(self) -> Genome:
        bits = [1] * self.cache_length
        if self.timestep_length:
            chosen = set(self.default_indices()[1:])
            bits += [1 if i in chosen else 0 for i in range(1, len(self.grid))]
        return bits + [1] * self.arch_length

    def base_sampling(self, indices: Sequence[int] | None = None) -> SamplingSpec:
        if "timesteps" not in self.kinds:
            return self.sampling
        idx = list(indices) if indices is not None else self.default_indices()
        return replace(self.sampling, timesteps=tuple(self.grid[i] for i in idx))

    # ------------------------------------------------------------------ genome <-> schedule
    def decode(self, genome: Sequence[int], **info) -> Schedule:
        if len(genome) != self.length:
            raise ValueError(f"genome has {len(genome)} bits, this space needs {self.length}")
        cache = genome[:self.cache_length]
        ts = genome[self.cache_length:self.cache_length + self.timestep_length]
        arch = genome[self.cache_length + self.timestep_length:]
        indices = [0] + [i + 1 for i, b in enumerate(ts) if b] if self.timestep_length else None
        if indices is not None and len(indices) != self.num_steps:
            raise ValueError(f"timestep genome chooses {len(indices)} timesteps, need {self.num_steps}")
        sampling = self.base_sampling(indices)
        if cache:
            schedule = Schedule.from_bits(self.model, sampling, list(cache), **info)
        else:
            schedule = Schedule.all_compute(self.model, sampling, **info)
        if arch:
            schedule = self._apply_skips(schedule, arch)
        return schedule

    def _apply_skips(self, schedule: Schedule, keep: Sequence[int]) -> Schedule:
        plan = {g: {c: list(rows) for c, rows in comps.items()} for g, comps in schedule.plan.items()}
        i = 0
        for g in self.model.block_groups:
            for b in range(g.num_blocks):
                if not keep[i]:
                    for c in g.components:
                        rows = plan[g.name][c]
                        for s in range(1, len(rows)):
                            rows[s] = rows[s][:b] + SKIP + rows[s][b + 1:]
                i += 1
        return Schedule(schedule.model, schedule.sampling, plan, schedule.metrics, schedule.provenance)

    def encode(self, schedule: Schedule) -> Genome:
        """The genome of a schedule of this space (raises ValueError naming what does not fit)."""
        self.check(schedule)
        bits: Genome = []
        if "cache" in self.kinds:
            for g, c in schedule.components():
                for row in schedule.rows(g, c)[1:]:
                    bits.extend(0 if ch == REUSE else 1 for ch in row)
        if self.timestep_length:
            chosen = set(self._indices_of(schedule)[1:])
            bits += [1 if i in chosen else 0 for i in range(1, len(self.grid))]
        if self.arch_length:
            bits += [0 if b in skipped else 1
                     for g in self.model.block_groups
                     for skipped in [self._skipped_blocks(schedule, g.name)]
                     for b in range(g.num_blocks)]
        return bits

    def _indices_of(self, schedule: Schedule) -> list[int]:
        ts = schedule.sampling.timesteps
        if ts is None:
            return self.default_indices()
        where = {t: i for i, t in enumerate(self.grid)}
        try:
            return [where[float(t)] for t in ts]
        except KeyError as exc:
            raise ValueError(f"timestep {exc.args[0]} is not on the study's fine grid") from None

    @staticmethod
    def _skipped_blocks(schedule: Schedule, group: str) -> set[int]:
        comps = schedule.plan[group]
        first = next(iter(comps.values()))
        return {b for b in range(len(first[0]))
                if all(rows[s][b] == SKIP for rows in comps.values() for s in range(1, len(rows)))}

    def check(self, schedule: Schedule) -> None:
        """Raise ValueError if `schedule` is not a point of this space."""
        if schedule.model.block_groups != self.model.block_groups:
            raise ValueError("schedule is for other block groups than the study's model")
        if schedule.num_steps != self.num_steps:
            raise ValueError(f"schedule has {schedule.num_steps} steps, the study {self.num_steps}")
        if self.timestep_length:
            idx = self._indices_of(schedule)
            if idx[0] != 0 or sorted(set(idx)) != idx:
                raise ValueError("timesteps must start at the grid's first point and strictly descend")
        elif schedule.sampling.timesteps != self.sampling.timesteps:
            raise ValueError("schedule changes timesteps but the space has no 'timesteps' kind")
        allowed = {COMPUTE} | ({REUSE} if "cache" in self.kinds else set())
        for g in self.model.block_groups:
            skipped = self._skipped_blocks(schedule, g.name) if self.arch_length else set()
            for c in g.components:
                for row in schedule.rows(g.name, c)[1:]:
                    for b, ch in enumerate(row):
                        if b not in skipped and ch not in allowed:
                            raise ValueError(f"mode {ch!r} in {g.name}.{c} is outside the space {self.kinds}")

    def project(self, schedule: Schedule) -> Schedule | None:
        """The schedule lifted into this space (timesteps/skips added as defaults), or None if it uses
        something the space cannot express. Provenance and metrics ride along."""
        try:
            if "timesteps" in self.kinds and schedule.sampling.timesteps is None:
                schedule = Schedule(schedule.model, self.base_sampling(), schedule.plan,
                                    schedule.metrics, schedule.provenance)
            genome = self.encode(schedule)
        except ValueError:
            return None
        return self.decode(genome, metrics=schedule.metrics, provenance=schedule.provenance)

    # ------------------------------------------------------------------ constraints
    def changes(self, schedule: Schedule) -> int:
        """How many places differ from the baseline: reused/skipped slots plus moved timesteps."""
        n = sum(row.count(REUSE) + row.count(SKIP)
                for g, c in schedule.components() for row in schedule.rows(g, c))
        if self.timestep_length:
            n += len(set(self._indices_of(schedule)) - set(self.default_indices()))
        return n

    def admissible(self, schedule: Schedule) -> bool:
        return self.changes(schedule) >= self.min_changes

    def repair(self, genome: Genome, rng: random.Random) -> Genome:
        """Make a genome valid in place: exactly K-1 timestep bits, at least one kept block per group."""
        if self.timestep_length:
            lo, hi = self.cache_length, self.cache_length + self.timestep_length
            need = self.num_steps - 1
            on = [i for i in range(lo, hi) if genome[i]]
            off = [i for i in range(lo, hi) if not genome[i]]
            while len(on) > need:
                genome[on.pop(rng.randrange(len(on)))] = 0
            while len(on) < need:
                j = off.pop(rng.randrange(len(off)))
                genome[j] = 1
                on.append(j)
        if self.arch_length:
            i = self.cache_length + self.timestep_length
            for g in self.model.block_groups:
                seg = range(i, i + g.num_blocks)
                if not any(genome[j] for j in seg):
                    genome[rng.choice(list(seg))] = 1
                i += g.num_blocks
        return genome

    def random_genome(self, rng: random.Random, density: float | None = None) -> Genome:
        """Uniform bits at a compute density itself drawn uniformly (so every speed range is covered;
        fair coin flips would pile up around a 2x MAC speedup)."""
        p = rng.random() if density is None else density
        genome = [1 if rng.random() < p else 0 for _ in range(self.cache_length)]
        genome += [1 if rng.random() < 0.5 else 0 for _ in range(self.timestep_length)]
        genome += [1 if rng.random() < max(p, 0.5) else 0 for _ in range(self.arch_length)]
        return self.repair(genome, rng)

    def schedules(self, genomes: Iterable[Sequence[int]]) -> list[Schedule]:
        return [self.decode(g) for g in genomes]
