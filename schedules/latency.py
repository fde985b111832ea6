"""A latency cost model: what a schedule's sampling run costs in seconds on one device, predicted.

MACs do not predict time: at small batch or on a GPU, kernel launches, memory-bound norms and Python
dominate the work the MAC count sees. This model splits a sampling run into the pieces the runtime
actually executes (`features`):

    run                   once per pipeline call (text encoding, decoding, set-up)
    step                  once per denoising step (the scheduler step, CFG, the denoiser's work
                          outside its blocks: embeddings, output head)
    compute:<g>.<c>       one call of component c in a block of group g
    served:<g>             a non-compute cell served by a component hook inside a block that runs
                          its own forward (hook overhead)
    fast:<g>               a block of group g on its fast path instead of its forward (a negative
                          number: the time the fast path saves over the block's own work)
    forecast:<g>          the extrapolation of a forecast cell
    feeder:<attr>         one run of a feeder module (PixArt's caption projection)

and one number per piece (seconds), fitted by least squares to measured runs of a designed set of
calibration schedules (`calibration_schedules`): all-compute and all-reuse at two step counts, FORA
intervals, each component alone reused / alone computed, forecasts, seeded random mixes. Fitting
in-situ pipeline runs, not timing modules in isolation, keeps cache and launch effects in the
numbers. One table holds for one (device, dtype, batch, resolution, CFG mode); the evaluator measures
it with its own timer (CUDA events on GPU), `predict` is then a dot product, so a search can
optimise predicted latency without the noise of timing every candidate. Measured latency stays the
ground truth stored with every result; `validate` reports the model's error on other schedules.

Pure fitting and prediction: measuring is the caller's (`time_run(schedule) -> seconds`), so this
module needs neither a clock nor a pipeline and tests can inject both.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import torch

from .adapters import feeders_of
from .cost import CostTable, calls_per_step, table_block_groups
from .fastpaths import fast_steps, feeder_steps
from .modes import COMPUTE, FORECAST, MODE_TABLE, REUSE
from .schedule import ModelSpec, SamplingSpec, Schedule


def features(schedule: Schedule, table: CostTable) -> dict[str, float]:
    """Counts of every piece of work one sampling run under `schedule` executes (see the module doc).
    `table` supplies which components each block really has and which blocks have a fast path."""
    schedule = schedule.completed(table_block_groups(table))   # a subset file: the rest computes
    calls = calls_per_step(schedule)
    out: dict[str, float] = {"run": 1.0, "step": float(schedule.num_steps)}

    def add(key: str, n: float) -> None:
        if n:
            out[key] = out.get(key, 0.0) + n

    for group in schedule.model.block_groups:
        g = group.name
        present = table.block_components.get(g, ())
        fast_ok = table.fast_block_macs.get(g, ())
        for b, comps in enumerate(present):
            has_fast = b < len(fast_ok) and fast_ok[b] is not None
            flags = fast_steps(schedule, g, b, comps) if has_fast else (False,) * schedule.num_steps
            for c in comps:
                row = [r[b] for r in schedule.rows(g, c)]
                for s, ch in enumerate(row):
                    mode = MODE_TABLE[ch]
                    if mode.calls_module:
                        add(f"compute:{g}.{c}", calls)
                        continue
                    if not flags[s]:
                        add(f"served:{g}", calls)
                    if ch == FORECAST:
                        add(f"forecast:{g}", calls)
            add(f"fast:{g}", calls * sum(flags))
    for feeder in feeders_of(table.transformer_class):
        if feeder.attribute in table.feeder_macs:
            add(f"feeder:{feeder.attribute}", calls * sum(feeder_steps(schedule, feeder, table.block_components)))
    return out


@dataclass(frozen=True)
class LatencyTable:
    """Seconds per piece of work (see `features`) for one device/dtype/batch/resolution/CFG mode."""

    transformer_class: str
    seconds: Mapping[str, float]
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int | None = None
    height: int | None = None
    width: int | None = None
    cfg: str = "batched"
    fit_error: float | None = None          # median relative error on the calibration runs
    calibration_runs: int = 0
    cost_table: CostTable | None = field(default=None, compare=False)

    def predict(self, schedule: Schedule) -> float:
        """Predicted seconds of one sampling run (one pipeline call) under `schedule`."""
        if schedule.model.transformer_class != self.transformer_class:
            raise ValueError(f"latency table is for {self.transformer_class}, schedule for "
                             f"{schedule.model.transformer_class}")
        feats = features(schedule, self.cost_table)
        return float(sum(self.seconds.get(k, 0.0) * v for k, v in feats.items()))

    def speedup(self, schedule: Schedule, reference: Schedule | None = None) -> float:
        """Predicted seconds of `reference` / predicted seconds of `schedule`. The reference is the
        study's all-compute run (at the study's steps: a K-step schedule is faster than it by fewer
        steps too); default: all compute at the schedule's own sampling."""
        if reference is None:
            reference = Schedule.all_compute(schedule.model, schedule.sampling)
        return self.predict(reference) / max(self.predict(schedule), 1e-12)

    def to_dict(self) -> dict[str, Any]:
        return {"transformer_class": self.transformer_class, "seconds": dict(self.seconds),
                "device": self.device, "dtype": self.dtype, "batch_size": self.batch_size,
                "height": self.height, "width": self.width, "cfg": self.cfg, "fit_error": self.fit_error,
                "calibration_runs": self.calibration_runs}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], cost_table: CostTable) -> "LatencyTable":
        return cls(doc["transformer_class"], {k: float(v) for k, v in doc["seconds"].items()},
                   doc.get("device", "cpu"), doc.get("dtype", "float32"), doc.get("batch_size"),
                   doc.get("height"), doc.get("width"), doc.get("cfg", "batched"), doc.get("fit_error"),
                   int(doc.get("calibration_runs", 0)), cost_table)


