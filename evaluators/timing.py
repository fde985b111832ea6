"""Wall-clock timing of pipeline calls: CUDA events on GPU (no host-side guesswork about queued
kernels), `time.perf_counter` on CPU."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch


class Timer:
    """`with timer: work()` then `timer.seconds`."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda" and torch.cuda.is_available()
        self.seconds = 0.0

    def __enter__(self) -> "Timer":
        if self.cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.cuda:
            self._end.record()
            self._end.synchronize()
            self.seconds = self._start.elapsed_time(self._end) / 1000.0
        else:
            self.seconds = time.perf_counter() - self._t0


def timed(device: torch.device, fn: Callable[[], Any]) -> tuple[Any, float]:
    with Timer(device) as t:
        out = fn()
    return out, t.seconds


def median(values: list[float]) -> float:
    return float(statistics.median(values))
