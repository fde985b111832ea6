"""Objectives: what a study optimises, read the same way by searchers, store, export and dashboard.

The one home (DESIGN.md, "Objectives") of:

- `COST_NAMES`, the cost figures: speedups every result carries as fields of its own (larger is
  better, 1.0 = as fast as all-compute). Anything else an objective names is a quality metric.
- The value rule (`objective_value`): a figure or metric by name, or None when it is absent, not a
  number or not finite. A missing value is None, never a default, so a result lacking a figure is
  left out of a front instead of being placed at some made-up value.
- `Objective(name, maximize, role, reference)` with an explicit, validated role (`quality` or
  `cost`): a cost figure listed as quality, or a metric listed as a cost, is an error naming both.
- `Objectives`, a study's ordered objectives: its primary quality and cost are the first objective of
  each role, never a position in the list.
- Pareto fronts and hypervolume on arrays, through moocore (C implementations, never a hand-written
  dominance loop; imported on first use so `schedules` stays light for pipelines that only apply).
- The knee (`knee_index`), defined once:

      On the (quality, cost) front, after scaling both objectives to [0, 1] over the front (0 = best),
      the knee is the member farthest from the straight line through the front's two ends (its
      best-quality and its fastest member) on the side of the ideal corner (0, 0). With no bend
      toward that corner (one or two members, or none inside the line) it is the member closest
      to the ideal corner. Ties go to the better-quality member (two-member fronts tie).

  Why this definition: it is what "knee" means for a trade-off curve, the point where the curve
  bends most (Das 1999's maximum bulge; Kneedle's maximum distance from the chord), i.e. where
  further speed starts to cost quality at a much steeper rate. It needs no weights and, after the
  scaling, no units. The rule it replaced here (closest to the ideal corner) is a compromise rule:
  it answers "which point is nearest to having both", which on a front with a long flat tail lands
  away from the bend people look for.

This module is pure Python + numpy (moocore on first use), so the store and dashboard import it
without torch; `schedules.result.EvaluationResult` reads its figures through the same value rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

QUALITY, COST = "quality", "cost"
ROLES = (QUALITY, COST)

#: The cost objectives: speedups against the all-compute run, each a field of every result.
#: mac_speedup: all-compute MACs / schedule MACs; latency_speedup: measured all-compute seconds /
#: schedule seconds on the same worker; latency_speedup_model: the latency cost model's prediction
#: (all-compute predicted seconds / schedule predicted seconds), when a study asks for it.
COST_NAMES = ("mac_speedup", "latency_speedup", "latency_speedup_model")
COST_LABELS = {"mac_speedup": "MAC speedup", "latency_speedup": "latency speedup",
               "latency_speedup_model": "modelled latency speedup"}
COST_UNIT = "x"
#: Figures a result carries as fields (read by name like metrics): the costs and their raw measures.
FIGURE_NAMES = COST_NAMES + ("macs", "latency_s")
#: The knee rule's one-line explanation (dashboard captions, CLI help).
KNEE_HELP = ("knee: the front member that bulges farthest toward the ideal corner from the straight line between "
             "the front's two ends (both axes scaled to [0, 1]): where more speed starts to cost much more quality")


class ObjectiveError(ValueError):
    """An objective is unknown, has the wrong role, lacks a hypervolume reference, or a rule over
    objectives (a pick rule) cannot be read. The message names the objective and what to do."""


# ------------------------------------------------------------------------------------ the value rule
def objective_value(source: Any, name: str) -> float | None:
    """Figure `name` of a result (`EvaluationResult`, a store record or row: anything with the figure
    attributes and a `metrics` mapping): a cost or raw figure by attribute, anything else from
    `metrics`. None when absent, not a number, or not finite (PSNR of an identical image is +inf:
    no finite point on a front)."""
    value = getattr(source, name, None) if name in FIGURE_NAMES else (getattr(source, "metrics", None) or {}).get(name)
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def is_cost(name: str) -> bool:
    return name in COST_NAMES


def label(name: str) -> str:
    """A display name: 'MAC speedup' for a cost, the metric's own name otherwise."""
    return COST_LABELS.get(name, name)


