"""Objectives of a study, and its front and hypervolume, through moocore (no hand-written sorting).

Searchers reason in one convention: a vector to *minimise* (maximised objectives are negated). The
reference point is fixed per study in the config, so hypervolumes are comparable across searchers and
studies of the same model and prompt set; points not strictly better than it in every objective add
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import moocore
import numpy as np

from schedules import EvaluationResult


@dataclass(frozen=True)
class Objective:
    name: str                     # a metric name or mac_speedup / latency_speedup (EvaluationResult.objective)
    maximize: bool = True
    reference: float = 0.0        # the hypervolume reference value (the worst value that still counts)

    def minimised(self, value: float) -> float:
        return -value if self.maximize else value

    def to_dict(self) -> dict:
        return {"name": self.name, "maximize": self.maximize, "reference": self.reference}


DEFAULT_OBJECTIVES = (Objective("psnr", True, 10.0), Objective("mac_speedup", True, 1.0))


class Objectives(tuple):
    """An ordered tuple of Objective with the conversions every searcher needs."""

    def __new__(cls, items: Iterable[Objective] = DEFAULT_OBJECTIVES) -> "Objectives":
        items = tuple(items)
        if len(items) < 2:
            raise ValueError("a study needs at least two objectives (quality and speed)")
        return super().__new__(cls, items)

    @property
    def names(self) -> list[str]:
        return [o.name for o in self]

    def values(self, result: EvaluationResult) -> tuple[float, ...] | None:
        """Objective values in natural units, or None when the result failed or lacks one."""
        if not result.ok:
            return None
        vals = [result.objective(o.name) for o in self]
        if any(v is None for v in vals):
            return None
        return tuple(float(v) for v in vals)  # type: ignore[arg-type]

    def minimised(self, values: Sequence[float]) -> np.ndarray:
        return np.array([o.minimised(v) for o, v in zip(self, values)], dtype=float)

    @property
    def reference_min(self) -> np.ndarray:
        return np.array([o.minimised(o.reference) for o in self], dtype=float)

    def matrix(self, points: Sequence[Sequence[float]]) -> np.ndarray:
        if len(points) == 0:
            return np.zeros((0, len(self)))
        return np.array([self.minimised(p) for p in points], dtype=float)

    def front_mask(self, points: Sequence[Sequence[float]]) -> np.ndarray:
        """Boolean mask of the non-dominated points (duplicates are all kept)."""
        m = self.matrix(points)
        if len(m) == 0:
            return np.zeros(0, dtype=bool)
        return np.asarray(moocore.is_nondominated(m, keep_weakly=True), dtype=bool)

    def hypervolume(self, points: Sequence[Sequence[float]]) -> float:
        m = self.matrix(points)
        ref = self.reference_min
        if len(m):
            m = m[np.all(m < ref, axis=1)]
        if len(m) == 0:
            return 0.0
        return float(moocore.hypervolume(m, ref=ref))

    def to_list(self) -> list[dict]:
        return [o.to_dict() for o in self]

    @classmethod
    def from_list(cls, docs: Iterable[dict]) -> "Objectives":
        return cls(Objective(d["name"], bool(d.get("maximize", True)), float(d.get("reference", 0.0)))
                   for d in docs)


def pick_on_front(objectives: Objectives, points: Sequence[Sequence[float]], rule: str = "knee") -> int:
    """Index of one front member: "knee" (closest to the utopia point after normalising each objective
    over the front), "fastest" (best last objective), "median" (middle of the front by the last one)."""
    if not len(points):
        raise ValueError("no points")
    mask = objectives.front_mask(points)
    idx = [i for i in range(len(points)) if mask[i]]
    m = objectives.matrix([points[i] for i in idx])
    if rule == "fastest":
        return idx[int(np.argmin(m[:, -1]))]
    if rule == "median":
        order = np.argsort(m[:, -1])
        return idx[int(order[len(order) // 2])]
    lo, hi = m.min(axis=0), m.max(axis=0)
    norm = (m - lo) / np.where(hi > lo, hi - lo, 1.0)
    return idx[int(np.argmin(np.linalg.norm(norm, axis=1)))]


def hypervolume_curve(objectives: Objectives, points: Sequence[Sequence[float] | None]) -> list[float]:
    """Hypervolume after each evaluation in order (None = failed, adds nothing)."""
    out, seen = [], []
    for p in points:
        if p is not None:
            seen.append(p)
        out.append(objectives.hypervolume(seen) if seen else 0.0)
    return out
