"""The DP searcher: profile drift once, solve for every budget, verify, re-profile on-policy, repeat.

Phases, all driven through the loop's ask/tell and profile requests (so profiling runs count against
the evaluator-seconds budget like evaluations do):

0. the heuristic schedules are evaluated first: every study's baselines, the yardstick for how far
   candidates should reach in speedup, and (optionally, `calibrate`) the data that fits the error
   model's weights per component and step phase (`search.calibrate`);
1. (timesteps space) ask the pool for the fine grid's one-jump cost matrix; the BOSS DP picks the
   best K of M for every K the space allows, and `boss_candidates` of those all-compute K-step
   schedules are verified by real evaluation. The cache DP then runs on top of the chosen
   timesteps: its bases are the study's own N steps and the `bases - 1` verified BOSS schedules of
   the timestep front, spread by speedup;
2. ask for a drift profile along each base (all compute first; in later rounds along the target);
3. per unit (block x component, component, or whole step) segment costs and the Bellman recurrence
   for every compute budget; units combined by the knapsack or the Lagrangian sweep over MACs (the
   pool's CostTable); `candidates` points spread over the predicted MAC speedup range are verified
   by real evaluation. Errors add as drift**2 by default (independent errors add in quadrature).
   Granularity `auto` runs all three and shares the candidates by how many front members each
   produced: on the embedded model whole-step reuse (coherent: every component reuses the same
   step's output) beats the sum-of-parts model that finer units assume, while finer units win at
   small speedups (e.g. cross-attention, which barely drifts). Where the space allows forecasts,
   every granularity is also solved by the two-history DP (`+forecast`: each served cell reuses or
   forecasts, whichever the profile says errs less), with as many candidates again as the reuse-only
   granularities get (which keep theirs, so the space proposes what the reuse-only DP would), shared the same way:
   the profiled forecast error is a one-step proxy that can misjudge how an overshoot propagates
   (on the embedded model a late forecast profiled below an early reuse did far more damage), so
   the reuse plans stay in the running and the measured front decides;
4. on-policy refinement: the knee (or fastest/median) of the verified front is re-profiled *along its
   own schedule* (drift as the cached trajectory really sees it) and step 3 repeats, for
   `refine_rounds` rounds. Then the searcher is finished; its front can seed `ecad`.

The JSON state holds only decisions (phase, round, BOSS paths, bases to profile, queued candidates,
verified points), never a profile: a profile is consumed the moment it arrives.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping

import numpy as np
from pydantic import Field

from schedules import EvaluationResult, Schedule
from schedules.modes import forecast_modes

from .base import Profile, ProfileRequest, Searcher, SearcherSettings
from .dp import (
    Unit, bellman_all_budgets, bellman_two_history, boss_path, knapsack_front, lagrangian_front, segment_costs,
    served_costs, served_modes, spread,
)
from .calibrate import fit_weights, weighted_profile
from .heuristics import space_heuristics


class DPSettings(SearcherSettings):
    granularity: Literal["auto", "block", "component", "step"] = Field(
        "auto", description="what one DP unit schedules: a component of one block, a component across all "
                            "blocks, or whole steps; auto = all three, candidates shared by front success")
    combine: Literal["knapsack", "lagrangian"] = "knapsack"
    error_power: float = Field(2.0, gt=0, description="errors add as drift**p: 2 = independent errors add "
                                                       "in quadrature (favours many small reuses), 1 = linearly")
    candidates: int = Field(16, ge=1, description="schedules verified per round")
    refine_rounds: int = Field(2, ge=0, description="on-policy re-profiling rounds after the first")
    refine_pick: Literal["knee", "fastest", "median"] = "knee"
    knapsack_bins: int = Field(400, ge=10)
    min_speedup: float = Field(1.05, ge=1.0, description="predicted MAC speedup below which candidates are dropped")
    max_speedup: float | None = Field(None, description="predicted MAC speedup above which candidates are dropped")
    heuristics: bool = Field(True, description="evaluate the heuristics first (baselines + calibration data)")
    max_heuristics: int | None = Field(None, ge=3, description="evaluate only this many, spread over all families")
    calibrate: bool = Field(False, description="fit drift weights per component and step phase to measured "
                                               "quality (see search.calibrate)")
    phases: int = Field(4, ge=1, description="step phases of the calibrated weights")
    ridge: float = Field(0.05, ge=0, description="pull of the calibrated weights toward one shared value")
    floor: float = Field(0.3, ge=0, le=1, description="least calibrated weight, as a fraction of the shared one")
    reach: float = Field(1.5, ge=1.0, description="candidates stop at this multiple of the fastest measured "
                                                  "speedup whose quality still beats the reference point")
    boss_candidates: int | None = Field(None, ge=1, description="timesteps space: BOSS step counts K verified "
                                                                "(spread over the range; None = every K)")
    bases: int = Field(3, ge=1, description="timesteps space: timestep choices the cache DP runs on (the study's "
                                            "own steps, then verified BOSS schedules of the timestep front)")


class DPSearcher(Searcher):
    name = "dp"
    Settings = DPSettings
    quick_settings = {"candidates": 10}

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if "cache" not in self.space.kinds and "timesteps" not in self.space.kinds:
            raise ValueError("the dp searcher covers the cache and timesteps spaces, not architecture alone")
        self.phase = "timesteps" if "timesteps" in self.space.kinds else "profile"
        self.queue: list[dict] = []              # schedules not yet asked (heuristics, then candidates)
        if self.settings.heuristics:
            items = space_heuristics(self.space)
            cap = self.settings.max_heuristics
            if cap is not None and len(items) > cap:   # evenly strided: every family keeps members
                items = [items[round(i * (len(items) - 1) / (cap - 1))] for i in range(cap)]
            self.queue = [s.to_dict() for s in items]
            self.phase = "heuristics" if self.queue else self.phase
        self.round = 0
        self.boss: dict[str, list[int]] = {}     # K -> BOSS grid indices (JSON keys are strings)
        self.stage = "cache"                     # what the current verification round checks: "boss" or "cache"
        self.targets: list[dict] = ([] if "timesteps" in self.space.kinds
                                    else [self.space.baseline().to_dict()])   # schedules to profile along
        self.solved: list[dict] = []             # candidates of this round's profiles so far
        self._profiled: list[str] = []           # hashes of this round's bases profiled so far
        self.verified: list[list[float]] = []    # objective values of told candidates
        self.verified_docs: list[dict] = []
        self.weights: list | None = None         # last calibrated W[component, phase] (for the record)

    def step(self) -> int:
        return self.round

    # ------------------------------------------------------------------ profiles
    def profile_request(self) -> ProfileRequest | None:
        if self.finished:
            return None
        if self.phase == "timesteps":
            return ProfileRequest(None, "timestep-costs", kind="timesteps", grid=self.space.grid)
        if self.phase == "profile" and self.targets:
            target = Schedule.from_dict(self.targets[0])
            tag = (f"on-policy round {self.round}" if self.round else
                   f"all-compute, {target.num_steps} steps" if self.space.timestep_length else "all-compute")
            return ProfileRequest(target, tag)
        return None

    def tell_profile(self, request: ProfileRequest, profile: Any) -> None:
        if request.kind == "timesteps":
            self._enqueue(self.boss_schedules(np.asarray(profile, dtype=float)), stage="boss")
            return
        base = Schedule.from_dict(self.targets.pop(0))
        share = max(1, self.settings.candidates // max(1, len(self.targets) + 1 + len(self._profiled)))
        self._profiled.append(base.hash)
        self.solved += [c.to_dict() for c in self.solve(profile, base, share) if self.fresh(c)]
        if not self.targets:
            self._profiled = []
            self._enqueue([Schedule.from_dict(d) for d in self.solved], stage="cache")
            self.solved = []

    def boss_schedules(self, jumps: np.ndarray) -> list[Schedule]:
        """All-compute schedules at the BOSS DP's best K-of-M timesteps, for the K to verify."""
        ks = list(range(self.space.min_steps, self.space.max_steps + 1))
        out = []
        for k in ks:
            cost, path = boss_path(jumps, k)
            self.boss[str(k)] = path
            out.append((k, cost, path))
        count = self.settings.boss_candidates
        if count is not None and count < len(out):
            out = [out[i] for i in spread([np.log(k) for k in ks], count)]
        return [self.tag(Schedule.all_compute(self.space.model, self.space.base_sampling(path)), round=self.round,
                         granularity="boss", boss_steps=k, predicted_error=float(f"{cost:.6g}"))
                for k, cost, path in out]

    def _bases(self) -> list[Schedule]:
        """What the cache DP runs on after the BOSS round: the study's own steps, then verified BOSS
        schedules of the timestep front (by quality and speed), spread by speedup."""
        bases = [self.space.baseline()]
        boss = [(v, d) for v, d in zip(self.verified, self.verified_docs)
                if (d.get("provenance") or {}).get("granularity") == "boss"]
        if boss and self.settings.bases > 1:
            mask = self.objectives.front_mask([v for v, _ in boss])
            front = [(v, d) for (v, d), keep in zip(boss, mask) if keep]
            c = self._roles()[1]
            for i in spread([np.log(max(v[c], 1e-9)) for v, _ in front], self.settings.bases - 1):
                bases.append(Schedule.from_dict(front[i][1]))
        return bases

    def _enqueue(self, schedules: list[Schedule], stage: str) -> None:
        self.queue = [s.to_dict() for s in schedules if self.fresh(s)]
        self.phase, self.stage = "verify", stage
        self._advance()

    # ------------------------------------------------------------------ the solve
    def calibrated(self, profile: Profile, base: Schedule) -> dict:
        """The profile with drift weighted by the error model fitted to everything measured so far on
        the base's timesteps (the profile's steps are those)."""
        keys = [(g.name, c) for g in self.space.model.block_groups for c in g.components]
        weights = None
        same = [(v, d) for v, d in zip(self.verified, self.verified_docs)
                if d["sampling"] == base.sampling.to_dict()]
        if self.settings.calibrate and same:
            q = self._roles()[0]
            weights = fit_weights([Schedule.from_dict(d) for _, d in same], [v[q] for v, _ in same],
                                  self.objectives.quality, profile, self.settings.phases, self.settings.ridge,
                                  self.settings.floor, self.settings.error_power)
        self.weights = weights.round(4).tolist() if weights is not None else None
        return weighted_profile(profile, keys, weights, base.num_steps)

    def units(self, profile: Profile, gran: str) -> tuple[list[Unit], list[list[tuple[str, str, int]]], list]:
        """DP units of one granularity: (Unit, the (group, comp, block) slots it drives, its best
        compute steps for every budget)."""
        table = self.cost_table
        slots: list[tuple[str, str, int]] = [(g.name, c, b) for g in self.space.model.block_groups
                                             for c in g.components for b in range(g.num_blocks)]

        def macs(slot: tuple[str, str, int]) -> float:
            g, c, b = slot
            return float(table.component_macs[g][c][b]) if table is not None else 1.0

        power = self.settings.error_power
        gran, _, variant = gran.partition("+")
        forecasts = self._forecast_modes(profile) if variant == "forecast" else []

        def dist(slot: tuple[str, str, int]) -> np.ndarray:
            g, c, b = slot
            return np.asarray(profile[(g, c)][b], dtype=float) ** power

        def fdist(slot: tuple[str, str, int], mode: str) -> np.ndarray:
            g, c, b = slot
            return np.asarray(profile.forecast[(g, c, mode)][b], dtype=float) ** power

        if gran == "block":
            groups = [[s] for s in slots]
        elif gran == "component":
            pairs = [(g.name, c) for g in self.space.model.block_groups for c in g.components]
            groups = [[s for s in slots if s[:2] == gc] for gc in pairs]
        else:
            groups = [slots]
        units, paths = [], []
        for members in groups:
            reuse = sum(dist(s) for s in members)
            if forecasts:
                cell, choice = served_costs(reuse, [sum(fdist(s, m) for s in members) for m in forecasts])
                errors, steps = bellman_two_history(cell)
                n = reuse.shape[0]
                options = ("0", *forecasts)
                unit_paths = [(st, {t: options[o] for t, o in served_modes(choice, st, n).items()}) for st in steps]
            else:
                errors, steps = bellman_all_budgets(segment_costs(reuse))
                unit_paths = [(st, {}) for st in steps]
            units.append(Unit(errors, sum(macs(s) for s in members)))
            paths.append(unit_paths)
        return units, groups, paths

    def _forecast_modes(self, profile: Profile) -> list[str]:
        """The forecast modes the space allows and the profile measured (none: the plain reuse DP)."""
        measured = getattr(profile, "forecast", None) or {}
        allowed = [m for m in self.space.modes if m in forecast_modes()]
        missing = [m for m in allowed if not any(k[2] == m for k in measured)]
        if missing:
            raise ValueError(f"the space allows modes {missing} but the drift profile has no forecast errors "
                             "for them (an evaluator that predates forecast profiling?)")
        return allowed

    def candidates(self, profile: Profile, gran: str, base: Schedule) -> list[tuple[float, float, Schedule]]:
        """(predicted speedup, predicted error, schedule) of every front choice of one granularity on
        the base's timesteps that is new, admissible and within the useful speedup range."""
        units, groups, paths = self.units(profile, gran)
        if self.settings.combine == "lagrangian":
            choices = lagrangian_front(units)
        else:
            choices = knapsack_front(units, self.settings.knapsack_bins)
        n, limit = base.num_steps, self._reach()
        out: list[tuple[float, float, Schedule]] = []
        for choice in choices:
            masks = {(g.name, c): [["0"] * g.num_blocks for _ in range(n)]
                     for g in self.space.model.block_groups for c in g.components}
            for k, members, unit_paths in zip(choice, groups, paths):
                steps, served = unit_paths[k - 1]
                for g, c, b in members:
                    for step in steps:
                        masks[(g, c)][step][b] = "1"
                    for step, mode in served.items():
                        masks[(g, c)][step][b] = mode
            s = Schedule.from_masks(self.space.model, base.sampling, masks)
            speed = self.speedup(s)
            if self.settings.min_speedup <= speed <= limit and self.fresh(s):
                out.append((speed, float(sum(u.errors[k - 1] for u, k in zip(units, choice))), s))
        return out

    def _allocation(self, grans: list[str], total: int) -> dict[str, int]:
        """`total` candidates shared by granularity, in proportion to a prior (whole steps 2, finer
        units 1 each: coherent reuse is the safer bet) plus how many members of the measured front
        each granularity produced."""
        if len(grans) == 1:
            return {grans[0]: total}
        wins = {g: (2.0 if g.startswith("step") else 1.0) * (0.5 if g.endswith("+forecast") else 1.0) for g in grans}
        if self.verified:
            mask = self.objectives.front_mask(self.verified)
            for keep, doc in zip(mask, self.verified_docs):
                g = (doc.get("provenance") or {}).get("granularity")
                if keep and g in wins:
                    wins[g] += 1.0
        share = {g: max(1, int(round(total * w / sum(wins.values())))) for g, w in wins.items()}
        return share

    def solve(self, profile: Profile, base: Schedule | None = None, total: int | None = None) -> list[Schedule]:
        """Candidate schedules on the timesteps of `base` (the profiled schedule; default the study's
        own) from its profile, spread over the predicted speedup range."""
        base = base or self.space.baseline()
        weighted = self.calibrated(profile, base)
        grans = ["step", "component", "block"] if self.settings.granularity == "auto" else [self.settings.granularity]
        total = total or self.settings.candidates
        allocation = self._allocation(grans, total)
        if any(m in forecast_modes() for m in self.space.modes):
            # forecasts are a superset of reuse, but the drift model can misjudge them: the reuse-only
            # candidates keep their own full share (so this space proposes at least what the reuse-only
            # DP would, first) and the forecast variants get as many again, shared by front success
            allocation.update(self._allocation([f"{g}+forecast" for g in grans], total))
        out: list[Schedule] = []
        for gran, count in allocation.items():
            scored = [c for c in self.candidates(weighted, gran, base) if self.fresh(c[2], out)]
            if not scored:
                continue
            for i in spread([np.log(sp) for sp, _, _ in scored], count):
                speed, error, s = scored[i]
                out.append(self.tag(s, round=self.round, granularity=gran, predicted_error=round(error, 6),
                                    predicted_speedup=round(speed, 4)))
        return out

    def _reach(self) -> float:
        """Largest predicted speedup worth verifying: `max_speedup`, and `reach` x the fastest speedup
        measured so far whose quality still counts (beats the reference): candidates far beyond it
        would land outside the hypervolume box and waste evaluations."""
        limit = self.settings.max_speedup or float("inf")
        q, c = self._roles()
        quality = self.objectives[q]
        useful = [v[c] for v in self.verified
                  if quality.reference is not None and quality.better(v[q], quality.reference)]
        if useful:
            limit = min(limit, self.settings.reach * max(useful))
        return limit

    def _roles(self) -> tuple[int, int]:
        """Positions of the primary quality and cost objectives in a verified values vector."""
        return self.objectives.index(self.objectives.quality.name), self.objectives.index(self.objectives.cost.name)

    # ------------------------------------------------------------------ ask / tell
    def _propose(self, n: int) -> list[Schedule]:
        out: list[Schedule] = []
        while self.queue and len(out) < n:
            s = Schedule.from_dict(self.queue.pop(0))
            if self.fresh(s, out):
                out.append(s if "searcher" in s.provenance else self.tag(s, round=self.round))
        if not out:
            self._advance()
        return out

    def _observe(self, results: list[EvaluationResult]) -> None:
        for r in results:
            values = self.objectives.values(r)
            if values is not None:
                self.verified.append(list(values))
                self.verified_docs.append(r.schedule.to_dict())
        self._advance()

    def _advance(self) -> None:
        """End of a verification round: re-profile along the picked schedule, or finish."""
        if self.queue or self._pending:
            return
        if self.phase == "heuristics":
            self.phase = "timesteps" if "timesteps" in self.space.kinds else "profile"
            return
        if self.phase != "verify":
            return
        if self.stage == "boss" and "cache" in self.space.kinds:
            self.targets = [b.to_dict() for b in self._bases()]
            self.phase = "profile"
            return
        if self.round >= self.settings.refine_rounds or not self.verified or "cache" not in self.space.kinds:
            self.finished = True
            self.phase = "done"
            return
        self.round += 1
        i = self.objectives.pick(self.verified, self.settings.refine_pick)
        self.targets = [self.verified_docs[i]]
        self.phase = "profile"

    # ------------------------------------------------------------------ state
    def _state(self) -> dict[str, Any]:
        return {"phase": self.phase, "round": self.round, "stage": self.stage, "boss": self.boss,
                "targets": self.targets, "solved": self.solved, "profiled": self._profiled,
                "queue": self.queue, "verified": self.verified, "verified_docs": self.verified_docs,
                "weights": self.weights}

    def _load_state(self, extra: Mapping[str, Any]) -> None:
        self.phase = extra["phase"]
        self.round = int(extra["round"])
        self.stage = extra["stage"]
        self.boss = {k: list(v) for k, v in extra["boss"].items()}
        self.targets = list(extra["targets"])
        self.solved = list(extra["solved"])
        self._profiled = list(extra["profiled"])
        self.queue = list(extra["queue"])
        self.verified = [list(v) for v in extra["verified"]]
        self.verified_docs = list(extra["verified_docs"])
        self.weights = extra.get("weights")
