"""Wall-clock timing of pipeline calls: CUDA events on GPU (no host-side guesswork about queued
kernels), `time.perf_counter` on CPU."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch


Clock = Callable[[], float]


class Timer:
    """`with timer: work()` then `timer.seconds`. `clock` (CPU only) is injectable, so the logic that
    uses timings can be tested deterministically; benchmarks keep the real `perf_counter`."""

    def __init__(self, device: torch.device, clock: Clock = time.perf_counter) -> None:
        self.cuda = device.type == "cuda" and torch.cuda.is_available()
        self.clock = clock
        self.seconds = 0.0

    def __enter__(self) -> "Timer":
        if self.cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._t0 = self.clock()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.cuda:
            self._end.record()
            self._end.synchronize()
            self.seconds = self._start.elapsed_time(self._end) / 1000.0
        else:
            self.seconds = self.clock() - self._t0


def median(values: list[float]) -> float:
    return float(statistics.median(values))
