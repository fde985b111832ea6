"""Search mechanics on the synthetic pool (an analytic quality, for mechanics only): the space and its
genome, heuristics, every searcher through the real loop and a real SQLite store, resume equivalence,
no duplicate evaluations, budgets, failures."""

from __future__ import annotations

import random

import pytest

from schedules import Schedule
from search.config import validate_config
from search.heuristics import space_heuristics, warped_indices
from schedules.objectives import Objective, Objectives
from search.space import SearchSpace, fine_grid
from search.registry import SEARCHERS
from search.study import run_study
from search.synthetic import SyntheticPool

OBJ = Objectives([Objective("quality", reference=0.0), Objective("mac_speedup", reference=1.0)])
SETTINGS = {name: cls.quick_settings for name, cls in SEARCHERS.items()}   # each searcher's tiny-study settings


# --------------------------------------------------------------------------- space and heuristics
def test_genome_round_trip_in_every_space_combination():
    pool = SyntheticPool(num_blocks=3, num_steps=6)
    grid = fine_grid(12)
    rng = random.Random(0)
    for kinds in (("cache",), ("timesteps",), ("architecture",), ("cache", "timesteps", "architecture")):
        space = SearchSpace(pool.spec, pool.sampling, kinds, grid)
        for _ in range(20):
            genome = space.random_genome(rng)
            s = space.decode(genome)
            # cache bits under a skip, and rows past the schedule's own steps, are free (hidden genes)
            assert space.encode(s) == genome or kinds != ("cache",) and kinds != ("timesteps",)
            assert space.decode(space.encode(s)).hash == s.hash
            assert space.encode(space.decode(space.encode(s))) == space.encode(s)
            assert all(set(row) <= {"1"} for g, c in s.components() for row in s.rows(g, c)[:1])
            if "timesteps" in kinds:
                assert space.min_steps <= s.num_steps <= space.max_steps == 6
                assert len(s.sampling.timesteps) == s.num_steps and s.sampling.timesteps[0] == grid[0]
            else:
                assert s.num_steps == 6


def test_min_change_constraint_excludes_the_baseline():
    pool = SyntheticPool(num_blocks=2, num_steps=4)
    space = SearchSpace(pool.spec, pool.sampling, min_changes=3)
    assert not space.admissible(space.baseline())
    bits = space.baseline_genome()
    bits[0] = bits[1] = 0
    assert not space.admissible(space.decode(bits))
    bits[2] = 0
    assert space.admissible(space.decode(bits))


def test_architecture_space_skips_whole_blocks_and_keeps_one():
    pool = SyntheticPool(num_blocks=3, num_steps=4)
    space = SearchSpace(pool.spec, pool.sampling, ("architecture",))
    s = space.decode(space.repair([0, 0, 0], random.Random(0)))
    skipped = [b for b in range(3) if s.rows("transformer_blocks", "ff")[1][b] == "-"]
    assert len(skipped) == 2
    assert all(s.rows("transformer_blocks", c)[0] == "111" for c in ("attn1", "attn2", "ff"))


def test_heuristics_cover_every_family_and_are_admissible_and_unique():
    pool = SyntheticPool(num_blocks=6, num_steps=20)
    space = SearchSpace(pool.spec, pool.sampling)
    items = space_heuristics(space)
    labels = {s.provenance["heuristic"] for s in items}
    assert labels == {"fora", "tgate", "delta-dit", "toca-static", "even-component", "cache-dit-mask", "fora-warmup"}
    forecasting = SearchSpace(pool.spec, pool.sampling, modes=("1", "0", "F", "D"))
    more = {s.provenance["heuristic"] for s in space_heuristics(forecasting)} - labels
    assert more == {"taylorseer", "taylorseer-damped"}, "forecast heuristics only where the space allows them"
    assert len({s.hash for s in items}) == len(items)
    assert all(space.admissible(s) for s in items)
    fora3 = next(s for s in items
                 if s.provenance["heuristic"] == "fora" and s.provenance["heuristic_params"]["interval"] == 3)
    assert [row[0] for row in fora3.rows("transformer_blocks", "attn1")][:7] == list("1001001")
    tgate = next(s for s in items if s.provenance["heuristic"] == "tgate")
    k = tgate.provenance["heuristic_params"]["gate_step"]
    attn2 = tgate.rows("transformer_blocks", "attn2")
    assert all(set(r) == {"1"} for r in attn2[:k + 1]) and all(set(r) == {"0"} for r in attn2[k + 1:])


