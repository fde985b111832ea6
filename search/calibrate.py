"""Calibrating the DP's error model on real evaluations.

The profile says how far a component's output drifts between steps, not how much that drift costs
the final image: on real models, reusing early (noisy) steps or attention hurts far more per unit of
drift than reusing late steps or the feed-forward. So the DP weighs the drift of component c at
reuse step s by W[c, phase(s)], fitted to every schedule evaluated so far (the heuristics first,
then the DP's own verified candidates) by non-negative least squares:

    loss_i^p  ~  b + sum_{c, phase} W[c, phase] * F_i[c, phase]

where F_i sums the profiled drift of schedule i's served slots (compute at a, reuse at s costs
D[a, s]^p; a forecast from computes p < a costs the profiled forecast error F_m[p, a, s]^p) by
component and step phase, and loss_i is the quality turned into an additive error
(PSNR -> RMSE, SSIM -> 1 - SSIM, MSE -> its root, other metrics -> distance to the best seen). A
ridge pulls W toward one shared value, so with few evaluations the model degrades to the plain
profile instead of overfitting, and every weight keeps a floor (a fraction of the shared value): a
zero weight would let the DP reuse that component in that phase "for free" wherever the data say
nothing about it, which is exactly where it would go.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from scipy.optimize import nnls

from schedules import COMPUTE, REUSE, SKIP, Schedule
from schedules.modes import forecast_modes

from schedules.objectives import Objective

from .base import Profile

Key = tuple[str, str]


def quality_loss(objective: Objective, values: Sequence[float]) -> np.ndarray:
    """An additive-error view of quality values (larger = worse)."""
    q = np.asarray(values, dtype=float)
    name = objective.name.lower()
    if "psnr" in name:
        return 10.0 ** (-q / 20.0)
    if name == "ssim" or name.endswith("ssim"):
        return np.clip(1.0 - q, 0.0, None)
    if name.endswith("mse"):
        return np.sqrt(np.clip(q, 0.0, None))
    return (q.max() - q) if objective.maximize else (q - q.min())


def phase_of(num_steps: int, phases: int) -> np.ndarray:
    """Phase index of every step (equal-length phases over steps 0..N-1)."""
    return np.minimum((np.arange(num_steps) * phases) // max(1, num_steps), phases - 1)


def features(schedule: Schedule, profile: Mapping[Key, np.ndarray], phases: int, power: float = 1.0) -> np.ndarray:
    """F[c, phase]: profiled error (to the `power`) of the schedule's served slots, summed per
    component and phase. Every mode is accounted for explicitly; one this model has no error for is
    an error, not a free cell."""
    keys = list(schedule.components())
    n = schedule.num_steps
    phase = phase_of(n, phases)
    forecasts = forecast_modes()
    measured = getattr(profile, "forecast", None) or {}
    out = np.zeros((len(keys), phases))
    for ci, (g, c) in enumerate(keys):
        d = np.asarray(profile[(g, c)], dtype=float)
        rows = schedule.rows(g, c)
        for b in range(len(rows[0])):
            computes = []
            for s in range(n):
                ch = rows[s][b]
                if ch == COMPUTE:
                    computes.append(s)
                elif ch == REUSE:
                    out[ci, phase[s]] += d[b, computes[-1], s] ** power
                elif ch in forecasts:
                    if (g, c, ch) not in measured:
                        raise ValueError(f"the profile has no forecast errors for mode {ch!r} ({g}.{c})")
                    err = float(measured[(g, c, ch)][b, computes[-2], computes[-1], s])
                    out[ci, phase[s]] += (err if np.isfinite(err) else d[b, computes[-1], s]) ** power
                elif ch != SKIP:
                    raise ValueError(f"the error model has no term for mode {ch!r} ({g}.{c})")
    return out


def fit_weights(schedules: Sequence[Schedule], values: Sequence[float], objective: Objective,
                profile: Mapping[Key, np.ndarray], phases: int = 4, ridge: float = 0.05,
                floor: float = 0.3, power: float = 1.0) -> np.ndarray | None:
    """W[c, phase] >= 0 normalised to mean 1, or None when there is nothing to fit."""
    if len(schedules) < 3:
        return None
    x = np.stack([features(s, profile, phases, power).ravel() for s in schedules])
    y = quality_loss(objective, values) ** power
    if not np.isfinite(y).all() or np.ptp(y) <= 0 or not x.any():
        return None
    total = x.sum(axis=1)
    # one shared weight first (with intercept), as the ridge's target and the scale of the problem
    a = np.stack([total, np.ones_like(total)], axis=1)
    shared = max(float(np.linalg.lstsq(a, y, rcond=None)[0][0]), 1e-12)
    k = x.shape[1]
    scale = np.sqrt(ridge * len(y)) * np.mean(np.abs(total)) / k     # ~ one column's worth of data
    # W = floor + V with V >= 0: no weight may reach zero, or the DP would reuse that component in
    # that phase "for free" wherever the data happen to be silent about it.
    lo = floor * shared
    # columns: V (k, >= 0), intercept as +b and -b (free sign); ridge rows pull W toward `shared`
    design = np.concatenate([x, np.ones((len(y), 1)), -np.ones((len(y), 1))], axis=1)
    reg = np.concatenate([scale * np.eye(k), np.zeros((k, 2))], axis=1)
    target = np.concatenate([y - lo * total, scale * (shared - lo) * np.ones(k)])
    w, _ = nnls(np.concatenate([design, reg]), target, maxiter=50 * k)
    weights = w[:k] + lo
    if weights.sum() <= 0:
        return None
    return (weights / weights.mean()).reshape(-1, phases)


def weighted_profile(profile: Mapping[Key, np.ndarray], keys: Sequence[Key], weights: np.ndarray | None,
                     num_steps: int) -> Profile:
    """The profile with the error of served step s of component c (reuse drift and forecast errors)
    scaled by W[c, phase(s)]."""
    out = {k: np.asarray(v, dtype=float) for k, v in profile.items()}
    fore = {k: np.asarray(v, dtype=float) for k, v in (getattr(profile, "forecast", None) or {}).items()}
    if weights is not None:
        phase = phase_of(num_steps, weights.shape[1])
        for ci, key in enumerate(keys):
            scale = weights[ci][phase]
            out[key] = out[key] * scale[None, None, :]
            for fk in [k for k in fore if k[:2] == key]:
                fore[fk] = fore[fk] * scale[None, None, None, :]
    return Profile(out, fore)
