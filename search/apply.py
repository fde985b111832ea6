"""`cachesearch apply` and `describe`: a schedule on a live pipeline, measured side by side.

The plain and the scheduled pipeline run the same prompts and seeds, alternately, `repeats` times
each after a warm-up (machines here are noisy: ratios are only meaningful measured together), and
the MAC speedup comes from the FLOP-counted cost table of this very pipeline. A schedule that samples
its own (fewer) explicit timesteps is compared with the plain pipeline at the step count of the study
it was searched in (`provenance.reference_steps`), which is what it was measured against.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from schedules import (
    CostTable, ModelSpec, Schedule, apply_schedule, cache_memory, describe, load_schedule, mac_speedup,
    measure_cost_table,
)


def reference_steps(schedule: Schedule) -> int:
    """The plain pipeline's step count to compare with: the study's, for a schedule that samples others."""
    steps = schedule.provenance.get("reference_steps")
    return int(steps) if isinstance(steps, int) and steps > 0 else schedule.num_steps


def _load(model: str, schedule: Any = None) -> tuple[Any, Any]:
    from evaluators import EvaluationConfig
    from pydantic import ValidationError

    from evaluators.models import ModelLoadError, load_model, locate_model
    from evaluators.runner import PipelineRunner
    kwargs: dict[str, Any] = {"model": model, "n_thumbnails": 0}
    if schedule is not None:
        s = schedule.sampling
        kwargs["num_inference_steps"] = reference_steps(schedule)
        if s.guidance_scale is not None:
            kwargs["guidance_scale"] = s.guidance_scale
        if s.height and s.width and model != "embedded":
            kwargs["height"], kwargs["width"] = s.height, s.width
    try:
        config = EvaluationConfig(**kwargs)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ModelLoadError(f"model {model!r}: {first['msg'].removeprefix('Value error, ')}") from None
    locate_model(config)
    pipe = load_model(config)
    return pipe, PipelineRunner(pipe, config)


def _cost_table(pipe: Any, runner: Any, prompts: Sequence[str], seeds: Sequence[int]) -> CostTable:
    return measure_cost_table(pipe, lambda: runner(list(prompts), list(seeds), 2), batch_size=len(prompts))


def describe_model(model: str) -> tuple[ModelSpec, CostTable | None]:
    pipe, runner = _load(model)
    return describe(pipe), _cost_table(pipe, runner, ["a test prompt"], [0])


def _save(images: Any, folder: Path, tag: str, seeds: Sequence[int]) -> list[Path]:
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        arr = (img.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
        path = folder / f"{tag}_{i:02d}_seed{seeds[i]}.png"
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths


def apply_and_compare(schedule_path: Path, prompts: Sequence[str], model: str, seed: int, out: Path,
                      repeats: int) -> "ApplyReport":
    schedule = load_schedule(schedule_path)
    pipe, runner = _load(model, schedule)
    seeds = [seed + i for i in range(len(prompts))]
    table = _cost_table(pipe, runner, prompts, seeds)
    n, k = reference_steps(schedule), schedule.num_steps
    reference = Schedule.all_compute(schedule.model, replace(schedule.sampling, num_inference_steps=n,
                                                             timesteps=None, sigmas=None))
    plain_t, sched_t = [], []
    plain = runner(list(prompts), seeds)                       # warm-up + the reference images
    with apply_schedule(pipe, schedule):
        scheduled = runner(list(prompts), seeds, k)            # raises a clear mismatch error first
    for _ in range(repeats):
        t0 = time.perf_counter()
        runner(list(prompts), seeds)
        plain_t.append(time.perf_counter() - t0)
        with apply_schedule(pipe, schedule):
            t0 = time.perf_counter()
            runner(list(prompts), seeds, k)
            sched_t.append(time.perf_counter() - t0)
    _save(plain.images, out, "plain", seeds)
    paths = _save(scheduled.images, out, "scheduled", seeds)
    diff = (plain.images - scheduled.images).float()
    t_plain, t_sched = statistics.median(plain_t), statistics.median(sched_t)
    explicit = schedule.sampling.explicit
    return ApplyReport(
        schedule_hash=schedule.hash, steps=k, reference_steps=n, compute_fraction=schedule.compute_fraction(),
        explicit=(explicit[0], list(explicit[1])) if explicit else None,
        mac_speedup=mac_speedup(schedule, table, reference), cache_bytes=cache_memory(schedule, table)["bytes"],
        plain_s_per_image=t_plain / len(prompts),
        scheduled_s_per_image=t_sched / len(prompts), repeats=repeats, image_mse=float((diff ** 2).mean()),
        images=[str(p) for p in paths], out=str(out))


@dataclass(frozen=True)
class ApplyReport:
    """What `cachesearch apply` measured (`--json` prints `to_dict`)."""

    schedule_hash: str
    steps: int
    reference_steps: int
    compute_fraction: float
    explicit: tuple[str, list[float]] | None
    mac_speedup: float
    cache_bytes: int                 # what the schedule's caches hold while it runs (schedules.cost.cache_memory)
    plain_s_per_image: float
    scheduled_s_per_image: float
    repeats: int
    image_mse: float
    images: list[str]
    out: str

    @property
    def latency_speedup(self) -> float:
        return self.plain_s_per_image / self.scheduled_s_per_image

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "latency_speedup": self.latency_speedup}

    def lines(self) -> list[str]:
        sampled = f" at explicit {self.explicit[0]} {_values(self.explicit[1])}" if self.explicit else ""
        return [
            f"schedule {self.schedule_hash[:12]}: {self.steps} steps{sampled}, {self.compute_fraction:.0%} of "
            f"component calls computed; the plain pipeline runs {self.reference_steps} steps",
            f"MAC speedup {self.mac_speedup:.2f}x; latency {self.plain_s_per_image * 1000:.0f} ms -> "
            f"{self.scheduled_s_per_image * 1000:.0f} ms per image = {self.latency_speedup:.2f}x (median of "
            f"{self.repeats}, measured side by side)",
            f"cache memory while it runs: {self.cache_bytes / 2**20:.1f} MiB at this batch and resolution",
            f"image MSE vs the plain pipeline (same seeds): {self.image_mse:.3g}",
            f"wrote {len(self.images)} scheduled and {len(self.images)} plain images to {self.out}/",
        ]


def _values(values: Sequence[float]) -> str:
    shown = ", ".join(f"{v:g}" for v in values[:6])
    return f"[{shown}{', ...' if len(values) > 6 else ''}]"