def test_warped_indices_are_valid():
    for m, k in ((40, 20), (20, 20), (30, 7)):
        for p in (0.4, 1.0, 2.5):
            idx = warped_indices(m, k, p)
            assert len(idx) == k and idx[0] == 0 and idx == sorted(set(idx)) and idx[-1] < m


# --------------------------------------------------------------------------- searchers through the loop
def _config(name: str, n: int, seed: int = 0, **extra):
    doc = {"study": f"s-{name}", "synthetic": {"num_blocks": 4, "num_steps": 8},
           "searcher": {"name": name, "seed": seed, "settings": SETTINGS[name]}, "budget": {"evaluations": n}}
    doc.update(extra)
    return validate_config(doc)


class InterruptingPool(SyntheticPool):
    """Raises KeyboardInterrupt (a user's Ctrl-C) when asked for its `stop_at`-th evaluation."""

    def __init__(self, stop_at: int, **kwargs):
        super().__init__(**kwargs)
        self.stop_at = stop_at

    def evaluate(self, schedules):
        for result in super().evaluate(schedules):
            if len(self.evaluated) == self.stop_at:
                raise KeyboardInterrupt
            yield result


def _front(db, study):
    from store import Store
    with Store(f"sqlite:///{db}") as store:
        return sorted(r.schedule_hash for r in store.front(study, "quality", "mac_speedup"))


def test_ecad_generations_and_seeding(tmp_path):
    pool = SyntheticPool(num_blocks=4, num_steps=8)
    space = SearchSpace(pool.spec, pool.sampling)
    searcher = SEARCHERS["ecad"](space, OBJ, {"population": 12, "generations": 3})
    first = searcher.ask(100)
    heuristic = {s.hash for s in space_heuristics(space)}
    assert {s.hash for s in first} == heuristic                  # generation 0: every heuristic
    assert searcher.ask(5) == []                                 # waits for the generation's results
    searcher.tell(list(pool.evaluate(first)))
    assert len(searcher.population) == 12                       # survival trims to the population
    while not searcher.finished:
        batch = searcher.ask(7)
        searcher.tell(list(pool.evaluate(batch)))
    assert searcher.generation == 3 and len(pool.evaluated) == len(heuristic) + 36 == len(set(pool.evaluated))
    assert len(searcher.population) == 12


def test_ecad_and_bayes_beat_random_on_the_synthetic_objective(tmp_path):
    hv = {}
    for name in ("random", "ecad", "bayes"):
        cfg = _config(name, 96, seed=3)
        _, out = run_study(cfg, db=str(tmp_path / f"{name}.db"), show_progress=False,
                           pool=SyntheticPool(num_blocks=4, num_steps=8), log=lambda m: None)
        hv[name] = out.hypervolume
    assert hv["ecad"] > hv["random"] and hv["bayes"] > hv["random"], hv


def test_failed_evaluations_are_stored_and_searched_past(tmp_path):
    probe = SyntheticPool(num_blocks=4, num_steps=8)
    space = SearchSpace(probe.spec, probe.sampling)
    bad = {s.hash for s in space_heuristics(space)[:5]}
    pool = SyntheticPool(num_blocks=4, num_steps=8, fail_hashes=bad)
    cfg = validate_config({**_config("ecad", 40).model_dump(exclude={"evaluation"}),
                           "searcher": {"name": "ecad", "settings": {"population": 32}}})   # seats every heuristic
    _, out = run_study(cfg, db=str(tmp_path / "f.db"), show_progress=False, pool=pool, log=lambda m: None)
    assert out.evaluations == 40
    from store import Store
    with Store(f"sqlite:///{tmp_path / 'f.db'}") as store:
        failed = store.evaluations(cfg.study, "failed")
    assert {r.schedule_hash for r in failed} == bad