# ------------------------------------------------------------------------------------ one objective
@dataclass(frozen=True)
class Objective:
    """One objective of a study.

    `role` is `quality` or `cost`; left out, it follows from the name (a cost figure is a cost, any
    other name a quality metric), and given, it must agree. `reference` is the hypervolume corner, the
    worst value that still counts (costs: 1.0, no speedup, unless given); a quality objective without
    one still has fronts and knees, only no hypervolume. `unit` is for display ('dB', costs 'x') and
    does not take part in comparisons (a study resumed from an older store, which kept no units, is
    the same study)."""

    name: str
    maximize: bool = True
    role: str | None = None
    reference: float | None = None
    unit: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ObjectiveError("an objective needs a name (a metric such as psnr, or one of "
                                 f"{', '.join(COST_NAMES)})")
        role = self.role if self.role is not None else (COST if is_cost(self.name) else QUALITY)
        if role not in ROLES:
            raise ObjectiveError(f"objective '{self.name}': role must be quality or cost, got {role!r}")
        if role == QUALITY and is_cost(self.name):
            raise ObjectiveError(f"objective '{self.name}' is a cost (a speedup), but it is listed with role quality; "
                                 f"list a quality metric (psnr, ssim, ...) as quality and '{self.name}' as cost")
        if role == COST and not is_cost(self.name):
            raise ObjectiveError(f"objective '{self.name}' is listed with role cost, but it is a quality metric; the "
                                 f"cost objectives are {', '.join(COST_NAMES)}")
        if role == COST and not self.maximize:
            raise ObjectiveError(f"objective '{self.name}' is a speedup: larger is better (maximize must be true)")
        reference = self.reference
        if reference is None and role == COST:
            reference = 1.0
        if reference is not None:
            try:
                reference = float(reference)
            except (TypeError, ValueError):
                raise ObjectiveError(f"objective '{self.name}': reference must be a number, "
                                     f"got {reference!r}") from None
            if not math.isfinite(reference):
                raise ObjectiveError(f"objective '{self.name}': reference must be finite, got {reference!r}")
        object.__setattr__(self, "role", role)
        object.__setattr__(self, "reference", reference)
        object.__setattr__(self, "maximize", bool(self.maximize))
        if role == COST and not self.unit:
            object.__setattr__(self, "unit", COST_UNIT)

    @property
    def direction(self) -> str:
        """'maximize' or 'minimize' (Optuna's spelling)."""
        return "maximize" if self.maximize else "minimize"

    @property
    def label(self) -> str:
        """'psnr (dB)', 'MAC speedup (x)': axis titles and table headers."""
        return f"{label(self.name)} ({self.unit})" if self.unit else label(self.name)

    def minimised(self, value: float) -> float:
        return -value if self.maximize else value

    def better(self, a: float, b: float) -> bool:
        """Whether value `a` is strictly better than `b` on this objective."""
        return a > b if self.maximize else a < b

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "maximize": self.maximize, "role": self.role, "reference": self.reference,
                "unit": self.unit}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], reference: float | None = None) -> "Objective":
        """From `to_dict`, or a document of an older store ({"name", "maximize"} with the reference kept
        apart: pass it as `reference`)."""
        ref = doc.get("reference", reference)
        return cls(str(doc["name"]), bool(doc.get("maximize", True)), doc.get("role"),
                   reference if ref is None else ref, str(doc.get("unit") or ""))


