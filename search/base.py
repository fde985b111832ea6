"""The searcher interface: ask/tell with a JSON state, the way Optuna's ask-and-tell works, but small.

    searcher = EcadSearcher(space, objectives, settings, seed=0)
    batch = searcher.ask(8)                 # new, admissible, never-asked schedules (may be fewer)
    searcher.tell(pool.evaluate(batch))     # any order, any grouping
    doc = searcher.state()                  # JSON-serialisable; no pickle anywhere
    again = EcadSearcher.from_state(space, objectives, settings, doc)   # continues exactly

Why the base class keeps `seen` and `pending`: a study must never evaluate one schedule twice, and a
resumed study must re-dispatch exactly what was asked but never told (the loop tells those from the
store when they were finished after all). Randomness lives in one `random.Random` per searcher whose
state is part of the JSON state, so a resumed search draws the same numbers as an uninterrupted one.

An `ask` that returns nothing while schedules are pending means "tell me first" (e.g. the end of an
NSGA-II generation); nothing returned, nothing pending and `finished` means the searcher is done.
Searchers that need a profile (the DP) say so through `profile_request`; the loop runs it on the
evaluator pool, charges its time to the budget, and hands it back with `tell_profile`.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from schedules import CostTable, EvaluationResult, Schedule, mac_speedup

from schedules.objectives import Objectives

from .space import SearchSpace

if TYPE_CHECKING:      # schedules.latency needs torch; a searcher gets its table from the pool
    from schedules.latency import LatencyTable

STATE_VERSION = 1
class Profile(dict):
    """A drift profile as searchers receive it: (group, component) -> [blocks, N, N] reuse distances,
    plus `forecast`: (group, component, mode) -> [blocks, N, N, N] forecast errors (the layout of
    `evaluators.profiling.DriftProfile`), as numpy arrays."""

    def __init__(self, drift: Mapping[tuple[str, str], Any],
                 forecast: Mapping[tuple[str, str, str], Any] | None = None) -> None:
        super().__init__({k: np.asarray(v, dtype=float) for k, v in drift.items()})
        self.forecast = {k: np.asarray(v, dtype=float) for k, v in (forecast or {}).items()}

    @classmethod
    def of(cls, raw: Any) -> "Profile":
        """From whatever a pool returned (a DriftProfile, a Profile, a plain mapping)."""
        return cls(dict(raw.items()), getattr(raw, "forecast", None))


class SearcherSettings(BaseModel):
    """Settings common to all searchers; each searcher extends this."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class ProfileRequest:
    """Ask the loop for a measurement on the evaluator pool, charged to the budget:
    kind "drift": `pool.profile(schedule)` (None = all compute), {(group, comp): [blocks, N, N]};
    kind "timesteps": `pool.timestep_costs(grid)`, the [M+1, M+1] one-jump cost matrix."""

    schedule: Schedule | None
    tag: str = "all-compute"
    kind: str = "drift"
    grid: tuple[float, ...] | None = None


def rng_to_json(rng: random.Random) -> list[Any]:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def rng_from_json(doc: Sequence[Any]) -> random.Random:
    rng = random.Random()
    rng.setstate((doc[0], tuple(doc[1]), doc[2]))
    return rng


def profile_to_json(profile: Profile) -> dict[str, Any]:
    return {f"{g}/{c}": np.asarray(v, dtype=float).round(8).tolist() for (g, c), v in profile.items()}


def profile_from_json(doc: Mapping[str, Any]) -> dict[tuple[str, str], np.ndarray]:
    out = {}
    for key, value in doc.items():
        g, c = key.split("/", 1)
        out[(g, c)] = np.asarray(value, dtype=float)
    return out