def test_evaluator_seconds_budget_counts_worker_time(tmp_path):
    """Each evaluation takes exactly 0.0625 worker-seconds on the pool's (injected) clock, so a 0.25 s
    budget is exactly 4 evaluations, however busy the machine."""
    now = [1000.0]

    def clock() -> float:   # every reading is 0.0625 s after the last: start -> finish of one evaluation
        now[0] += 0.0625
        return now[0]
    cfg = _config("random", 1000, budget={"evaluations": 1000, "evaluator_seconds": 0.25})
    pool = SyntheticPool(num_blocks=4, num_steps=8, clock=clock)
    _, out = run_study(cfg, db=str(tmp_path / "t.db"), show_progress=False, pool=pool, log=lambda m: None)
    assert out.reason == "budget: evaluator seconds" and out.evaluations == 4


def test_seeding_ecad_from_a_dp_study_front(tmp_path):
    db = str(tmp_path / "seed.db")
    dp = _config("dp", 30)
    run_study(dp, db=db, show_progress=False, pool=SyntheticPool(num_blocks=4, num_steps=8), log=lambda m: None)
    from store import Store
    with Store(f"sqlite:///{db}") as store:
        dp_front = {r.schedule_hash for r in store.front(dp.study)}
    cfg = _config("ecad", 12, seed_studies=[dp.study])
    pool = SyntheticPool(num_blocks=4, num_steps=8)
    _, out = run_study(cfg, db=db, show_progress=False, pool=pool, log=lambda m: None)
    assert not set(pool.evaluated) & dp_front          # the DP front came in with its results: no re-evaluation
    assert out.evaluations == len(pool.evaluated) == 12
    with Store(f"sqlite:///{db}") as store:
        imported = [r for r in store.evaluations(cfg.study) if r.provenance.get("imported_from") == dp.study]
        assert {r.schedule_hash for r in imported} == dp_front
        ecad_front = {r.schedule_hash for r in store.front(cfg.study)}
    assert ecad_front & dp_front                         # the seeds are part of the study's front


def test_bayes_gp_sampler_runs():
    pool = SyntheticPool(num_blocks=2, num_steps=5)
    space = SearchSpace(pool.spec, pool.sampling)
    searcher = SEARCHERS["bayes"](space, OBJ, {"sampler": "gp", "n_startup_trials": 3, "warm_start": False}, seed=0)
    for _ in range(5):
        searcher.tell(list(pool.evaluate(searcher.ask(1))))
    assert len(pool.evaluated) == 5 and len(set(pool.evaluated)) == 5


def test_timesteps_space_end_to_end(tmp_path):
    cfg = _config("ecad", 24, space={"kinds": ["cache", "timesteps"], "fine_steps": 16})
    _, out = run_study(cfg, db=str(tmp_path / "ts.db"), show_progress=False, log=lambda m: None)
    assert out.evaluations == 24
    assert all(isinstance(r.schedule, Schedule) and r.schedule.sampling.timesteps for r in out.front)


# ------------------------------------------------------------------------------------------ progress
def test_eta_comes_from_the_budget():
    from search.loop import Budget, budget_eta
    kw = dict(evaluations=10, evaluated_now=4, run_seconds=40.0, wall_time_s=100.0, evaluator_seconds=30.0,
              evaluator_seconds_now=20.0)
    assert budget_eta(Budget(evaluations=30), **kw) == pytest.approx(200.0)        # 20 left x 10 s
    assert budget_eta(Budget(evaluations=30, wall_time_s=160.0), **kw) == pytest.approx(60.0)
    assert budget_eta(Budget(evaluator_seconds=50.0), **kw) == pytest.approx(40.0)  # 20 s left at 2 s/s
    assert budget_eta(Budget(evaluations=30), **{**kw, "evaluated_now": 0}) is None  # nothing to go on yet
    assert budget_eta(Budget(wall_time_s=600.0), **{**kw, "evaluated_now": 0}) == pytest.approx(500.0)
    assert budget_eta(Budget(evaluations=5), **kw) == 0.0


