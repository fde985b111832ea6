"""ECAD: NSGA-II (DEAP) over the flattened genome (one gene per cell: its mode), in ask/tell form, duplicate-free, resumable.

A generation is: the offspring queue is asked out (in any batches), every offspring is told, then
`tools.selNSGA2` keeps the best `population` of parents + offspring and the next offspring are bred
(`selTournamentDCD` parents, k-point crossover within each genome segment, per-gene mutation to
another allowed mode: bit flips for a reuse-only space).
Offspring are bred all at once at the generation boundary and kept in the JSON state, so a study
resumed after any generation (or in the middle of one) asks exactly what an uninterrupted one would.
Failed evaluations simply do not survive.

Why a scoped global RNG: DEAP's operators draw from the module-level `random`; `_deap_rng` lends them
this searcher's own generator for the duration of the call, so the searcher's randomness is all in
its JSON state and other code's use of `random` cannot change the search.

Initial population: the extra seeds given (e.g. a DP front), the heuristic schedules (all of them, up
to `max_seeds`, even beyond the population: survival trims), then mutations of those (ECAD's
seeding) up to the population size; random genomes only if there is nothing to seed.

Provenance (`schedules.provenance`): every offspring entry keeps where it came from, so a stored
result says "fora(interval=2) (as ecad generation 0)" for a seeded heuristic and "ecad generation 3:
crossover, mutation of 3fa9c0d1 x 77ab12cd" for a bred child (its parents' schedule hashes).
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

from deap import base as deap_base
from deap import tools
from pydantic import Field

from schedules import EvaluationResult, Schedule

from .base import Searcher, SearcherSettings
from .heuristics import space_heuristics


#: Provenance a seed or heuristic keeps in generation 0 (what it is, where it came from).
_KEPT = ("heuristic", "heuristic_params", "seed_from", "imported_from")


class EcadSettings(SearcherSettings):
    population: int = Field(72, ge=4, description="NSGA-II population (ECAD: 72)")
    crossover_prob: float = Field(0.9, ge=0, le=1, description="probability a pair is crossed (ECAD: 0.9)")
    crossover_points: int = Field(4, ge=1, description="k of k-point crossover (ECAD: 4)")
    mutation_prob: float = Field(1.0, ge=0, le=1, description="probability an offspring is mutated")
    mutation_flips: float = Field(2.0, gt=0, description="expected bits flipped by one mutation (light)")
    step_mutation_prob: float = Field(0.3, ge=0, le=1, description=(
        "probability an offspring also gets a whole step set to compute-all or reuse-all "
        "(coherent reuse; 0 = ECAD's operators only)"))
    seed_flips: float = Field(0.03, gt=0, lt=1, description="fraction of bits flipped when mutating seeds")
    generations: int | None = Field(None, ge=0, description="offspring generations (None: until the budget ends)")
    include_heuristics: bool = True
    max_seeds: int = Field(64, ge=0, description="seeds (given + heuristics) evaluated in generation 0 even "
                                                 "beyond the population; NSGA-II survival then trims")
    max_tries: int = Field(50, ge=1, description="re-mutations before a duplicate child is replaced by a random one")
    screen: float = Field(1.0, ge=1.0, description=(
        "breed this many times the population and send only the offspring the quality surrogate "
        "(search.surrogate) predicts to add the most hypervolume; 1 = no screening (ECAD)"))
    screen_after: int = Field(16, ge=4, description="told results before the surrogate screens")


class _Fitness(deap_base.Fitness):
    weights = (-1.0, -1.0)   # values are in the minimised convention; resized per study


_FITNESS: dict[int, type] = {}


class _Individual(list):
    def __init__(self, genome: list[int], values: tuple[float, ...] | None = None, n_obj: int = 2):
        super().__init__(genome)
        fit = _FITNESS.setdefault(n_obj, type(f"Fitness{n_obj}", (_Fitness,), {"weights": (-1.0,) * n_obj}))
        self.fitness = fit(values) if values is not None else fit()


@contextmanager
def _deap_rng(rng: random.Random) -> Iterator[None]:
    saved = random.getstate()
    random.setstate(rng.getstate())
    try:
        yield
    finally:
        rng.setstate(random.getstate())
        random.setstate(saved)


def segmented_crossover(a: list[int], b: list[int], segments: list[tuple[int, int]], points: int,
                        rng: random.Random) -> tuple[list[int], list[int]]:
    """k-point crossover (ECAD uses 4 points) inside each genome segment (cache plan, timestep choice,
    kept blocks) on its own: a cut never splices one parent's cache bits onto the other's timestep
    bits, and every segment mixes, however short it is next to the cache plan. Children are copies."""
    a, b = list(a), list(b)
    for lo, hi in segments:
        k = min(points, hi - lo - 1)
        if k < 1:
            continue
        cuts = [c + lo for c in sorted(rng.sample(range(1, hi - lo), k))] + [hi]
        start, swap = lo, False
        for cut in cuts:
            if swap:
                a[start:cut], b[start:cut] = b[start:cut], a[start:cut]
            start, swap = cut, not swap
    return a, b


def _bits(genome: list[int]) -> str:
    """Genes as one digit each (values < 10: the mode table is far smaller); reuse-only genomes are
    the bit strings of earlier states."""
    return "".join(str(int(v)) for v in genome)


def _genome(bits: str) -> list[int]:
    return [int(ch) for ch in bits]


class EcadSearcher(Searcher):
    name = "ecad"
    Settings = EcadSettings
    quick_settings = {"population": 12}

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.generation = 0
        self.population: list[dict[str, Any]] = []       # {"bits", "values"}
        self.offspring: list[dict[str, Any]] = []        # {"bits", "hash", "values", "told"} in breed order
        self.queue: list[int] = []                       # indices into offspring not yet asked
        self.told: list[list[Any]] = []                  # [bits, quality] of every result told, for the surrogate
        self._predicted: dict[str, float] = {}           # hash -> the surrogate's quality, for provenance
        self._started = False

    def step(self) -> int:
        return self.generation

    # ------------------------------------------------------------------ ask / tell
    def _propose(self, n: int) -> list[Schedule]:
        if not self._started:
            self._start()
        out: list[Schedule] = []
        while self.queue and len(out) < n:
            entry = self.offspring[self.queue.pop(0)]
            schedule = self.space.decode(_genome(entry["bits"]))
            if self.fresh(schedule, out):
                origin = dict(entry.get("origin", {}))
                predicted = self._predicted.get(schedule.hash)
                if predicted is not None:
                    origin[f"predicted_{self.objectives.quality.name}"] = round(predicted, 4)
                out.append(self.tag(schedule, generation=self.generation, **origin))
            else:   # became a duplicate (e.g. a seed given twice): drop it from this generation
                entry["told"], entry["values"] = True, None
        if not out and not self._pending:
            self._maybe_advance()
            if self.queue and not self.finished:
                return self._propose(n)
        return out

    def _observe(self, results: list[EvaluationResult]) -> None:
        by_hash = {e["hash"]: e for e in self.offspring}
        for r in results:
            entry = by_hash.get(r.schedule.hash)
            if entry is not None and not entry["told"]:
                values = self.objectives.values(r)
                entry["values"] = list(self.objectives.minimised(values)) if values is not None else None
                entry["told"] = True
                if values is not None:
                    self.told.append([entry["bits"], float(values[self.objectives.index(self.objectives.quality.name)])])
        self._maybe_advance()

    # ------------------------------------------------------------------ generations
    def _start(self) -> None:
        self._started = True
        self._set_offspring(*self._initial_genomes())

    def _maybe_advance(self) -> None:
        if self.queue or not all(e["told"] for e in self.offspring):
            return
        n_obj = len(self.objectives)
        pool = [_Individual(_genome(p["bits"]), tuple(p["values"]), n_obj) for p in self.population]
        pool += [_Individual(_genome(e["bits"]), tuple(e["values"]), n_obj)
                 for e in self.offspring if e["values"] is not None]
        mu = self.settings.population
        survivors = tools.selNSGA2(pool, min(mu, len(pool))) if pool else []
        self.population = [{"bits": _bits(ind), "values": list(ind.fitness.values)} for ind in survivors]
        gens = self.settings.generations
        if gens is not None and self.generation >= gens:
            self.finished = True
            self.offspring = []
            return
        self.generation += 1
        self._set_offspring(*self._screened(survivors))
        if not self.queue:
            self.finished = True

    def _set_offspring(self, genomes: list[list[int]], origins: list[dict[str, Any]]) -> None:
        self.offspring = [{"bits": _bits(g), "hash": self.space.decode(g).hash, "values": None, "told": False,
                           "origin": origin} for g, origin in zip(genomes, origins)]
        self.queue = list(range(len(self.offspring)))

    def _hash(self, genome: list[int]) -> str:
        return self.space.decode(genome).hash

    def _initial_genomes(self) -> tuple[list[list[int]], list[dict[str, Any]]]:
        """Generation 0 and where each member came from: a seed or heuristic keeps its own
        provenance (its `heuristic`, `seed_from`), a mutation of one names it as parent."""
        mu, space = self.settings.population, self.space
        base = []
        origins: list[dict[str, Any]] = []
        taken: set[str] = set()

        def add(items: list[Schedule], cap: int) -> None:
            for s in items:
                if self.fresh(s) and s.hash not in taken and len(base) < cap:
                    base.append(space.encode(s))
                    origins.append({k: v for k, v in s.provenance.items() if k in _KEPT})
                    taken.add(s.hash)

        seats = max(mu, self.settings.max_seeds)     # generation 0 may exceed the population: survival trims
        add(list(self.seeds), seats)
        if self.settings.include_heuristics:
            items = [s for s in space_heuristics(space) if self.fresh(s) and s.hash not in taken]
            room = seats - len(base)
            if len(items) > room > 0:     # evenly strided, so every heuristic family keeps a seat
                items = [items[round(i * (len(items) - 1) / max(1, room - 1))] for i in range(room)]
            add(items, seats)
        out = list(base)
        indpb = self.settings.seed_flips
        while len(out) < mu:
            parent = list(base[len(out) % len(base)]) if base else space.random_genome(self.rng)
            child = self._unique(self._mutate(parent, indpb) if base else parent, taken, indpb)
            if child is None:
                break
            origins.append({"parents": [self._hash(parent)], "operators": ["mutation"]} if base
                           else {"operators": ["random"]})
            out.append(child)
            taken.add(space.decode(child).hash)
        return out, origins

    def _screened(self, parents: list[_Individual]) -> tuple[list[list[int]], list[dict[str, Any]]]:
        """The next offspring: bred, and with `screen` > 1 bred `screen` times over and cut back to
        the population by the quality surrogate (their costs are known before any image)."""
        mu, s = self.settings.population, self.settings
        surrogate = self._surrogate() if s.screen > 1 else None
        if surrogate is None:
            return self._breed(parents, mu)
        many, origins = self._breed(parents, int(round(mu * s.screen)))
        schedules = [self.space.decode(g) for g in many]
        costs = [self.speedup(x) for x in schedules]
        # minimised values back to natural units: the convention is self-inverse (a sign per objective)
        front = [tuple(self.objectives.minimised(p["values"])) for p in self.population]
        keep = surrogate.screen(schedules, costs, self.objectives, front, mu)
        predicted = surrogate.predict([schedules[i] for i in keep])
        self._predicted = {schedules[i].hash: float(q) for i, q in zip(keep, predicted)}
        return [many[i] for i in keep], [{**origins[i], "screened": True} for i in keep]

    def _surrogate(self) -> Any:
        if len(self.told) < self.settings.screen_after or not self.predicts_cost():
            return None
        from .surrogate import QualitySurrogate
        model = QualitySurrogate(self.objectives.quality, self.space.components(), self.space.num_steps)
        ok = model.fit([self.space.decode(_genome(b)) for b, _ in self.told], [q for _, q in self.told])
        return model if ok else None

    def _breed(self, parents: list[_Individual], lam: int | None = None
               ) -> tuple[list[list[int]], list[dict[str, Any]]]:
        """The next offspring and how each was made: its parents' hashes and the operators applied."""
        s = self.settings
        lam = lam or s.population
        if not parents:
            return [], []
        chosen: list[list[int]] = []
        with _deap_rng(self.rng):
            usable = parents[:len(parents) // 4 * 4]
            while len(chosen) < lam:
                if len(usable) >= 4:
                    chosen += [list(p) for p in tools.selTournamentDCD(usable, len(usable))]
                else:
                    chosen += [list(random.choice(parents)) for _ in range(lam)]
        chosen = chosen[:lam]
        indpb = min(0.5, s.mutation_flips / max(1, self.space.length))
        children: list[list[int]] = []
        made: list[dict[str, Any]] = []
        for i in range(0, len(chosen) - 1, 2):
            a, b = chosen[i], chosen[i + 1]
            pair = [self._hash(a), self._hash(b)]
            if self.rng.random() < s.crossover_prob:
                a, b = self._crossover(a, b)
                made += [{"parents": pair, "operators": ["crossover"]}, {"parents": pair, "operators": ["crossover"]}]
            else:
                made += [{"parents": pair[:1], "operators": []}, {"parents": pair[1:], "operators": []}]
            children += [a, b]
        if len(chosen) % 2:
            children.append(chosen[-1])
            made.append({"parents": [self._hash(chosen[-1])], "operators": []})
        taken: set[str] = set()
        out, origins = [], []
        for child, origin in zip(children, made):
            ops = list(origin["operators"])
            if self.rng.random() < s.mutation_prob:
                child = self._mutate(child, indpb)
                ops.append("mutation")
            if self.rng.random() < s.step_mutation_prob:
                child = self._step_mutate(child)
                ops.append("step-mutation")
            before = self.space.repair(child, self.rng)
            child = self._unique(before, taken, indpb)
            if child is not None:
                if child != before and "mutation" not in ops:
                    ops.append("mutation")             # re-mutated until new (or, last resort, random)
                out.append(child)
                origins.append({"parents": origin["parents"], "operators": ops or ["copy"]})
                taken.add(self.space.decode(child).hash)
        return out, origins

    def _crossover(self, a: list[int], b: list[int]) -> tuple[list[int], list[int]]:
        a, b = segmented_crossover(a, b, self.space.segments(), self.settings.crossover_points, self.rng)
        return self.space.repair(a, self.rng), self.space.repair(b, self.rng)

    def _mutate(self, genome: list[int], indpb: float) -> list[int]:
        """Each gene changes with probability `indpb` to another of its values (a bit flip for binary
        genes, another allowed mode for a cache cell): DEAP's mutFlipBit, made categorical."""
        ind = list(genome)
        for i in range(len(ind)):
            if self.rng.random() < indpb:
                self.space.mutate_gene(ind, i, self.rng)
        return self.space.repair(ind, self.rng)

    def _step_mutate(self, genome: list[int]) -> list[int]:
        """Set every slot of one random step to one mode (compute, reuse, a forecast...): whole-step
        (coherent) reuse is much kinder to quality than the same number of scattered reuses, and
        single-gene mutations rarely assemble it."""
        slots = self.space.step_slots(self.rng.randrange(1, max(2, self.space.active_steps(genome))))
        if slots:
            value = self.rng.randrange(len(self.space.gene_modes))
            genome = list(genome)
            for i in slots:
                genome[i] = value
        return genome

    def _unique(self, genome: list[int], taken: set[str], indpb: float) -> list[int] | None:
        """The genome, re-mutated until it is new and admissible; a random one as a last resort."""
        for attempt in range(self.settings.max_tries + 10):
            s = self.space.decode(genome)
            if self.fresh(s) and s.hash not in taken:
                return genome
            genome = (self._mutate(genome, indpb * (1 + attempt)) if attempt < self.settings.max_tries
                      else self.space.random_genome(self.rng))
        return None

    # ------------------------------------------------------------------ state
    def _state(self) -> dict[str, Any]:
        return {"generation": self.generation, "started": self._started, "population": self.population,
                "offspring": self.offspring, "queue": self.queue, "told": self.told,
                "predicted": getattr(self, "_predicted", {})}

    def _load_state(self, extra: Mapping[str, Any]) -> None:
        self.generation = int(extra["generation"])
        self._started = bool(extra["started"])
        self.population = [dict(p) for p in extra["population"]]
        self.offspring = [dict(e) for e in extra["offspring"]]
        self.queue = list(extra["queue"])
        self.told = [list(t) for t in extra.get("told", [])]
        self._predicted = dict(extra.get("predicted", {}))
