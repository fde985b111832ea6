"""What a study varies, and the flat bit genome every genetic/random searcher works on.

A study chooses any combination of three kinds:

- ``cache``: the step x block x component plan (ECAD's space), each cell one of the study's allowed
  `modes` (default compute/reuse; forecasts 'F'/'D' when the study allows them). Genome: one gene
  per cell over steps 1..K_max-1, components in canonical order, then blocks (the layout of
  `Schedule.to_bits`); a gene is an index into `gene_modes` — 1 is compute, 0 the first non-compute
  mode (reuse when allowed), 2.. the others — so a reuse-only genome is exactly ECAD's bit genome.
  A cell whose mode lacks the earlier computes it needs (a forecast at step 1) decodes as that
  fallback mode instead. A schedule of K < K_max steps uses each component's first K-1 rows (the
  rest are hidden genes that come back into play when a descendant samples more steps).
- ``timesteps``: which K of a fine grid of M timesteps (or sigmas, the grid's `grid_kind`) to sample,
  K between `min_steps` and `max_steps` (AutoDiffusion/BOSS: fewer steps are the cheapest speedup).
  The first (noisiest) grid point is always sampled, so the genome is M-1 bits with K-1 ones. The
  choice is the schedule's `sampling.timesteps` (or `.sigmas`) and its step count. The study's
  reference stays its all-compute run at its own N steps (`sampling`), and costs count the steps run.
- ``architecture``: which blocks are skipped ('-' on every component for steps >= 1; AutoDiffusion).
  Genome: one keep-bit per (group, block); at least one block of each group is kept.

The genome is these segments concatenated (`segments`); crossover works within them. Step 0 always
computes (the contract demands it). A minimum-change constraint makes every candidate differ from the
study's baseline (all compute, the default N timesteps, no skipped block) in at least ``min_changes``
places, so no searcher spends an evaluation on the reference itself.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Iterable, Sequence

import numpy as np

from schedules import COMPUTE, MODE_TABLE, REUSE, SKIP, ModelSpec, SamplingSpec, Schedule, genome_length
from schedules import SIGMAS, TIMESTEPS

KINDS = ("cache", "timesteps", "architecture")
Genome = list[int]


def fine_grid(fine_steps: int, num_train_timesteps: int = 1000) -> tuple[float, ...]:
    """Descending timesteps with diffusers' default "linspace" spacing for `fine_steps` steps, so a
    K-of-M subset taken every M/K points equals the scheduler's own K-step schedule. (A real
    evaluator pool gives its scheduler's own grid: `pool.timestep_grid`; this one serves the
    synthetic pool and explicit configs.)"""
    grid = np.linspace(0, num_train_timesteps - 1, fine_steps + 1).round()[::-1][:-1]
    return tuple(float(t) for t in grid)


@dataclass(frozen=True)
class SearchSpace:
    model: ModelSpec
    sampling: SamplingSpec                     # the study's reference sampling: N steps
    kinds: tuple[str, ...] = ("cache",)
    grid: tuple[float, ...] | None = None      # fine timestep grid (descending), for "timesteps"
    min_changes: int = 1
    grid_kind: str = TIMESTEPS                 # what the grid's values are: "timesteps" or "sigmas"
    min_steps: int | None = None               # timesteps space: fewest steps (default max(2, N // 4))
    max_steps: int | None = None               # timesteps space: most steps (default N)
    modes: tuple[str, ...] = (COMPUTE, REUSE)   # cache space: the modes a cell may take

    def __post_init__(self) -> None:
        unknown = [m for m in self.modes if m not in MODE_TABLE]
        if unknown or COMPUTE not in self.modes or len(self.modes) < 2:
            raise ValueError(f"space modes must include compute '1' and at least one other mode of "
                             f"{list(MODE_TABLE)}, got {list(self.modes)}")
        object.__setattr__(self, "modes", tuple(m for m in MODE_TABLE if m in self.modes))
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise ValueError(f"space kinds must be a non-empty subset of {KINDS}, got {list(self.kinds)}")
        object.__setattr__(self, "kinds", tuple(k for k in KINDS if k in self.kinds))
        n = self.num_steps
        if "timesteps" in self.kinds:
            if not self.grid:
                raise ValueError("the timesteps space needs a fine timestep grid")
            if self.grid_kind not in (TIMESTEPS, SIGMAS):
                raise ValueError(f"grid_kind must be {TIMESTEPS!r} or {SIGMAS!r}, got {self.grid_kind!r}")
            if any(a <= b for a, b in zip(self.grid, self.grid[1:])):
                raise ValueError("the fine grid must strictly descend (noise to data)")
            if len(self.grid) < n:
                raise ValueError(f"the fine grid has {len(self.grid)} timesteps, fewer than the study's "
                                 f"{n} steps")
            lo = self.min_steps if self.min_steps is not None else max(2, n // 4)
            hi = self.max_steps if self.max_steps is not None else n
            if not 2 <= lo <= hi <= len(self.grid):
                raise ValueError(f"need 2 <= min_steps ({lo}) <= max_steps ({hi}) <= fine grid size "
                                 f"({len(self.grid)})")
        else:
            lo = hi = n
        object.__setattr__(self, "min_steps", lo)
        object.__setattr__(self, "max_steps", hi)
        if self.min_changes < 1:
            raise ValueError("min_changes must be >= 1 (the all-compute plan is the reference)")

    # ------------------------------------------------------------------ layout
    @property
    def gene_modes(self) -> tuple[str, ...]:
        """Cache gene value -> mode: 0 the primary non-compute mode (reuse if allowed), 1 compute,
        then the other allowed modes in table order."""
        others = [m for m in self.modes if m != COMPUTE]
        primary = REUSE if REUSE in others else others[0]
        return (primary, COMPUTE, *[m for m in others if m != primary])

    def gene_values(self, position: int) -> int:
        """How many values the gene at `position` takes (cache cells: the modes; the rest: 2)."""
        return len(self.gene_modes) if position < self.cache_length else 2

    def mutate_gene(self, genome: list[int], position: int, rng: random.Random) -> None:
        """Give one gene a different value, uniformly among the others (a bit flip for binary genes)."""
        n = self.gene_values(position)
        genome[position] = (genome[position] + rng.randrange(1, n)) % n

    def components(self) -> list[tuple[str, str]]:
        """(group, component) pairs in the contract's canonical order."""
        return [(g.name, c) for g in self.model.block_groups for c in g.components]

    @property
    def num_steps(self) -> int:
        """The study's reference step count N."""
        return self.sampling.num_inference_steps

    @property
    def cache_length(self) -> int:
        return genome_length(self.model, self.max_steps) if "cache" in self.kinds else 0

    @property
    def timestep_length(self) -> int:
        return len(self.grid) - 1 if "timesteps" in self.kinds and self.grid else 0

    @property
    def arch_length(self) -> int:
        return sum(g.num_blocks for g in self.model.block_groups) if "architecture" in self.kinds else 0

    @property
    def length(self) -> int:
        return self.cache_length + self.timestep_length + self.arch_length

    def segments(self) -> list[tuple[int, int]]:
        """[start, end) of each non-empty genome segment (cache, timesteps, architecture), in order."""
        bounds = np.cumsum([0, self.cache_length, self.timestep_length, self.arch_length])
        return [(int(a), int(b)) for a, b in zip(bounds, bounds[1:]) if b > a]

    def step_slots(self, step: int) -> list[int]:
        """Genome positions of every (component, block) slot at `step` (>= 1) in the cache part."""
        if "cache" not in self.kinds or not 1 <= step < self.max_steps:
            return []
        out, offset = [], 0
        for g in self.model.block_groups:
            for _c in g.components:
                start = offset + (step - 1) * g.num_blocks
                out.extend(range(start, start + g.num_blocks))
                offset += (self.max_steps - 1) * g.num_blocks
        return out

    def active_steps(self, genome: Sequence[int]) -> int:
        """K: the number of steps the genome's schedule samples."""
        if not self.timestep_length:
            return self.num_steps
        lo = self.cache_length
        return 1 + sum(1 for b in genome[lo:lo + self.timestep_length] if b)

    def default_indices(self, k: int | None = None) -> list[int]:
        """Grid indices of the evenly spaced K-of-M choice (K = N: the study's own schedule; with M a
        multiple of K, the scheduler's own K-step schedule)."""
        m, k = len(self.grid or ()), k or self.num_steps
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
        """The study's sampling, or (timesteps space) the K grid points `indices` (default: the N
        default ones) as explicit values of the grid's kind."""
        if "timesteps" not in self.kinds:
            return self.sampling
        idx = list(indices) if indices is not None else self.default_indices()
        values = tuple(self.grid[i] for i in idx)
        explicit = {TIMESTEPS: None, SIGMAS: None, self.grid_kind: values}
        return replace(self.sampling, num_inference_steps=len(idx), **explicit)

    # ------------------------------------------------------------------ genome <-> schedule
    def decode(self, genome: Sequence[int], **info) -> Schedule:
        if len(genome) != self.length:
            raise ValueError(f"genome has {len(genome)} bits, this space needs {self.length}")
        cache = genome[:self.cache_length]
        ts = genome[self.cache_length:self.cache_length + self.timestep_length]
        arch = genome[self.cache_length + self.timestep_length:]
        indices = [0] + [i + 1 for i, b in enumerate(ts) if b] if self.timestep_length else None
        if indices is not None and not self.min_steps <= len(indices) <= self.max_steps:
            raise ValueError(f"timestep genome chooses {len(indices)} timesteps, need {self.min_steps}.."
                             f"{self.max_steps}")
        sampling = self.base_sampling(indices)
        if cache:
            schedule = self._from_cache_bits(list(cache), sampling, **info)
        else:
            schedule = Schedule.all_compute(self.model, sampling, **info)
        if arch:
            schedule = self._apply_skips(schedule, arch)
        return schedule

    def _from_cache_bits(self, bits: list[int], sampling: SamplingSpec, **info) -> Schedule:
        """Rows 1..K-1 of each component's K_max-1 rows (the `Schedule.to_bits` layout at K_max)."""
        k, rows_per = sampling.num_inference_steps, self.max_steps - 1
        alphabet = self.gene_modes
        masks, i = {}, 0
        for g in self.model.block_groups:
            for c in g.components:
                rows = [[alphabet[v] for v in bits[i + r * g.num_blocks:i + (r + 1) * g.num_blocks]]
                        for r in range(k - 1)]
                masks[(g.name, c)] = [COMPUTE * g.num_blocks] + with_history(rows, g.num_blocks, alphabet[0])
                i += rows_per * g.num_blocks
        return Schedule.from_masks(self.model, sampling, masks, **info)

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
        """The genome of a schedule of this space (raises ValueError naming what does not fit). Rows
        beyond the schedule's own steps (hidden genes) encode as compute."""
        self.check(schedule)
        bits: Genome = []
        if "cache" in self.kinds:
            gene = {m: i for i, m in enumerate(self.gene_modes)}
            for g, c in schedule.components():
                for row in schedule.rows(g, c)[1:]:
                    bits.extend(gene.get(ch, 1) for ch in row)    # skipped blocks (architecture) encode as compute
                bits.extend([1] * (self.max_steps - schedule.num_steps) * self.model.group(g).num_blocks)
        if self.timestep_length:
            chosen = set(self.indices_of(schedule)[1:])
            bits += [1 if i in chosen else 0 for i in range(1, len(self.grid))]
        if self.arch_length:
            bits += [0 if b in skipped else 1
                     for g in self.model.block_groups
                     for skipped in [self._skipped_blocks(schedule, g.name)]
                     for b in range(g.num_blocks)]
        return bits

    def indices_of(self, schedule: Schedule) -> list[int]:
        """Grid indices of the schedule's explicit values (the N default ones when it has none)."""
        explicit = schedule.sampling.explicit
        if explicit is None:
            if schedule.num_steps != self.num_steps:
                raise ValueError(f"a {schedule.num_steps}-step schedule without explicit timesteps is not on "
                                 "the study's fine grid")
            return self.default_indices()
        kind, values = explicit
        if kind != self.grid_kind:
            raise ValueError(f"schedule lists {kind}, the study's grid is {self.grid_kind}")
        where = {t: i for i, t in enumerate(self.grid)}
        try:
            return [where[float(t)] for t in values]
        except KeyError as exc:
            raise ValueError(f"{kind[:-1]} {exc.args[0]} is not on the study's fine grid") from None

    @staticmethod
    def _skipped_blocks(schedule: Schedule, group: str) -> set[int]:
        comps = schedule.plan[group]
        first = next(iter(comps.values()))
        return {b for b in range(len(first[0]))
                if len(first) > 1 and all(rows[s][b] == SKIP for rows in comps.values() for s in range(1, len(rows)))}

    def check(self, schedule: Schedule) -> None:
        """Raise ValueError if `schedule` is not a point of this space."""
        if schedule.model.block_groups != self.model.block_groups:
            raise ValueError("schedule is for other block groups than the study's model")
        if self.timestep_length:
            if not self.min_steps <= schedule.num_steps <= self.max_steps:
                raise ValueError(f"schedule has {schedule.num_steps} steps, the study searches "
                                 f"{self.min_steps}..{self.max_steps}")
            idx = self.indices_of(schedule)
            if idx[0] != 0 or sorted(set(idx)) != idx:
                raise ValueError("timesteps must start at the grid's first point and strictly descend")
        else:
            if schedule.num_steps != self.num_steps:
                raise ValueError(f"schedule has {schedule.num_steps} steps, the study {self.num_steps}")
            if schedule.sampling.explicit != self.sampling.explicit:
                raise ValueError("schedule changes timesteps but the space has no 'timesteps' kind")
        allowed = set(self.modes) if "cache" in self.kinds else {COMPUTE}
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
            if ("timesteps" in self.kinds and schedule.sampling.explicit is None
                    and schedule.num_steps == self.num_steps):
                schedule = Schedule(schedule.model, self.base_sampling(), schedule.plan,
                                    schedule.metrics, schedule.provenance)
            genome = self.encode(schedule)
        except ValueError:
            return None
        return self.decode(genome, metrics=schedule.metrics, provenance=schedule.provenance)

    # ------------------------------------------------------------------ constraints
    def changes(self, schedule: Schedule) -> int:
        """How many places differ from the baseline: non-compute slots plus timesteps moved, added or dropped."""
        n = sum(len(row) - row.count(COMPUTE) for g, c in schedule.components() for row in schedule.rows(g, c))
        if self.timestep_length:
            n += len(set(self.indices_of(schedule)) ^ set(self.default_indices()))
        return n

    def admissible(self, schedule: Schedule) -> bool:
        return self.changes(schedule) >= self.min_changes

    def repair(self, genome: Genome, rng: random.Random) -> Genome:
        """Make a genome valid in place: min_steps-1..max_steps-1 timestep bits, at least one kept block
        per group."""
        if self.timestep_length:
            lo, hi = self.cache_length, self.cache_length + self.timestep_length
            on = [i for i in range(lo, hi) if genome[i]]
            off = [i for i in range(lo, hi) if not genome[i]]
            while len(on) > self.max_steps - 1:
                genome[on.pop(rng.randrange(len(on)))] = 0
            while len(on) < self.min_steps - 1:
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
        fair coin flips would pile up around a 2x MAC speedup); a step count drawn uniformly, then
        that many grid points."""
        p = rng.random() if density is None else density
        others = [v for v in range(len(self.gene_modes)) if v != 1]
        genome = [1 if rng.random() < p else rng.choice(others) for _ in range(self.cache_length)]
        if self.timestep_length:
            k = rng.randint(self.min_steps, self.max_steps)
            chosen = set(rng.sample(range(self.timestep_length), k - 1))
            genome += [1 if i in chosen else 0 for i in range(self.timestep_length)]
        genome += [1 if rng.random() < max(p, 0.5) else 0 for _ in range(self.arch_length)]
        return self.repair(genome, rng)

    def schedules(self, genomes: Iterable[Sequence[int]]) -> list[Schedule]:
        return [self.decode(g) for g in genomes]


def with_history(rows: list[list[str]], num_blocks: int, fallback: str) -> list[str]:
    """Rows 1.. as strings, a cell whose mode needs more earlier computes than its block has had
    replaced by `fallback` (or compute, if even that lacks history): every genome decodes to a valid
    plan."""
    computed = [1] * num_blocks                          # step 0 computes every block
    out = []
    for row in rows:
        cells = []
        for b, ch in enumerate(row):
            for choice in (ch, fallback, COMPUTE):
                if computed[b] >= MODE_TABLE[choice].computes_before:
                    break
            cells.append(choice)
            computed[b] += MODE_TABLE[choice].calls_module
        out.append("".join(cells))
    return out