def test_progress_prints_plain_throttled_lines_when_not_a_terminal():
    import io

    from rich.console import Console

    from search.progress import SearchProgress, StartupProgress
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    now = [0.0]
    startup = StartupProgress(True, console, log_every_s=10.0, clock=lambda: now[0])
    for done in (0, 1, 2, 3):
        now[0] += 4.0
        startup("all-compute references (pairs)", done, 3)
    startup("timing the all-compute pipeline (calls)", 0, 1)
    startup.close()
    progress = SearchProgress(6, "s [ecad]", True, console, log_every_s=10.0, clock=lambda: now[0])
    with progress:
        for done in range(1, 7):
            now[0] += 3.0
            progress.update(done, 2, 1.5, "best psnr 30", eta_s=3.0 * (6 - done))
    lines = [ln.split(" ", 1)[1] for ln in out.getvalue().splitlines()]
    assert lines == [
        "all-compute references (pairs) 0/3",            # first line of a phase (1/3, 2/3: < 10 s later)
        "all-compute references (pairs) 3/3",            # the end of a phase
        "timing the all-compute pipeline (calls) 0/1",   # a new phase
        "s [ecad]: 1/6 evaluations, front 2, HV 1.5, ETA 0:00:15 · best psnr 30",   # then 12 s later:
        "s [ecad]: 5/6 evaluations, front 2, HV 1.5, ETA 0:00:03 · best psnr 30",
        "s [ecad]: 6/6 evaluations, front 2, HV 1.5, ETA 0:00:00 · best psnr 30",
    ]
    assert "\x1b[" not in out.getvalue()


# --------------------------------------------------------------------------- the joint space
JOINT = {"kinds": ["cache", "timesteps", "architecture"], "fine_steps": 8, "min_steps": 4}


def _joint_pool(cls=SyntheticPool, **kwargs):
    return cls(num_blocks=3, num_steps=8, grid=fine_grid(8), **kwargs)


def _evaluated(db, study):
    from store import Store
    with Store(f"sqlite:///{db}") as store:
        return [r.schedule for r in store.results(study)]


@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_every_searcher_searches_cache_timesteps_and_architecture_jointly(tmp_path, name):
    from search.study import make_space
    pool = _joint_pool()
    cfg = _config(name, 48, space=JOINT)
    run_study(cfg, db=str(tmp_path / "j.db"), show_progress=False, pool=pool, log=lambda m: None)
    space = make_space(cfg, pool)
    schedules = _evaluated(tmp_path / "j.db", cfg.study)
    assert schedules and len(pool.evaluated) == len(set(pool.evaluated))
    for s in schedules:
        space.check(s)                                   # every ask is a point of the joint space
        assert space.admissible(s)
    assert any(s.num_steps < 8 and s.compute_fraction() < 1 for s in schedules), "fewer steps, and reuse or skips"
    few = [s for s in schedules if s.num_steps < 8]
    assert all(s.provenance["reference_steps"] == 8 for s in few)


@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_joint_space_study_resumed_equals_uninterrupted(tmp_path, name):
    cfg = _config(name, 30, space=JOINT)
    full = _joint_pool()
    run_study(cfg, db=str(tmp_path / "a.db"), show_progress=False, pool=full, log=lambda m: None)
    first = _joint_pool(InterruptingPool, stop_at=11)
    run_study(cfg, db=str(tmp_path / "b.db"), show_progress=False, pool=first, log=lambda m: None)
    second = _joint_pool()
    run_study(cfg, db=str(tmp_path / "b.db"), resume=cfg.study, show_progress=False, pool=second, log=lambda m: None)
    assert first.evaluated[:10] + second.evaluated == full.evaluated


def test_fewer_steps_cost_quality_and_count_as_speedup():
    pool = _joint_pool()
    space = SearchSpace(pool.spec, pool.sampling, ("timesteps",), fine_grid(8), min_steps=4)
    results = {k: next(pool.evaluate([Schedule.all_compute(pool.spec, space.base_sampling(space.default_indices(k)))]))
               for k in (4, 8)}
    assert results[4].mac_speedup == pytest.approx(results[8].mac_speedup * 2) and results[8].mac_speedup == 1.0
    assert results[4].metrics["quality"] < results[8].metrics["quality"]


