"""Hand-made schedules from the literature: baselines every study evaluates on its own axes, and seeds
for ECAD's initial population and Bayes' warm start.

All are static (decided before sampling), so they are plain schedules:
- FORA: recompute everything every n steps, reuse in between.
- TGATE: cross-attention computed up to step k, then its cached output is reused to the end.
- Delta-DiT: early on, the rear blocks are cached (the outline forms in the front blocks); late, the
  front blocks are cached (details come from the rear); cached blocks refresh every n steps.
- ToCa-like static intervals: per component refresh intervals (cross-attention longest) that grow
  with depth.
- Evenly spaced per-component caching (ECAD's seeds): one component (or all) computed every n steps.
- TaylorSeer-style: compute every n steps after a warm-up, forecast ('F', damped 'D') in between;
  and the same with reuse (FORA with a warm-up).
- cache-dit static step masks: whole steps computed or reused after a warm-up, with the first Fn and
  last Bn blocks always computed (DBCache's structure with a static steps mask).
- Timestep spacings (timestep space): power-warped K-of-M choices at the study's step count; uniform
  K-step spacing (the scheduler's own K-step schedule on the grid, what lowering num_inference_steps
  gives) for K from 0.4 N to N-1, alone, with FORA-2 (cache space), and AutoDiffusion-style with the
  deep blocks skipped (architecture space), with and without FORA-2. Block skipping (architecture
  space): single blocks and deep blocks skipped.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping

from schedules import DAMPED, FORECAST, REUSE, ModelSpec, SamplingSpec, Schedule

from .base import Searcher, SearcherSettings
from .space import SearchSpace

CROSS_ATTENTION = {"pixart": ("attn2",)}
Rule = Callable[[str, str, int, int], bool]       # (group, component, step, block) -> compute?


def build(spec: ModelSpec, sampling: SamplingSpec, rule: Rule, label: str, **params: Any) -> Schedule:
    n = sampling.num_inference_steps
    masks = {(g.name, c): [[s == 0 or rule(g.name, c, s, b) for b in range(g.num_blocks)] for s in range(n)]
             for g in spec.block_groups for c in g.components}
    return Schedule.from_masks(spec, sampling, masks,
                               provenance={"heuristic": label, "heuristic_params": params})


def _intervals(n: int) -> list[int]:
    return [i for i in (2, 3, 4, 5, 6) if i < n]


def fora(spec: ModelSpec, sampling: SamplingSpec) -> Iterator[Schedule]:
    for k in _intervals(sampling.num_inference_steps):
        yield build(spec, sampling, lambda g, c, s, b, k=k: s % k == 0, "fora", interval=k)


def tgate(spec: ModelSpec, sampling: SamplingSpec) -> Iterator[Schedule]:
    cross = CROSS_ATTENTION.get(spec.family, ())
    if not cross:
        return
    n = sampling.num_inference_steps
    for frac in (0.2, 0.35, 0.5, 0.65, 0.8):
        k = max(1, round(frac * n))
        yield build(spec, sampling, lambda g, c, s, b, k=k: c not in cross or s <= k, "tgate", gate_step=k)


def delta_dit(spec: ModelSpec, sampling: SamplingSpec) -> Iterator[Schedule]:
    n = sampling.num_inference_steps
    for frac in (1 / 3, 1 / 2):
        for k in (2, 3):
            def rule(g: str, c: str, s: int, b: int, frac=frac, k=k) -> bool:
                nb = spec.group(g).num_blocks
                m = max(1, round(frac * nb))
                cached = b >= nb - m if s < n // 2 else b < m
                return not cached or s % k == 0
            yield build(spec, sampling, rule, "delta-dit", cached_fraction=round(frac, 3), interval=k)


def toca(spec: ModelSpec, sampling: SamplingSpec) -> Iterator[Schedule]:
    cross = CROSS_ATTENTION.get(spec.family, ())
    for base in (2, 3):
        def rule(g: str, c: str, s: int, b: int, base=base) -> bool:
            nb = spec.group(g).num_blocks
            k = base * (2 if c in cross else 1) + (1 if b >= nb // 2 else 0)
            return s % k == 0
        yield build(spec, sampling, rule, "toca-static", base_interval=base)


def even_component(spec: ModelSpec, sampling: SamplingSpec) -> Iterator[Schedule]:
    comps = sorted({c for g in spec.block_groups for c in g.components})
    for k in (2, 3, 4):
        for comp in comps:
            yield build(spec, sampling, lambda g, c, s, b, k=k, comp=comp: c != comp or s % k == 0,
                        "even-component", component=comp, interval=k)


def cache_dit_mask(spec: ModelSpec, sampling: SamplingSpec) -> Iterator[Schedule]:
    n = sampling.num_inference_steps
    warmup = max(1, n // 5)
    for fn, bn in ((1, 0), (2, 1)):
        for k in (2, 3, 4):
            def rule(g: str, c: str, s: int, b: int, fn=fn, bn=bn, k=k) -> bool:
                nb = spec.group(g).num_blocks
                return s < warmup or (s - warmup) % k == 0 or b < fn or b >= nb - bn
            yield build(spec, sampling, rule, "cache-dit-mask", Fn=fn, Bn=bn, warmup=warmup, interval=k)


def taylorseer_style(spec: ModelSpec, sampling: SamplingSpec) -> Iterator[Schedule]:
    """TaylorSeer-style: compute everything for `warmup` steps and every n-th step, forecast every
    component in between (first order 'F', and damped 'D'); the same with reuse for comparison.
    Spaces that do not allow a mode drop its schedules (`space_heuristics` projects)."""
    n = sampling.num_inference_steps
    for mode, label in ((FORECAST, "taylorseer"), (DAMPED, "taylorseer-damped"), (REUSE, "fora-warmup")):
        for warmup in (2, 4):
            for k in _intervals(n):
                if warmup < n:
                    yield Schedule.periodic(spec, sampling, k, mode=mode, warmup=warmup,
                                            provenance={"heuristic": label,
                                                        "heuristic_params": {"interval": k, "warmup": warmup}})


CACHE_GENERATORS = (fora, tgate, delta_dit, toca, even_component, cache_dit_mask, taylorseer_style)


def warped_indices(m: int, k: int, power: float) -> list[int]:
    """K distinct increasing indices into an M grid, index 0 first, spaced by (i/K)^power."""
    out: list[int] = []
    for i in range(k):
        j = int(round((i / k) ** power * m))
        j = max(j, out[-1] + 1 if out else 0)
        out.append(j)
    over = out[-1] - (m - 1)
    if over > 0:   # push back from the end so all fit
        for i in range(k - 1, 0, -1):
            out[i] = min(out[i], m - 1 - (k - 1 - i))
    return out


def space_heuristics(space: SearchSpace) -> list[Schedule]:
    """Every heuristic expressible in `space`, projected into it, admissible, without duplicates."""
    out: list[Schedule] = []
    base = space.base_sampling()
    if "cache" in space.kinds:
        for gen in CACHE_GENERATORS:
            out.extend(gen(space.model, base))
    if "timesteps" in space.kinds:
        m, k = len(space.grid), space.num_steps
        for power in (0.75, 1.25, 1.5, 2.0):
            idx = warped_indices(m, k, power)
            sampling = space.base_sampling(idx)
            out.append(Schedule.all_compute(space.model, sampling,
                                            provenance={"heuristic": "timestep-spacing",
                                                        "heuristic_params": {"power": power}}))
        out.extend(uniform_steps(space))
    if "architecture" in space.kinds:
        out.extend(_skips(space))
    seen: set[str] = set()
    unique = []
    for s in out:
        p = space.project(s)
        if p is not None and p.hash not in seen and space.admissible(p):
            seen.add(p.hash)
            unique.append(p)
    return unique


def uniform_step_counts(space: SearchSpace) -> list[int]:
    """K = 0.4 N .. N-1 within the space's step range: the uniform K-step baselines."""
    n = space.num_steps
    return [k for k in range(max(space.min_steps, -(-2 * n // 5)), min(space.max_steps, n - 1) + 1)]


def uniform_steps(space: SearchSpace) -> Iterator[Schedule]:
    """Uniform K-step spacing, alone and (per the space's kinds) with FORA-2, with the deep blocks
    skipped (AutoDiffusion-style), or both."""
    for k in uniform_step_counts(space):
        sampling = space.base_sampling(space.default_indices(k))
        base = Schedule.all_compute(space.model, sampling, provenance={"heuristic": "uniform-k",
                                                                       "heuristic_params": {"steps": k}})
        variants = [base]
        if "cache" in space.kinds:
            variants.append(build(space.model, sampling, lambda g, c, s, b: s % 2 == 0, "uniform-k+fora",
                                  steps=k, interval=2))
        if "architecture" in space.kinds:
            variants += [_skip(v, {g.name: _deep_blocks(g.num_blocks, 0.2) for g in space.model.block_groups},
                               v.provenance["heuristic"] + "+skip-deep", **v.provenance["heuristic_params"],
                               fraction=0.2)
                         for v in list(variants)]
        yield from variants


def _deep_blocks(num_blocks: int, fraction: float) -> set[int]:
    """The `fraction` deepest blocks before the last one (at least one, never all)."""
    m = max(1, int(fraction * num_blocks))
    return set(range(num_blocks - m - 1, num_blocks - 1)) if m < num_blocks else set()


def _skips(space: SearchSpace) -> Iterator[Schedule]:
    base = Schedule.all_compute(space.model, space.base_sampling())
    for g in space.model.block_groups:
        for b in range(g.num_blocks):
            yield _skip(base, {g.name: {b}}, "skip-block", group=g.name, block=b)
        for frac in (0.25, 0.5):
            blocks = _deep_blocks(g.num_blocks, frac)
            if blocks:
                yield _skip(base, {g.name: blocks}, "skip-deep", group=g.name, count=len(blocks))


def _skip(base: Schedule, blocks: dict[str, set[int]], label: str, **params: Any) -> Schedule:
    """`base` with `blocks[group]` skipped at every step >= 1."""
    plan = {g: {c: [row if s == 0 else "".join("-" if b in blocks.get(g, ()) else ch for b, ch in enumerate(row))
                    for s, row in enumerate(rows)] for c, rows in comps.items()} for g, comps in base.plan.items()}
    return Schedule(base.model, base.sampling, plan,
                    provenance={"heuristic": label, "heuristic_params": params})


class HeuristicsSettings(SearcherSettings):
    include: list[str] | None = None   # heuristic labels to keep (None = all)


class HeuristicsSearcher(Searcher):
    """Evaluates every heuristic schedule once, then is finished: each study's baselines."""

    name = "heuristics"
    Settings = HeuristicsSettings

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        items = space_heuristics(self.space)
        if self.settings.include is not None:
            items = [s for s in items if s.provenance.get("heuristic") in self.settings.include]
        self.items = items
        self.next_index = 0

    def _propose(self, n: int) -> list[Schedule]:
        out: list[Schedule] = []
        while len(out) < n and self.next_index < len(self.items):
            s = self.items[self.next_index]
            self.next_index += 1
            if self.fresh(s, out):
                out.append(self.tag(s))
        if self.next_index >= len(self.items) and not out:
            self.finished = True
        return out

    def _observe(self, results: list) -> None:
        if self.next_index >= len(self.items) and not self._pending:
            self.finished = True

    def _state(self) -> dict[str, Any]:
        return {"next_index": self.next_index}

    def _load_state(self, extra: Mapping[str, Any]) -> None:
        self.next_index = int(extra["next_index"])