# ------------------------------------------------------------------------------------ a study's objectives
class Objectives(tuple):
    """A study's objectives in order, with at least one of each role (`require_roles=False` only for
    reading what an older store kept). Values are in natural units; searchers that minimise use
    `minimised` / `matrix`."""

    def __new__(cls, items: Iterable[Objective], *, require_roles: bool = True) -> "Objectives":
        items = tuple(o if isinstance(o, Objective) else Objective(str(o)) for o in items)
        names = [o.name for o in items]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ObjectiveError(f"{', '.join(twice)} listed more than once")
        if require_roles:
            if not any(o.role == QUALITY for o in items):
                raise ObjectiveError("list a quality objective (a metric such as psnr)")
            if not any(o.role == COST for o in items):
                raise ObjectiveError(f"list a cost objective ({', '.join(COST_NAMES)})")
        return super().__new__(cls, items)

    def __getnewargs_ex__(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Pickled (Streamlit's caches, Ray) as they are: checked when made, not again on load."""
        return (tuple(self),), {"require_roles": False}

    # ---------------------------------------------------------------- roles
    def _first(self, role: str) -> Objective:
        for o in self:
            if o.role == role:
                return o
        example = "a metric such as psnr" if role == QUALITY else ", ".join(COST_NAMES)
        raise ObjectiveError(f"no {role} objective is listed ({', '.join(self.names) or 'none'}); name one ({example})")

    @property
    def quality(self) -> Objective:
        """The primary quality objective: the first with role quality."""
        return self._first(QUALITY)

    @property
    def cost(self) -> Objective:
        """The primary cost objective: the first with role cost."""
        return self._first(COST)

    @property
    def names(self) -> list[str]:
        return [o.name for o in self]

    def get(self, name: str) -> Objective | None:
        return next((o for o in self if o.name == name), None)

    def index(self, name: str) -> int:  # type: ignore[override]
        for i, o in enumerate(self):
            if o.name == name:
                return i
        raise ObjectiveError(f"'{name}' is not an objective here ({', '.join(self.names)})")

    def maximize(self, name: str) -> bool:
        """Direction of `name`: its objective's, else larger-is-better (a metric the study does not
        list, e.g. ssim shown next to psnr)."""
        o = self.get(name)
        return o.maximize if o is not None else True

    def pair(self, quality: str | None = None, cost: str | None = None) -> "Objectives":
        """The (quality, cost) pair of a 2-D front: the primary ones unless named. A name not listed
        gets its role from its name and its direction from `maximize`."""
        q, c = self.get(quality or self.quality.name), self.get(cost or self.cost.name)
        q = q or Objective(quality or "", self.maximize(quality or ""), QUALITY)
        c = c or Objective(cost or "", True, COST)
        if q.role != QUALITY:
            raise ObjectiveError(f"'{q.name}' is a cost; a front's quality axis must be a quality metric")
        if c.role != COST:
            raise ObjectiveError(f"'{c.name}' is not a cost objective (one of {', '.join(COST_NAMES)})")
        return Objectives((q, c))

    # ---------------------------------------------------------------- values
    def values(self, result: Any) -> tuple[float, ...] | None:
        """The result's value of every objective (natural units), or None when it failed or lacks one."""
        if not getattr(result, "ok", True):
            return None
        vals = [objective_value(result, o.name) for o in self]
        if any(v is None for v in vals):
            return None
        return tuple(vals)  # type: ignore[arg-type]

    def minimised(self, values: Sequence[float]) -> np.ndarray:
        return np.array([o.minimised(v) for o, v in zip(self, values)], dtype=float)

    def matrix(self, points: Sequence[Sequence[float]]) -> np.ndarray:
        if len(points) == 0:
            return np.zeros((0, len(self)))
        return np.array([self.minimised(p) for p in points], dtype=float)

    @property
    def maximise_flags(self) -> list[bool]:
        return [o.maximize for o in self]

    def references(self) -> list[float]:
        """Every objective's hypervolume reference, or `ObjectiveError` naming those without one."""
        missing = [o.name for o in self if o.reference is None]
        if missing:
            raise ObjectiveError(f"no hypervolume reference for {', '.join(missing)}: set `reference` on the "
                                 "objective (the worst value that still counts); fronts and knees need none")
        return [float(o.reference) for o in self]  # type: ignore[arg-type]

    # ---------------------------------------------------------------- fronts
    def front_mask(self, points: Sequence[Sequence[float]]) -> np.ndarray:
        return nondominated(np.asarray(points, dtype=float).reshape(-1, len(self)), self.maximise_flags)

    def hypervolume(self, points: Sequence[Sequence[float]]) -> float:
        return hypervolume(np.asarray(points, dtype=float).reshape(-1, len(self)), self.references(),
                           self.maximise_flags)

    def knee(self, points: Sequence[Sequence[float]]) -> int:
        """Index into `points` of the knee of their front on the primary (quality, cost) pair."""
        pts = np.asarray(points, dtype=float).reshape(-1, len(self))
        q, c = self.index(self.quality.name), self.index(self.cost.name)
        pair = pts[:, [q, c]]
        mask = nondominated(pair, [self[q].maximize, self[c].maximize])
        idx = np.flatnonzero(mask)
        return int(idx[knee_index(pair[idx], [self[q].maximize, self[c].maximize])])

    def pick(self, points: Sequence[Sequence[float]], rule: str = "knee") -> int:
        """Index of one front member by `rule`: "knee" (`knee_index`), "fastest" (best primary cost),
        "median" (the middle member by primary cost)."""
        if not len(points):
            raise ObjectiveError("no points to pick from")
        if rule == "knee":
            return self.knee(points)
        if rule not in ("fastest", "median"):
            raise ObjectiveError(f"unknown pick rule {rule!r} (knee, fastest, median)")
        mask = self.front_mask(points)
        idx = np.flatnonzero(mask)
        c = self.index(self.cost.name)
        order = idx[np.argsort([self[c].minimised(points[i][c]) for i in idx], kind="stable")]
        return int(order[0] if rule == "fastest" else order[len(order) // 2])

    # ---------------------------------------------------------------- documents
    def to_list(self) -> list[dict[str, Any]]:
        return [o.to_dict() for o in self]

    @classmethod
    def from_list(cls, docs: Iterable[Mapping[str, Any]], references: Mapping[str, float] | None = None, *,
                  require_roles: bool = True) -> "Objectives":
        refs = dict(references or {})
        return cls((Objective.from_dict(d, refs.get(str(d["name"]))) for d in docs), require_roles=require_roles)


# ------------------------------------------------------------------------------------ fronts on arrays
def _as_min(points: np.ndarray, maximise: Sequence[bool]) -> np.ndarray:
    """Maximised columns flipped, so everything is minimised (moocore's native sense)."""
    sign = np.where(np.asarray(maximise, dtype=bool), -1.0, 1.0)
    return np.asarray(points, dtype=float) * sign


def nondominated(points: np.ndarray, maximise: Sequence[bool]) -> np.ndarray:
    """Boolean mask of the non-dominated rows of `points` (n, d). Duplicates of a front point are all
    kept (two different schedules with equal figures are both worth showing)."""
    import moocore
    pts = np.asarray(points, dtype=float)
    if len(pts) == 0:
        return np.zeros(0, dtype=bool)
    return np.asarray(moocore.is_nondominated(pts, maximise=list(maximise), keep_weakly=True), dtype=bool)


def hypervolume(points: np.ndarray, reference: Sequence[float], maximise: Sequence[bool]) -> float:
    """Volume dominated by `points` and bounded by `reference`; points that do not strictly beat the
    reference in every objective add nothing."""
    import moocore
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
    failure: it counts, and changes nothing). Incremental: the running front is kept and the volume
    recomputed only when a new point enters it."""
    import moocore
    ref = _as_min(np.asarray(reference, dtype=float)[None, :], maximise)[0]
    front = np.empty((0, len(ref)))
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
    """Index of the knee (module docstring) of the 2-D front `points` (n, 2): columns (quality, cost),
    every row a front member (callers pass the front, e.g. through `nondominated`)."""
    pts = _as_min(points, maximise)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ObjectiveError(f"the knee is defined on a (quality, cost) front: 2 columns, got shape {pts.shape}")
    if len(pts) == 0:
        raise ObjectiveError("an empty front has no knee")
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    z = (pts - lo) / np.where(hi > lo, hi - lo, 1.0)          # 0 = best in each column
    a = z[int(np.argmin(z[:, 0] + 1e-12 * z[:, 1]))]           # best quality (the fastest among ties)
    b = z[int(np.argmin(z[:, 1] + 1e-12 * z[:, 0]))]           # fastest (the best quality among ties)
    chord = b - a
    norm = float(np.hypot(chord[0], chord[1]))
    if norm > 0 and len(pts) > 2:
        def side(x: np.ndarray, y: np.ndarray) -> np.ndarray:   # signed distance from the chord
            return (chord[0] * (y - a[1]) - chord[1] * (x - a[0])) / norm
        toward_ideal = side(z[:, 0], z[:, 1]) * np.sign(side(np.zeros(1), np.zeros(1)))
        if toward_ideal.max() > 1e-12:
            return int(np.lexsort((z[:, 0], -toward_ideal))[0])     # ties: the better quality
    return int(np.lexsort((z[:, 0], np.hypot(z[:, 0], z[:, 1])))[0])
