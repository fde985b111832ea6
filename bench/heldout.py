"""Scoring configurations side by side on the embedded model's held-out prompts (for the benchmarks).

A `Config` is something to attach to the pipeline (one of our schedules, or a peer through
`evaluators.baselines`). `HeldOut.score` measures quality (PSNR vs the all-compute images, judge
adherence) and MACs (FlopCounterMode on that very run); `HeldOut.time` measures wall speedups in
interleaved rounds at several batch sizes, every configuration once per round, so load changes hit
all alike. One torch thread (the caller sets it).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from evaluators.baselines import apply_baseline
from evaluators.embedded import load_embedded_pipeline, load_judge, prompt_set
from schedules import Schedule, apply_schedule, counting_mode, describe


@dataclass
class Config:
    name: str
    kind: str                                   # ours | peer
    attach: Callable[[], Any]                   # returns something with .remove() (and maybe .reset())
    schedule: Schedule | None = None
    macs: float = 0.0
    psnr: float = 0.0
    adherence: float = 0.0
    times: dict[int, list[float]] = field(default_factory=dict)


class HeldOut:
    def __init__(self, prompts: int = 16, steps: int = 20, calibration_prompts: int = 4) -> None:
        self.pipe, self.judge = load_embedded_pipeline(), load_judge()
        self.spec = describe(self.pipe)
        self.steps = steps
        self.prompts = prompt_set("heldout")[:prompts]
        self.calibration = prompt_set("calibration")[:calibration_prompts]
        self.generate(self.prompts)          # warm-up: prompt encodings cached, so no count includes
        self.generate(self.calibration)      # the text encoder
        with counting_mode() as counter:
            self.reference = self.generate(self.prompts)
        self.full_macs = counter.get_total_flops()
        self.plain: dict[int, list[float]] = {}

    def generate(self, prompts: Sequence[str]) -> torch.Tensor:
        gens = [torch.Generator().manual_seed(0) for _ in prompts]
        return self.pipe(list(prompts), num_inference_steps=self.steps, generator=gens, output_type="pt").images

    def ours(self, name: str, schedule: Schedule) -> Config:
        return Config(name, "ours", lambda: apply_schedule(self.pipe, schedule), schedule)

    def peer(self, method: str, settings: dict[str, Any]) -> Config:
        label = f"{method}({', '.join(f'{k}={v}' for k, v in settings.items())})"
        return Config(label, "peer", lambda: apply_baseline(self.pipe, method, calibrate=lambda: self.generate(
            self.calibration), **settings))

    def score(self, c: Config) -> Config:
        handle = self._attach(c)
        if c.kind == "peer" and "mag_ratios" in getattr(handle, "settings", {}):   # calibrated once
            settings = dict(handle.settings)
            method = handle.name
            c.attach = lambda: apply_baseline(self.pipe, method, **settings)
        with counting_mode() as counter:
            images = self.generate(self.prompts)
        handle.remove()
        c.macs = self.full_macs / counter.get_total_flops()
        mse = ((images - self.reference) ** 2).flatten(1).mean(1)
        c.psnr = float((10 * torch.log10(1 / mse.clamp_min(1e-10))).clamp(max=100).mean())
        c.adherence = float(self.judge.adherence(images, self.prompts).mean())
        return c

    def time(self, configs: Sequence[Config], rounds: int, batches: Sequence[int] = (1, 8)) -> None:
        """Interleaved rounds: per round and batch size the all-compute run, then every configuration."""
        for b in batches:
            self.plain.setdefault(b, [])
            for c in configs:
                c.times.setdefault(b, [])
        for _ in range(rounds):
            for b in batches:
                prompts = self.prompts[:b]
                t0 = time.perf_counter()
                self.generate(prompts)
                self.plain[b].append(time.perf_counter() - t0)
                for c in configs:
                    handle = self._attach(c)
                    t0 = time.perf_counter()
                    self.generate(prompts)
                    c.times[b].append(time.perf_counter() - t0)
                    handle.remove()

    def wall(self, c: Config, batch: int) -> float:
        return statistics.median(self.plain[batch]) / statistics.median(c.times[batch])

    @staticmethod
    def _attach(c: Config) -> Any:
        handle = c.attach()
        if hasattr(handle, "reset"):
            handle.reset()
        return handle