def test_segmented_crossover_mixes_every_segment_and_never_crosses_their_borders():
    from search.ecad import segmented_crossover
    segments = [(0, 12), (12, 19), (19, 23)]
    rng = random.Random(1)
    for _ in range(20):
        a, b = segmented_crossover([0] * 23, [1] * 23, segments, 4, rng)
        assert [x + y for x, y in zip(a, b)] == [1] * 23                  # each bit from one parent
        for lo, hi in segments:
            assert set(a[lo:hi]) == {0, 1} and a[lo] == 0                  # every segment mixes, from its start
    one = segmented_crossover(list(range(10)), list(range(10, 20)), [(0, 10)], 4, random.Random(5))
    rng = random.Random(5)
    cuts = sorted(rng.sample(range(1, 10), 4)) + [10]                      # one segment: ECAD's k-point
    expected, start, swap = list(range(10)), 0, False
    for cut in cuts:
        if swap:
            expected[start:cut] = list(range(10 + start, 10 + cut))
        start, swap = cut, not swap
    assert one[0] == expected


def test_uniform_step_heuristics_per_kind():
    pool = SyntheticPool(num_blocks=5, num_steps=20)
    grid = fine_grid(20)
    for kinds, labels in ((("timesteps",), {"uniform-k"}),
                          (("cache", "timesteps"), {"uniform-k", "uniform-k+fora"}),
                          (("cache", "timesteps", "architecture"),
                           {"uniform-k", "uniform-k+fora", "uniform-k+skip-deep", "uniform-k+fora+skip-deep"})):
        space = SearchSpace(pool.spec, pool.sampling, kinds, grid)
        items = [s for s in space_heuristics(space) if s.provenance["heuristic"].startswith("uniform-k")]
        assert {s.provenance["heuristic"] for s in items} == labels
        for label in labels:
            assert sorted(s.num_steps for s in items if s.provenance["heuristic"] == label) == list(range(8, 20))
        ten = next(s for s in items if s.provenance["heuristic"] == "uniform-k" and s.num_steps == 10)
        assert ten.sampling.timesteps == grid[::2]                          # the scheduler's own 10 steps


def test_bayes_searches_the_step_count():
    pool = SyntheticPool(num_blocks=2, num_steps=8, grid=fine_grid(8))
    space = SearchSpace(pool.spec, pool.sampling, ("cache", "timesteps"), fine_grid(8), min_steps=3)
    searcher = SEARCHERS["bayes"](space, OBJ, {"n_startup_trials": 4}, seed=0)
    assert "num_steps" in searcher.distributions
    steps = set()
    for _ in range(12):
        batch = searcher.ask(2)
        steps |= {s.num_steps for s in batch}
        searcher.tell(list(pool.evaluate(batch)))
    assert len(steps) >= 3 and min(steps) < 8


FORECASTING = {"kinds": ["cache"], "modes": ["1", "0", "F", "D"]}


@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_every_searcher_speaks_the_whole_alphabet(tmp_path, name):
    """With forecasts allowed, every searcher's asks are valid plans of the space, some use the
    forecast modes, and none repeats; resume is still exact."""
    from search.study import make_space
    own = {"ecad": {"population": 12, "include_heuristics": False}, "dp": {"candidates": 10, "max_heuristics": 4}}
    cfg = _config(name, 40, space=FORECASTING)
    if name in own:   # leave room for the searcher's own proposals next to its heuristic seeds
        cfg = validate_config({**cfg.model_dump(exclude_none=True),
                               "searcher": {"name": name, "seed": 0, "settings": own[name]}})
    pool = SyntheticPool(num_blocks=4, num_steps=8)
    run_study(cfg, db=str(tmp_path / "f.db"), show_progress=False, pool=pool, log=lambda m: None)
    space = make_space(cfg, pool)
    schedules = _evaluated(tmp_path / "f.db", cfg.study)
    assert len(pool.evaluated) == len(set(pool.evaluated))
    used = set()
    for s in schedules:
        space.check(s)
        if name == "heuristics" or "heuristic" not in s.provenance:   # the searcher's own proposals
            used |= {ch for g, c in s.components() for row in s.rows(g, c) for ch in row}
    assert used & {"F", "D"}, f"{name} never proposed a forecast cell of its own"
    first = InterruptingPool(11, num_blocks=4, num_steps=8)
    run_study(cfg, db=str(tmp_path / "g.db"), show_progress=False, pool=first, log=lambda m: None)
    second = SyntheticPool(num_blocks=4, num_steps=8)
    run_study(cfg, db=str(tmp_path / "g.db"), resume=cfg.study, show_progress=False, pool=second, log=lambda m: None)
    assert first.evaluated[:10] + second.evaluated == pool.evaluated