class Searcher(ABC):
    name: ClassVar[str] = "searcher"
    Settings: ClassVar[type[SearcherSettings]] = SearcherSettings
    #: settings small enough for a tiny study (a few dozen evaluations of the synthetic pool): the
    #: shared contract test runs every registered searcher with them
    quick_settings: ClassVar[dict[str, Any]] = {}

    def __init__(self, space: SearchSpace, objectives: Objectives, settings: SearcherSettings | Mapping | None = None,
                 seed: int = 0, *, seeds: Sequence[Schedule] = (), cost_table: CostTable | None = None,
                 latency_table: LatencyTable | None = None):
        self.space = space
        self.objectives = objectives
        if settings is None or isinstance(settings, Mapping):
            settings = self.Settings(**dict(settings or {}))
        self.settings = settings
        self.seed = int(seed)
        self.rng = random.Random(self.seed)
        self.seeds = [s for s in (space.project(x) for x in seeds) if s is not None]
        self.cost_table = cost_table
        self.latency_table = latency_table
        self._seen: set[str] = set()
        self._pending: dict[str, Schedule] = {}
        self.num_told = 0
        self.finished = False

    # ------------------------------------------------------------------ the interface
    def ask(self, n: int) -> list[Schedule]:
        """Up to `n` new schedules: admissible, never asked before in this study."""
        if n <= 0 or self.finished:
            return []
        out = self._propose(n)
        for s in out:
            self._seen.add(s.hash)
            self._pending[s.hash] = s
        return out

    def tell(self, results: Sequence[EvaluationResult]) -> None:
        """Scored results of asked schedules, in any order; unknown hashes are ignored."""
        mine = []
        for r in results:
            if r.schedule.hash in self._pending:
                del self._pending[r.schedule.hash]
                mine.append(r)
        if mine:
            self.num_told += len(mine)
            self._observe(mine)

    def pending(self) -> list[Schedule]:
        """Asked but not yet told, in ask order: what a resumed loop re-dispatches."""
        return list(self._pending.values())

    def step(self) -> int:
        """Progress counter recorded with each evaluation (generation, round, trial count...)."""
        return self.num_told

    def profile_request(self) -> ProfileRequest | None:
        return None

    def tell_profile(self, request: ProfileRequest, profile: Profile) -> None:
        raise NotImplementedError(f"{self.name} does not use profiles")

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        return {
            "searcher": self.name, "version": STATE_VERSION, "seed": self.seed,
            "rng": rng_to_json(self.rng), "seen": sorted(self._seen),
            "pending": [s.to_dict() for s in self._pending.values()],
            "num_told": self.num_told, "finished": self.finished, "extra": self._state(),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        if state.get("searcher") != self.name:
            raise ValueError(f"state is for searcher {state.get('searcher')!r}, not {self.name!r}")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"searcher state version {state.get('version')!r}, expected {STATE_VERSION}")
        self.seed = int(state["seed"])
        self.rng = rng_from_json(state["rng"])
        self._seen = set(state["seen"])
        self._pending = {}
        for doc in state["pending"]:
            s = Schedule.from_dict(doc)
            self._pending[s.hash] = s
        self.num_told = int(state["num_told"])
        self.finished = bool(state["finished"])
        self._load_state(state["extra"])

    @classmethod
    def from_state(cls, space: SearchSpace, objectives: Objectives, settings: SearcherSettings | Mapping | None,
                   state: Mapping[str, Any], **kwargs: Any) -> "Searcher":
        searcher = cls(space, objectives, settings, int(state.get("seed", 0)), **kwargs)
        searcher.load_state(state)
        return searcher

    # ------------------------------------------------------------------ for subclasses
    @abstractmethod
    def _propose(self, n: int) -> list[Schedule]:
        """Up to n schedules; use `fresh` to keep them new and admissible."""

    def _observe(self, results: list[EvaluationResult]) -> None:
        """Results of this searcher's asks."""

    def _state(self) -> dict[str, Any]:
        return {}

    def _load_state(self, extra: Mapping[str, Any]) -> None:
        pass

    def fresh(self, schedule: Schedule, batch: Sequence[Schedule] = ()) -> bool:
        """True if `schedule` may be asked now: admissible, never asked, not already in `batch`."""
        h = schedule.hash
        return (h not in self._seen and all(b.hash != h for b in batch)
                and self.space.admissible(schedule))

    def speedup(self, schedule: Schedule) -> float:
        """The study's speed objective predicted before any image, over the study's reference (all
        compute at its own steps): the latency model's speedup when the study optimises it, else the
        MAC speedup from the pool's cost table, else from the fraction computed."""
        if self.objectives.cost.name == "latency_speedup_model" and self.latency_table is not None:
            return self.latency_table.speedup(schedule, self.space.baseline())
        if self.cost_table is not None:
            return mac_speedup(schedule, self.cost_table, self.space.baseline())
        return self.space.num_steps / schedule.num_steps / max(schedule.compute_fraction(), 1e-9)

    def predicts_cost(self) -> bool:
        """Whether `speedup` is the study's cost objective exactly, before any image is made (what
        screening and racing need)."""
        cost = self.objectives.cost.name
        if cost == "latency_speedup_model":
            return self.latency_table is not None
        return cost == "mac_speedup" and self.cost_table is not None

    def tag(self, schedule: Schedule, **provenance: Any) -> Schedule:
        """Provenance for the store and exported files (`schedules.provenance`): this searcher, plus
        what the caller says (generation, round, parents...), on top of what the schedule carries (a
        heuristic's name and parameters, a seed's origin). A schedule sampling other steps than the
        study also records the study's step count (its speedups are against that run)."""
        if schedule.num_steps != self.space.num_steps:
            provenance = {"reference_steps": self.space.num_steps, **provenance}
        return schedule.with_info(provenance={"searcher": self.name, **provenance})
