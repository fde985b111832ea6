"""Pareto fronts, hypervolume and knee points over objective vectors, via moocore.

Pure functions on arrays (no database): `points` is (n, d), `maximise` one flag per column. Dominance
and hypervolume come from moocore (C implementations), never from a hand-written pairwise loop.
"""

from __future__ import annotations

from typing import Sequence

import moocore
import numpy as np


def _as_min(points: np.ndarray, maximise: Sequence[bool]) -> np.ndarray:
    """Flip maximised columns so everything is minimised (moocore's native sense)."""
    sign = np.where(np.asarray(maximise, dtype=bool), -1.0, 1.0)
    return np.asarray(points, dtype=float) * sign


def nondominated(points: np.ndarray, maximise: Sequence[bool]) -> np.ndarray:
    """Boolean mask of the non-dominated rows. Duplicates of a front point are all kept (two
    different schedules with equal figures are both worth showing)."""
    pts = np.asarray(points, dtype=float)
    if len(pts) == 0:
        return np.zeros(0, dtype=bool)
    return np.asarray(moocore.is_nondominated(pts, maximise=list(maximise), keep_weakly=True), dtype=bool)


def hypervolume(points: np.ndarray, reference: Sequence[float], maximise: Sequence[bool]) -> float:
    """Volume dominated by `points` and bounded by `reference`; points that do not strictly beat the
    reference in every objective add nothing."""
    pts = _as_min(points, maximise)
    ref = _as_min(np.asarray(reference, dtype=float)[None, :], maximise)[0]
    if len(pts) == 0:
        return 0.0
    inside = np.all(pts < ref, axis=1)
    if not inside.any():
        return 0.0
    return float(moocore.hypervolume(pts[inside], ref=ref))


def hypervolume_history(points: Sequence[Sequence[float] | None], reference: Sequence[float],
                        maximise: Sequence[bool]) -> list[float]:
    """Hypervolume after each prefix of `points` (None = an evaluation with no usable value, e.g. a
    failure: it counts, and changes nothing).

    Incremental: keeps the running front and recomputes the volume only when a new point enters it,
    so 10,000 evaluations cost 10,000 small non-dominance checks plus one volume per improvement.
    """
    ref = _as_min(np.asarray(reference, dtype=float)[None, :], maximise)[0]
    d = len(ref)
    front = np.empty((0, d))
    current = 0.0
    out: list[float] = []
    for p in points:
        if p is not None:
            q = _as_min(np.asarray(p, dtype=float)[None, :], maximise)
            if np.all(q[0] < ref):
                stacked = np.vstack([front, q])
                keep = np.asarray(moocore.is_nondominated(stacked, keep_weakly=False), dtype=bool)
                if keep[-1]:
                    front = stacked[keep]
                    current = float(moocore.hypervolume(front, ref=ref))
        out.append(current)
    return out


def knee_index(points: np.ndarray, maximise: Sequence[bool]) -> int:
    """Index of the knee of a 2-D front: after scaling both objectives to [0, 1] over the front, the
    point farthest from the straight line through the two extreme points (the best trade-off bend).
    When there is no bend (one or two points, or collinear), the point closest to the ideal corner."""
    pts = _as_min(points, maximise)
    if len(pts) == 0:
        raise ValueError("empty front has no knee")
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    z = (pts - lo) / span                        # 0 = best in every column
    order = np.argsort(z[:, 0], kind="stable")
    a, b = z[order[0]], z[order[-1]]
    chord = b - a
    norm = float(np.hypot(*chord)) if len(chord) == 2 else float(np.linalg.norm(chord))
    if norm > 0 and len(pts) > 2:
        # distance of each point from the line a-b (2-D cross product)
        dist = np.abs(chord[0] * (z[:, 1] - a[1]) - chord[1] * (z[:, 0] - a[0])) / norm
        if dist.max() > 1e-12:
            return int(np.argmax(dist))
    return int(np.argmin(np.linalg.norm(z, axis=1)))
