"""Bayes: Optuna multi-objective optimisation (TPE, or GP) over a structured, low-dimensional family.

The family (per block group g, per component c):
    g.warmup          steps at the start that compute everything
    g.cooldown        steps at the end that compute everything
    g.block_from/to   the block range that may be cached (others always compute)
    g.c.interval      refresh interval of component c in that range (1 = never cached)
    g.c.serve         what c does between refreshes, when the space allows more than reuse
                      (reuse, forecast, damped forecast: the space's non-compute modes)
    g.skip_from/count blocks skipped from step 1 on (architecture space)
    num_steps         K, the steps sampled (timesteps space)
    timestep_power    K-of-M timestep spacing (i/K)^power (timesteps space)
so FORA, TGATE, evenly spaced per-component caching and cache-dit masks are points of it; those are
enqueued first (`study.enqueue_trial`) as the warm start.

Resume by JSON replay, no pickle: the state lists every trial Optuna was asked for (params, state,
values) in ask order; loading rebuilds an in-memory study with `add_trial` in that order, so trial
numbers and history are identical. Samplers are created fresh for each ask with a seed derived from
(seed, ask count), so the sampler's randomness is reproducible without serialising its internals.
Parameter sets that decode to an already-evaluated schedule are told its known values at once (no
evaluation); ones decoding to an inadmissible schedule are told as failed.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal, Mapping

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial
from pydantic import Field

from schedules import EvaluationResult, Schedule

from .base import Searcher, SearcherSettings
from .heuristics import CROSS_ATTENTION, warped_indices
from .space import with_history

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


class BayesSettings(SearcherSettings):
    sampler: Literal["tpe", "gp"] = "tpe"
    n_startup_trials: int = Field(10, ge=0, description="random trials before the model is used")
    multivariate: bool = Field(True, description="TPE: model parameters jointly")
    max_interval: int | None = Field(None, ge=1, description="largest refresh interval (default N-1)")
    warm_start: bool = True
    max_tries: int = Field(40, ge=1, description="asks per returned schedule before giving up (duplicates)")
    screen: int = Field(1, ge=1, description=(
        "sample this many trials per schedule sent and keep the one the quality surrogate "
        "(search.surrogate) predicts to add the most hypervolume; the others are told as pruned"))
    screen_after: int = Field(16, ge=4, description="results before the surrogate screens")


class BayesSearcher(Searcher):
    name = "bayes"
    Settings = BayesSettings
    quick_settings = {"n_startup_trials": 6}

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.distributions = self._distributions()
        self.trials: list[dict[str, Any]] = []          # {"params", "state", "values", "hash"}
        self.known: dict[str, list[float] | None] = {}  # hash -> objective values (None = failed)
        warm = self._warm_params() if self.settings.warm_start else []
        self.warm: list[dict[str, Any]] = [params for params, _ in warm]
        self.warm_labels: list[dict[str, Any]] = [label for _, label in warm]   # heuristic provenance per warm trial
        self.asks = 0
        self._predicted: dict[str, float] = {}
        self.study = self._new_study()

    # ------------------------------------------------------------------ the family
    def _distributions(self) -> dict[str, BaseDistribution]:
        n, sp = self.space.num_steps, self.space
        max_iv = min(self.settings.max_interval or (n - 1), max(1, n - 1))
        d: dict[str, BaseDistribution] = {}
        for g in sp.model.block_groups:
            if "cache" in sp.kinds:
                d[f"{g.name}.warmup"] = IntDistribution(0, max(0, n // 2))
                d[f"{g.name}.cooldown"] = IntDistribution(0, max(0, n // 4))
                d[f"{g.name}.block_from"] = IntDistribution(0, g.num_blocks - 1)
                d[f"{g.name}.block_to"] = IntDistribution(0, g.num_blocks - 1)
                serve = [m for m in sp.gene_modes if m != "1"]
                for c in g.components:
                    d[f"{g.name}.{c}.interval"] = IntDistribution(1, max_iv)
                    if len(serve) > 1:
                        d[f"{g.name}.{c}.serve"] = CategoricalDistribution(serve)
            if "architecture" in sp.kinds:
                d[f"{g.name}.skip_from"] = IntDistribution(0, g.num_blocks - 1)
                d[f"{g.name}.skip_count"] = IntDistribution(0, max(0, g.num_blocks // 2))
        if "timesteps" in sp.kinds:
            d["num_steps"] = IntDistribution(sp.min_steps, sp.max_steps)
            d["timestep_power"] = FloatDistribution(0.4, 2.5, log=True)
        return d

    def decode(self, params: Mapping[str, Any]) -> Schedule:
        sp = self.space
        indices = None
        if "timesteps" in sp.kinds:
            indices = warped_indices(len(sp.grid), int(params["num_steps"]), float(params["timestep_power"]))
        n = len(indices) if indices is not None else sp.num_steps
        masks: dict[tuple[str, str], list[list[Any]]] = {}
        for g in sp.model.block_groups:
            skipped: set[int] = set()
            if "architecture" in sp.kinds:
                start = int(params[f"{g.name}.skip_from"])
                skipped = set(range(start, min(g.num_blocks, start + int(params[f"{g.name}.skip_count"]))))
                if len(skipped) >= g.num_blocks:
                    skipped.discard(min(skipped))
            for c in g.components:
                serve = params.get(f"{g.name}.{c}.serve", sp.gene_modes[0])
                rows = []
                for s in range(1, n):
                    row = []
                    for b in range(g.num_blocks):
                        if b in skipped:
                            row.append("-")
                        else:
                            row.append("1" if self._computes(params, g.name, c, s, b, n) else serve)
                    rows.append(row)
                masks[(g.name, c)] = ["1" * g.num_blocks] + with_history(rows, g.num_blocks, sp.gene_modes[0])
        return Schedule.from_masks(sp.model, sp.base_sampling(indices), masks)

    def _computes(self, p: Mapping[str, Any], g: str, c: str, s: int, b: int, n: int) -> bool:
        if "cache" not in self.space.kinds:
            return True
        warm, cool = int(p[f"{g}.warmup"]), int(p[f"{g}.cooldown"])
        lo, hi = sorted((int(p[f"{g}.block_from"]), int(p[f"{g}.block_to"])))
        if s < warm or s >= n - cool or not lo <= b <= hi:
            return True
        return (s - warm) % int(p[f"{g}.{c}.interval"]) == 0

    def _warm_params(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """Heuristics as points of the family: FORA, TGATE, per-component caching, cache-dit masks,
        TaylorSeer-style forecasts; each with its heuristic provenance (`schedules.provenance`)."""
        sp, n = self.space, self.space.num_steps
        if "cache" not in sp.kinds:
            return []
        cross = CROSS_ATTENTION.get(sp.model.family, ())
        hi_iv = self.distributions[next(k for k in self.distributions if k.endswith(".interval"))].high

        def point(interval: Any, warmup: int = 0, fn: int = 0, bn: int = 0, serve: str | None = None) -> dict[str, Any]:
            p: dict[str, Any] = {}
            for g in sp.model.block_groups:
                p.update({f"{g.name}.warmup": min(warmup, n // 2), f"{g.name}.cooldown": 0,
                          f"{g.name}.block_from": min(fn, g.num_blocks - 1),
                          f"{g.name}.block_to": max(0, g.num_blocks - 1 - bn)})
                for c in g.components:
                    p[f"{g.name}.{c}.interval"] = min(hi_iv, max(1, interval(c)))
                    if f"{g.name}.{c}.serve" in self.distributions:
                        p[f"{g.name}.{c}.serve"] = serve or sp.gene_modes[0]
                if "architecture" in sp.kinds:
                    p.update({f"{g.name}.skip_from": 0, f"{g.name}.skip_count": 0})
            if "timesteps" in sp.kinds:
                p["timestep_power"] = 1.0
                p["num_steps"] = n
            return p

        def label(name: str, **params: Any) -> dict[str, Any]:
            return {"heuristic": name, "heuristic_params": params}

        out = [(point(lambda c, k=k: k), label("fora", interval=k)) for k in (2, 3, 4, 5) if k < n]
        if cross:
            out.append((point(lambda c: hi_iv if c in cross else 1, warmup=n // 2), label("tgate", gate_step=n // 2)))
        comps = sorted({c for g in sp.model.block_groups for c in g.components})
        out += [(point(lambda c, comp=comp: 2 if c == comp else 1), label("even-component", component=comp, interval=2))
                for comp in comps]
        out += [(point(lambda c, k=k: k, warmup=max(1, n // 5), fn=1, bn=0),
                 label("cache-dit-mask", Fn=1, Bn=0, warmup=max(1, n // 5), interval=k)) for k in (2, 3, 4)]
        for mode in sp.gene_modes[2:]:                                                    # TaylorSeer-style
            out += [(point(lambda c, k=k: k, warmup=2, serve=mode),
                     label(f"taylorseer-style ({mode})", interval=k, warmup=2)) for k in (2, 3, 4) if k < n]
        if "timesteps" in sp.kinds:       # uniform K steps, alone and with FORA-2
            for k in sorted({max(sp.min_steps, min(sp.max_steps, round(f * n))) for f in (0.5, 0.7)}):
                out += [({**point(lambda c: 1), "num_steps": k}, label("uniform-k", steps=k)),
                        ({**point(lambda c: 2), "num_steps": k}, label("uniform-k+fora", steps=k, interval=2))]
        return [(p, lab) for i, (p, lab) in enumerate(out) if p not in [q for q, _ in out[:i]]]

    def step(self) -> int:
        return len(self.trials)

    # ------------------------------------------------------------------ optuna plumbing
    def _new_study(self) -> optuna.Study:
        directions = ["maximize" if o.maximize else "minimize" for o in self.objectives]
        return optuna.create_study(directions=directions, sampler=self._sampler(0))

    def _sampler(self, salt: int, random_only: bool = False) -> optuna.samplers.BaseSampler:
        seed = (self.seed * 1_000_003 + salt) % (2 ** 32)
        if random_only:
            return optuna.samplers.RandomSampler(seed=seed)
        if self.settings.sampler == "gp":
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=self.settings.n_startup_trials)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.settings.n_startup_trials,
                                          multivariate=self.settings.multivariate)

    def _tell_trial(self, number: int, values: list[float] | None) -> None:
        rec = self.trials[number]
        if values is None:
            self.study.tell(number, state=TrialState.FAIL)
            rec["state"] = "fail"
        else:
            self.study.tell(number, values)
            rec["state"], rec["values"] = "complete", list(values)

    def _propose(self, n: int) -> list[Schedule]:
        out: list[Schedule] = []
        tries = 0
        while len(out) < n and tries < self.settings.max_tries * n:
            tries += 1
            origin: dict[str, Any] = {}
            if self.warm:
                self.study.enqueue_trial(self.warm.pop(0))
                origin = self.warm_labels.pop(0) if self.warm_labels else {}
            self.study.sampler = self._sampler(self.asks + 1, random_only=tries > self.settings.max_tries // 2)
            self.asks += 1
            trial = self.study.ask(self.distributions)
            schedule = self.decode(trial.params)
            self.trials.append({"params": dict(trial.params), "state": "running", "values": None,
                                "hash": schedule.hash})
            if not self.warm and self.settings.screen > 1:
                trial, schedule = self._screen(trial, schedule)
            if not self.space.admissible(schedule):
                self._tell_trial(trial.number, None)
            elif schedule.hash in self.known:
                self._tell_trial(trial.number, self.known[schedule.hash])
            elif schedule.hash in self._seen or any(o.hash == schedule.hash for o in out):
                pass   # in flight: told when its result arrives
            else:
                if schedule.hash in self._predicted:
                    origin = {**origin, f"predicted_{self.objectives.quality.name}":
                              round(self._predicted[schedule.hash], 4)}
                out.append(self.tag(schedule, trial=trial.number, **origin))
        if not out and not self._pending:
            self.finished = True
        return out

    def _screen(self, first: Any, schedule: Schedule) -> tuple[Any, Schedule]:
        """`screen` - 1 more trials; the surrogate keeps the one adding the most predicted
        hypervolume, the rest are told as pruned (Optuna keeps them out of its model)."""
        model = self._surrogate()
        if model is None:
            return first, schedule
        trials, schedules = [first], [schedule]
        for _ in range(self.settings.screen - 1):
            self.study.sampler = self._sampler(self.asks + 1)
            self.asks += 1
            t = self.study.ask(self.distributions)
            s = self.decode(t.params)
            self.trials.append({"params": dict(t.params), "state": "running", "values": None, "hash": s.hash})
            trials.append(t)
            schedules.append(s)
        usable = [i for i, s in enumerate(schedules) if self.space.admissible(s) and s.hash not in self.known
                  and s.hash not in self._seen]
        if not usable:
            return first, schedule
        front = [tuple(v) for v in self.known.values() if v is not None]
        front = [front[i] for i, keep in enumerate(self.objectives.front_mask(front)) if keep] if front else []
        picks = model.screen([schedules[i] for i in usable], [self.speedup(schedules[i]) for i in usable],
                             self.objectives, front, 1)
        best = usable[picks[0]]
        for i, t in enumerate(trials):
            if i != best:
                self.study.tell(t.number, state=TrialState.PRUNED)
                self.trials[t.number]["state"] = "pruned"
        self._predicted[schedules[best].hash] = float(model.predict([schedules[best]])[0])
        return trials[best], schedules[best]

    def _surrogate(self) -> Any:
        known = [(rec["params"], self.known[rec["hash"]]) for rec in self.trials
                 if rec["state"] == "complete" and self.known.get(rec["hash"]) is not None]
        if len(known) < self.settings.screen_after or not self.predicts_cost():
            return None
        from .surrogate import QualitySurrogate
        qi = self.objectives.index(self.objectives.quality.name)
        model = QualitySurrogate(self.objectives.quality, self.space.components(), self.space.num_steps)
        return model if model.fit([self.decode(p) for p, _ in known], [v[qi] for _, v in known]) else None

    def _observe(self, results: list[EvaluationResult]) -> None:
        for r in results:
            values = self.objectives.values(r)
            self.known[r.schedule.hash] = list(values) if values is not None else None
        for number, rec in enumerate(self.trials):
            if rec["state"] == "running" and rec["hash"] in self.known:
                self._tell_trial(number, self.known[rec["hash"]])

    # ------------------------------------------------------------------ state
    def _state(self) -> dict[str, Any]:
        return {"trials": self.trials, "known": self.known, "warm": self.warm, "warm_labels": self.warm_labels,
                "asks": self.asks, "predicted": self._predicted}

    def _load_state(self, extra: Mapping[str, Any]) -> None:
        self.trials = [dict(t) for t in extra["trials"]]
        self.known = {h: (list(v) if v is not None else None) for h, v in extra["known"].items()}
        self.warm = [dict(p) for p in extra["warm"]]
        self.warm_labels = [dict(p) for p in extra.get("warm_labels", [{}] * len(self.warm))]
        self.asks = int(extra["asks"])
        self._predicted = dict(extra.get("predicted", {}))
        self.study = self._new_study()
        states = {"running": TrialState.RUNNING, "complete": TrialState.COMPLETE, "fail": TrialState.FAIL,
                  "pruned": TrialState.PRUNED}
        for rec in self.trials:
            self.study.add_trial(create_trial(
                params=rec["params"], distributions=self.distributions, state=states[rec["state"]],
                values=rec["values"] if rec["state"] == "complete" else None))
