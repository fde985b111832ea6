"""The search loop: the one place that owns budgets, dispatch, persistence, progress and resume.

    loop = SearchLoop(store, "pixart-ecad", searcher, pool, objectives, Budget(evaluations=500))
    outcome = loop.run()       # returns on budget, searcher finished, or Ctrl-C (KeyboardInterrupt)

Why it is shaped this way:
- Every result is written to the store the moment it arrives (one transaction each), *then* told
  to the searcher, *then* the searcher's JSON state is saved. A kill at any point loses at most
  in-flight work: on resume, schedules the saved state lists as pending are told from the store if
  they finished after all, and re-dispatched otherwise, so nothing finished is evaluated twice and
  the searcher sees exactly the results it would have seen uninterrupted.
- A schedule already finished in this study (e.g. a heuristic a seeded searcher proposes again) is
  told from the store instead of being evaluated: identical schedules are evaluated once.
- Budgets: finished evaluations (counted in the store), evaluator-seconds (evaluation wall time on
  the workers plus profiling runs), and wall time summed over all runs of the study.
- Ctrl-C stops cleanly: the state is saved, the study is marked interrupted, and `run` returns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from schedules import EvaluationResult, Schedule
from schedules.objectives import Objectives

from .base import Profile, ProfileRequest, Searcher
from .progress import SearchProgress


@dataclass
class Budget:
    evaluations: int | None = None         # finished evaluations in the study (done + failed)
    wall_time_s: float | None = None       # summed over every run of the study
    evaluator_seconds: float | None = None  # worker time: evaluations + profiling runs


def budget_eta(budget: Budget, *, evaluations: int, evaluated_now: int, run_seconds: float,
               wall_time_s: float, evaluator_seconds: float, evaluator_seconds_now: float) -> float | None:
    """Seconds until the first budget runs out, from this run's pace: evaluations left x seconds per
    evaluation so far, the wall-time budget left, evaluator-seconds left at this run's ratio of
    evaluator time to wall time. None while nothing bounds it (no evaluation yet, no wall budget)."""
    left: list[float] = []
    if budget.wall_time_s is not None:
        left.append(budget.wall_time_s - wall_time_s)
    if evaluated_now > 0 and run_seconds > 0:
        if budget.evaluations is not None:
            left.append((budget.evaluations - evaluations) * run_seconds / evaluated_now)
        if budget.evaluator_seconds is not None and evaluator_seconds_now > 0:
            left.append((budget.evaluator_seconds - evaluator_seconds) * run_seconds / evaluator_seconds_now)
    return max(0.0, min(left)) if left else None


@dataclass
class Outcome:
    reason: str                      # "budget: evaluations", "searcher finished", "interrupted", ...
    evaluations: int                 # finished evaluations in the study
    evaluated_now: int               # evaluations dispatched by this run
    evaluator_seconds: float
    wall_time_s: float
    front: list[EvaluationResult] = field(default_factory=list)
    hypervolume: float = 0.0


class SearchLoop:
    def __init__(self, store: Any, study: str, searcher: Searcher, pool: Any, objectives: Objectives,
                 budget: Budget, *, batch_size: int = 1, progress: SearchProgress | None = None,
                 save_interval_s: float = 1.0, clock: Any = time.monotonic, racing: Any = None):
        self.store, self.study, self.searcher, self.pool = store, study, searcher, pool
        self.racing = racing if racing is not None and racing.enabled else None
        self.objectives, self.budget = objectives, budget
        self.batch_size = max(1, int(batch_size))
        self.progress = progress
        self.save_interval_s = save_interval_s
        self._last_save = 0.0
        self.known: dict[str, EvaluationResult] = {}
        self.imported = 0
        self.front: list[EvaluationResult] = []
        self.hv = 0.0
        self.profile_seconds = 0.0
        self.profiles = 0
        self.elapsed_before = 0.0
        self.evaluated_now = 0
        self.clock = clock
        self._t0 = clock()
        self._evaluator_seconds_before = 0.0

    # ------------------------------------------------------------------ accounting
    @property
    def evaluations(self) -> int:
        """Finished evaluations of this study; results imported from a seed study do not count."""
        return len(self.known) - self.imported

    @property
    def evaluator_seconds(self) -> float:
        spent = sum((r.finished_at or 0.0) - (r.started_at or 0.0) for r in self.known.values()
                    if r.finished_at and r.started_at and not r.schedule.provenance.get("imported_from"))
        return spent + self.profile_seconds

    @property
    def wall_time(self) -> float:
        return self.elapsed_before + self.clock() - self._t0

    def eta(self) -> float | None:
        return budget_eta(self.budget, evaluations=self.evaluations, evaluated_now=self.evaluated_now,
                          run_seconds=self.clock() - self._t0, wall_time_s=self.wall_time,
                          evaluator_seconds=self.evaluator_seconds,
                          evaluator_seconds_now=self.evaluator_seconds - self._evaluator_seconds_before)

    def _exhausted(self) -> str | None:
        b = self.budget
        if b.evaluations is not None and self.evaluations >= b.evaluations:
            return "budget: evaluations"
        if b.wall_time_s is not None and self.wall_time >= b.wall_time_s:
            return "budget: wall time"
        if b.evaluator_seconds is not None and self.evaluator_seconds >= b.evaluator_seconds:
            return "budget: evaluator seconds"
        return None

    def _room(self) -> int:
        if self.budget.evaluations is None:
            return self.batch_size
        return max(0, min(self.batch_size, self.budget.evaluations - self.evaluations))

    # ------------------------------------------------------------------ persistence
    def _save(self, throttled: bool = False) -> None:
        """Save the searcher's state. Saves after a tell may be throttled: every ask is saved at once,
        so a lagging state still lists the told schedules as pending and resume tells them from the
        store (same searcher state, nothing evaluated twice)."""
        if throttled and self.clock() - self._last_save < self.save_interval_s:
            return
        self._last_save = self.clock()
        state = {"searcher": self.searcher.state(),
                 "loop": {"profile_seconds": self.profile_seconds, "profiles": self.profiles,
                          "wall_time_s": self.wall_time}}
        self.store.save_searcher_state(self.study, state, int(self.searcher.step()))

    def _restore(self) -> list[Schedule]:
        """Load finished results and the saved state; tell what finished; return what to re-dispatch."""
        for r in self.store.results(self.study):
            self._remember(r)
        saved = self.store.load_searcher_state(self.study)
        if saved is None:
            return []
        state, _step = saved
        self.searcher.load_state(state["searcher"])
        loop = state.get("loop", {})
        self.profile_seconds = float(loop.get("profile_seconds", 0.0))
        self.profiles = int(loop.get("profiles", 0))
        self.elapsed_before = float(loop.get("wall_time_s", 0.0))
        pending = self.searcher.pending()
        finished = [self.known[s.hash] for s in pending if s.hash in self.known]
        if finished:
            self.searcher.tell(finished)
        return [s for s in pending if s.hash not in self.known]

    def _remember(self, result: EvaluationResult) -> None:
        if result.schedule.hash not in self.known and result.schedule.provenance.get("imported_from"):
            self.imported += 1
        self.known[result.schedule.hash] = result
        if self.objectives.values(result) is None:
            return
        pool = self.front + [result]
        mask = self.objectives.front_mask([self.objectives.values(r) for r in pool])
        self.front = [r for r, keep in zip(pool, mask) if keep]
        self.hv = self.objectives.hypervolume([self.objectives.values(r) for r in self.front])

    # ------------------------------------------------------------------ the loop
    def run(self) -> Outcome:
        redispatch = self._restore()
        self._evaluator_seconds_before = self.evaluator_seconds
        self.store.set_study_status(self.study, "running")
        self._show("resumed" if redispatch or self.known else "started")
        reason = "stopped"
        try:
            while True:
                stop = self._exhausted()
                if stop:
                    reason = stop
                    break
                request = None if redispatch else self.searcher.profile_request()
                if request is not None:
                    self._profile(request)
                    continue
                batch = redispatch[:max(1, self._room())] if redispatch else self.searcher.ask(self._room())
                redispatch = redispatch[len(batch):]
                if not batch:
                    if self.searcher.finished or not self.searcher.pending():
                        reason = "searcher finished"
                        break
                    raise RuntimeError(f"{self.searcher.name} waits for results of schedules that are "
                                       "not being evaluated (a searcher bug)")
                self._save()
                self._dispatch(batch)
            status = "finished"    # budget or searcher done; a bigger budget can still resume it
        except KeyboardInterrupt:
            reason, status = "interrupted", "interrupted"
        except BaseException:
            self._finish("failed")
            raise
        self._finish(status)
        cost = self.objectives.index(self.objectives.cost.name)
        return Outcome(reason, self.evaluations, self.evaluated_now, self.evaluator_seconds, self.wall_time,
                       sorted(self.front, key=lambda r: self.objectives.values(r)[cost]), self.hv)

    def _finish(self, status: str) -> None:
        self._save()
        self.store.set_study_status(self.study, status)

    def _dispatch(self, batch: Sequence[Schedule]) -> None:
        cached = [self.known[s.hash] for s in batch if s.hash in self.known]
        if cached:
            self.searcher.tell(cached)
        todo = [s for s in batch if s.hash not in self.known]
        if not todo:
            self._save(throttled=True)
            return
        step = int(self.searcher.step())
        self.store.mark_queued(self.study, todo, step)
        races = self._races(todo)
        results = self.pool.evaluate(todo, races=races) if races else self.pool.evaluate(todo)
        try:
            for result in results:
                self.store.record_evaluation(self.study, result, step)
                self.evaluated_now += 1
                self._remember(result)
                self.searcher.tell([result])
                self._save(throttled=True)
                self._show()
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()

    def _races(self, todo: Sequence[Schedule]) -> dict[str, Any]:
        """Per schedule, the race against the front member at least as fast (by predicted MAC
        speedup) with the best quality, on that member's per-pair values (evaluators.racing)."""
        if self.racing is None or not self.front:
            return {}
        from evaluators.racing import Race

        quality, cost = self.objectives.quality, self.objectives.cost
        if not self.searcher.predicts_cost():
            return {}
        races = {}
        for s in todo:
            speed = self.searcher.speedup(s)
            rivals = [r for r in self.front if (r.objective(cost.name) or 0.0) >= speed
                      and len(r.per_prompt.get(quality.name, ())) == (r.pairs_total or -1)]
            if not rivals:
                continue
            best = max(rivals, key=lambda r: (r.objective(quality.name) or 0.0) * (1 if quality.maximize else -1))
            races[s.hash] = Race(quality.name, quality.maximize, tuple(best.per_prompt[quality.name]),
                                 self.racing.z, self.racing.min_pairs, best.schedule.hash)
        return races

    def _profile(self, request: ProfileRequest) -> None:
        """Run a measurement the searcher asked for; its worker time counts like an evaluation's."""
        t0 = self.clock()
        seconds = None
        if request.kind == "timesteps":
            fn = getattr(self.pool, "timestep_costs", None)
            if fn is None:
                raise RuntimeError("the searcher needs timestep jump costs, which this evaluator pool does not "
                                   "provide (timestep_costs)")
            data: Any = np.asarray(fn(request.grid), dtype=float)
        else:
            raw = self.pool.profile(request.schedule)
            seconds = getattr(raw, "seconds", None)      # the worker's own timing (DriftProfile)
            data = Profile.of(raw)
        self.profile_seconds += float(seconds) if seconds is not None else self.clock() - t0
        self.profiles += 1
        self.searcher.tell_profile(request, data)
        self._save()
        self._show(f"profiled ({request.tag})")

    def _show(self, note: str = "") -> None:
        if self.progress is None:
            return
        best = ""
        if self.front:
            vals = [self.objectives.values(r) for r in self.front]
            parts = []
            for i, o in enumerate(self.objectives):
                column = [v[i] for v in vals]
                parts.append(f"{o.name} {(max if o.maximize else min)(column):.3g}")
            best = "best " + ", ".join(parts)
        self.progress.update(self.evaluations, len(self.front), self.hv, note or best, self.eta())
