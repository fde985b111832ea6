"""A cheap quality surrogate: screen candidates before any image is generated.

The cost of a candidate is known before it is evaluated (MACs from the cost model); only its quality
needs images. This surrogate predicts the quality objective from the plan alone, fitted on every
result a searcher was told so far:

    loss(q)  ~  b + sum_f w_f * x_f        (ridge regression, w >= 0)

where `loss` is the quality as an additive error (`calibrate.quality_loss`: PSNR -> RMSE, SSIM ->
1 - SSIM, ...) and the features x are the fractions of served (non-computed) cells per component,
step phase and kind of service (reuse, forecast, skip), plus the fraction of the study's steps a
timestep schedule drops. Non-negative weights: serving a cell never makes an image better.

`screen(candidates, front, k)` keeps the k candidates whose predicted (quality, cost) adds the most
hypervolume to the current front (ties broken by predicted quality) — the searchers call it to breed
or sample more candidates than they send to the evaluator. `rank_correlation` reports how well the
predictions (recorded in each candidate's provenance as `predicted_<objective>`) ordered the real
results of a study.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from schedules import COMPUTE, SKIP, Schedule, mode_of

from .calibrate import phase_of, quality_loss
from schedules.objectives import Objective, Objectives

PHASES = 4


def _service(char: str) -> str | None:
    mode = mode_of(char)
    if mode.calls_module:
        return None
    if char == SKIP:
        return "skip"
    return "forecast" if getattr(mode.state, "weight", None) is not None else "reuse"


def features(schedule: Schedule, reference_steps: int, keys: Sequence[tuple[str, str]]) -> np.ndarray:
    """Served-cell fractions per (component, phase, service) and the fraction of steps dropped."""
    services = ("reuse", "forecast", "skip")
    out = np.zeros((len(keys), PHASES, len(services)))
    n = schedule.num_steps
    phase = phase_of(n, PHASES)
    for ki, (g, c) in enumerate(keys):
        rows = schedule.rows(g, c)
        blocks = len(rows[0])
        for s, row in enumerate(rows):
            for ch in row:
                if ch == COMPUTE:
                    continue
                out[ki, phase[s], services.index(_service(ch))] += 1.0 / (blocks * n)
    dropped = max(0.0, 1.0 - n / reference_steps)
    return np.concatenate([out.ravel(), [dropped]])


class QualitySurrogate:
    def __init__(self, objective: Objective, keys: Sequence[tuple[str, str]], reference_steps: int,
                 ridge: float = 1e-3, min_fit: int = 8) -> None:
        self.objective = objective
        self.keys = list(keys)
        self.reference_steps = reference_steps
        self.ridge = ridge
        self.min_fit = min_fit
        self.model = None
        self._worst = self._best = 0.0

    @property
    def ready(self) -> bool:
        return self.model is not None

    def fit(self, schedules: Sequence[Schedule], values: Sequence[float]) -> bool:
        """Fit on measured quality values; False (and not ready) with too few or constant ones."""
        if len(schedules) < self.min_fit or np.ptp(values) <= 0:
            self.model = None
            return False
        from sklearn.linear_model import Ridge

        x = np.stack([features(s, self.reference_steps, self.keys) for s in schedules])
        y = quality_loss(self.objective, values)
        self.model = Ridge(alpha=self.ridge, positive=True).fit(x, y)
        self._best, self._worst = float(np.min(values)), float(np.max(values))
        if self.objective.maximize:
            self._best, self._worst = self._worst, self._best
        return True

    def predict(self, schedules: Sequence[Schedule]) -> np.ndarray:
        """Predicted quality in the objective's own units (inverting `quality_loss`)."""
        if self.model is None:
            raise RuntimeError("the surrogate is not fitted")
        x = np.stack([features(s, self.reference_steps, self.keys) for s in schedules])
        return _inverse_loss(self.objective, np.clip(self.model.predict(x), 1e-12, None), self._best)

    def screen(self, candidates: Sequence[Schedule], costs: Sequence[float], objectives: Objectives,
               front: Sequence[Sequence[float]], k: int) -> list[int]:
        """Indices of the k candidates adding the most predicted (quality, cost) hypervolume to
        `front` (value vectors in `objectives` order, natural units), best first."""
        if len(candidates) <= k:
            return list(range(len(candidates)))
        predicted = self.predict(candidates)
        pair = objectives.pair()
        qi, ci = objectives.index(pair.quality.name), objectives.index(pair.cost.name)
        points = [(v[qi], v[ci]) for v in front]
        base = pair.hypervolume(points) if points else 0.0
        gains = [pair.hypervolume(points + [(q, c)]) - base for q, c in zip(predicted, costs)]
        sign = 1.0 if self.objective.maximize else -1.0
        order = sorted(range(len(candidates)), key=lambda i: (-gains[i], -sign * predicted[i]))
        return order[:k]


def _inverse_loss(objective: Objective, loss: np.ndarray, best: float) -> np.ndarray:
    name = objective.name.lower()
    if "psnr" in name:
        return -20.0 * np.log10(loss)
    if name == "ssim" or name.endswith("ssim"):
        return 1.0 - loss
    if name.endswith("mse"):
        return loss ** 2
    return best - loss if objective.maximize else best + loss


def rank_correlation(predicted: Sequence[float], measured: Sequence[float]) -> float | None:
    """Spearman's rank correlation (None for fewer than 3 pairs or a constant side)."""
    if len(predicted) < 3 or np.ptp(predicted) == 0 or np.ptp(measured) == 0:
        return None
    from scipy.stats import spearmanr

    return float(spearmanr(predicted, measured).statistic)