# ------------------------------------------------------------------------------ calibration design
def random_schedule(spec: ModelSpec, sampling: SamplingSpec, rng: random.Random, p_compute: float,
            alphabet: str) -> Schedule:
    masks = {}
    for g in spec.block_groups:
        for c in g.components:
            rows = [COMPUTE * g.num_blocks, COMPUTE * g.num_blocks]
            for _ in range(2, sampling.num_inference_steps):
                rows.append("".join(COMPUTE if rng.random() < p_compute else rng.choice(alphabet)
                                    for _ in range(g.num_blocks)))
            masks[(g.name, c)] = rows
    return Schedule.from_masks(spec, sampling, masks)


def calibration_schedules(spec: ModelSpec, sampling: SamplingSpec, forecast: bool = True,
                          random_mixes: int = 10, seed: int = 0) -> list[Schedule]:
    """A designed set of schedules under which every feature varies on its own (see module doc)."""
    n = sampling.num_inference_steps
    short = SamplingSpec(max(3, n // 2), sampling.scheduler, None, sampling.cfg, sampling.guidance_scale,
                         sampling.height, sampling.width)
    out = [Schedule.all_compute(spec, sampling), Schedule.all_compute(spec, short),
           Schedule.periodic(spec, sampling, n), Schedule.periodic(spec, short, short.num_inference_steps),
           Schedule.periodic(spec, sampling, 2), Schedule.periodic(spec, sampling, 3)]
    pairs = [(g.name, c) for g in spec.block_groups for c in g.components]
    for pair in pairs:
        out.append(Schedule.periodic(spec, sampling, 2, only=[pair]))                       # this one reused
        if len(pairs) > 1:
            out.append(Schedule.periodic(spec, sampling, n, only=[p for p in pairs if p != pair]))      # this one alone computes
    if forecast and n >= 4:
        out.append(Schedule.periodic(spec, sampling, 3, mode=FORECAST, warmup=2))
        out.append(Schedule.periodic(spec, sampling, 2, only=[pairs[0]], mode=FORECAST, warmup=2))
    rng = random.Random(seed)
    alphabet = REUSE + (FORECAST if forecast else "")
    for i in range(random_mixes):
        out.append(random_schedule(spec, sampling, rng, p_compute=0.2 + 0.6 * i / max(random_mixes - 1, 1),
                           alphabet=alphabet))
    unique: dict[str, Schedule] = {}
    for s in out:
        unique.setdefault(s.hash, s)
    return list(unique.values())


# ------------------------------------------------------------------------------ fitting
def fit_latency_table(measured: Sequence[tuple[Schedule, float]], cost_table: CostTable,
                      **info: Any) -> LatencyTable:
    """Least-squares seconds per feature from (schedule, seconds per run) pairs, weighted by
    1/seconds so every run counts by its relative error (a 4x schedule's error matters as much as
    the all-compute run's)."""
    if not measured:
        raise ValueError("no measured runs to fit")
    rows = [features(s, cost_table) for s, _ in measured]
    keys = sorted({k for r in rows for k in r})
    a = torch.tensor([[r.get(k, 0.0) for k in keys] for r in rows], dtype=torch.float64)
    y = torch.tensor([t for _, t in measured], dtype=torch.float64)
    w = 1.0 / y.clamp_min(1e-12)
    solution = torch.linalg.lstsq(a * w[:, None], (y * w)[:, None], driver="gelsd").solution[:, 0]
    seconds = {k: float(v) for k, v in zip(keys, solution)}
    table = LatencyTable(cost_table.transformer_class, seconds, cost_table=cost_table,
                         calibration_runs=len(measured), **info)
    errors = [abs(table.predict(s) - t) / t for s, t in measured]
    return replace(table, fit_error=float(statistics.median(errors)))


def measure_latency_table(time_run: Callable[[Schedule], float], spec: ModelSpec, sampling: SamplingSpec,
                          cost_table: CostTable, repeats: int = 3,
                          schedules: Sequence[Schedule] | None = None, **info: Any) -> LatencyTable:
    """Time each calibration schedule `repeats` times, interleaved round-robin so a change of load
    hits all of them alike, and fit the table to the medians. `time_run(schedule)` runs one sampling
    run under the schedule and returns its seconds (the caller's clock: CUDA events on GPU)."""
    todo = list(schedules) if schedules is not None else calibration_schedules(spec, sampling)
    times: dict[str, list[float]] = {s.hash: [] for s in todo}
    for _ in range(repeats):
        for s in todo:
            times[s.hash].append(float(time_run(s)))
    measured = [(s, statistics.median(times[s.hash])) for s in todo]
    return fit_latency_table(measured, cost_table, cfg=sampling.cfg, **info)


def validate(table: LatencyTable, measured: Sequence[tuple[Schedule, float]]) -> dict[str, float]:
    """The model's relative errors |predicted - measured| / measured on runs it was not fitted to."""
    errors = sorted(abs(table.predict(s) - t) / t for s, t in measured)
    return {"n": float(len(errors)), "median_abs_error": float(statistics.median(errors)),
            "max_abs_error": float(errors[-1]), "p90_abs_error": float(errors[int(0.9 * (len(errors) - 1))])}
