"""Multi-fidelity racing: stop scoring a candidate once it is clearly dominated.

A candidate's cost is known before any image (MACs from the cost model), so it is dominated as soon
as its quality is worse than that of a front member at least as fast. The driver names that member
(the best-quality one among those at least as fast) and hands its per-(prompt, seed) values over as
the `Race` opponent; the evaluator scores the candidate batch by batch and, after each batch but the
last, compares the two on the pairs scored so far:

    d_i = q_i - o_i  (sign flipped for a minimised metric),    n of N pairs scored,
    upper = mean(d) + z * (N - n) / N * sd(d) / sqrt(n)

The full-set mean difference is mean(d) on the scored pairs plus an unknown mean over the N - n
others, estimated by the same mean with standard error sd / sqrt(n) (a paired comparison: prompts
that are hard for one schedule are hard for the other, so the difference varies far less than
either quality). When `upper < 0` the candidate's full-set quality is below the opponent's by more
than z standard errors of what is left to see: it is stopped, stored as a partial result (`RACED`),
and never enters a front or a hypervolume.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Race:
    metric: str                       # a per-sample quality metric (psnr, ssim, latent_mse, ...)
    maximize: bool
    opponent: tuple[float, ...]       # the front member's value per (prompt, seed) pair, study order
    z: float = 2.0
    min_pairs: int = 2
    opponent_id: str | None = None    # its schedule hash (recorded with the partial result)

    def upper_bound(self, values: Sequence[float]) -> float:
        """The one-sided upper bound on the full-set mean difference (candidate - opponent)."""
        n, total = len(values), len(self.opponent)
        sign = 1.0 if self.maximize else -1.0
        d = [sign * (v - o) for v, o in zip(values, self.opponent)]
        if n < 2:
            return math.inf
        spread = statistics.stdev(d)
        return statistics.fmean(d) + self.z * (total - n) / total * spread / math.sqrt(n)

    def lost(self, values: Sequence[float]) -> bool:
        """Whether the candidate, scored on the first `len(values)` pairs, is dominated for sure."""
        return self.min_pairs <= len(values) < len(self.opponent) and self.upper_bound(values) < 0