def test_categorical_genome_round_trip_and_history_repair():
    pool = SyntheticPool(num_blocks=3, num_steps=6)
    space = SearchSpace(pool.spec, pool.sampling, modes=("1", "0", "F"))
    assert space.gene_modes == ("0", "1", "F")
    rng = random.Random(1)
    for _ in range(30):
        s = space.decode(space.random_genome(rng))
        space.check(s)
        assert space.decode(space.encode(s)).hash == s.hash
    forecast_first = [2] * space.cache_length          # every cell 'F': step 1 cannot forecast yet
    s = space.decode(forecast_first)
    assert all(row == "000" for g, c in s.components() for row in s.rows(g, c)[1:2]), "falls back to reuse"
    with pytest.raises(ValueError, match="space modes must include compute"):
        SearchSpace(pool.spec, pool.sampling, modes=("0", "F"))


def test_surrogate_ranks_plans_and_ecad_screens_with_it(tmp_path):
    """The quality surrogate, fitted on told results, orders unseen plans like the real quality, and
    ECAD with screening sends only the offspring it ranks best (recording the prediction)."""
    from search.surrogate import QualitySurrogate, rank_correlation
    pool = SyntheticPool(num_blocks=4, num_steps=8)
    space = SearchSpace(pool.spec, pool.sampling)
    rng = random.Random(0)
    train = [space.decode(space.random_genome(rng)) for _ in range(40)]
    test = [space.decode(space.random_genome(rng)) for _ in range(40)]
    quality = {r.schedule.hash: r.metrics["quality"] for r in pool.evaluate(train + test)}
    model = QualitySurrogate(OBJ[0], space.components(), space.num_steps)
    assert model.fit(train, [quality[s.hash] for s in train])
    rho = rank_correlation(list(model.predict(test)), [quality[s.hash] for s in test])
    assert rho is not None and rho > 0.7, rho

    cfg = _config("ecad", 60, searcher={"name": "ecad", "seed": 0,
                                        "settings": {"population": 12, "screen": 3.0, "screen_after": 12}})
    pool = SyntheticPool(num_blocks=4, num_steps=8)
    run_study(cfg, db=str(tmp_path / "s.db"), show_progress=False, pool=pool, log=lambda m: None)
    screened = [s for s in _evaluated(tmp_path / "s.db", cfg.study) if "predicted_quality" in s.provenance]
    assert screened, "later generations are screened and carry the surrogate's prediction"


def test_bayes_screens_its_samples_with_the_surrogate(tmp_path):
    cfg = _config("bayes", 40, searcher={"name": "bayes", "seed": 0,
                                         "settings": {"n_startup_trials": 6, "screen": 4, "screen_after": 12,
                                                      "warm_start": False}})
    pool = SyntheticPool(num_blocks=4, num_steps=8)
    run_study(cfg, db=str(tmp_path / "b.db"), show_progress=False, pool=pool, log=lambda m: None)
    assert len(pool.evaluated) == len(set(pool.evaluated)) == 40
    screened = [s for s in _evaluated(tmp_path / "b.db", cfg.study) if "predicted_quality" in s.provenance]
    assert screened


@pytest.mark.parametrize("name, settings", [("ecad", {"population": 12, "screen": 3.0, "screen_after": 12}),
                                            ("bayes", {"n_startup_trials": 6, "screen": 3, "screen_after": 12})])
def test_screened_study_resumed_equals_uninterrupted(tmp_path, name, settings):
    cfg = _config(name, 40, searcher={"name": name, "seed": 0, "settings": settings})
    full = SyntheticPool(num_blocks=4, num_steps=8)
    run_study(cfg, db=str(tmp_path / "a.db"), show_progress=False, pool=full, log=lambda m: None)
    first = InterruptingPool(27, num_blocks=4, num_steps=8)
    run_study(cfg, db=str(tmp_path / "b.db"), show_progress=False, pool=first, log=lambda m: None)
    second = SyntheticPool(num_blocks=4, num_steps=8)
    run_study(cfg, db=str(tmp_path / "b.db"), resume=cfg.study, show_progress=False, pool=second, log=lambda m: None)
    assert first.evaluated[:26] + second.evaluated == full.evaluated
