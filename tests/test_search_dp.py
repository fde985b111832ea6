"""DP pieces against brute force on small synthetic problems, and the DP searcher on the synthetic
pool (whose quality is exactly additive in segment costs, so the DP front is the true front)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from schedules import mac_speedup
from search.dp import Unit, bellman_all_budgets, boss_path, knapsack_front, lagrangian_front, segment_costs
from search.dp_searcher import DPSearcher
from schedules.objectives import Objective, Objectives
from search.space import SearchSpace
from search.synthetic import SyntheticPool

OBJ = Objectives([Objective("quality", reference=0.0), Objective("mac_speedup", reference=1.0)])


def _plan_cost(d: np.ndarray, steps: tuple[int, ...]) -> float:
    total = 0.0
    for s in range(d.shape[0]):
        a = max(c for c in steps if c <= s)
        if a != s:
            total += d[a, s]
    return total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bellman_equals_brute_force_for_every_budget(seed):
    rng = np.random.default_rng(seed)
    n = 8
    d = rng.uniform(0, 1, (n, n))
    best, paths = bellman_all_budgets(segment_costs(d))
    for k in range(1, n + 1):
        brute = min(_plan_cost(d, (0,) + c) for c in itertools.combinations(range(1, n), k - 1))
        assert best[k - 1] == pytest.approx(brute)
        assert len(paths[k - 1]) == k and paths[k - 1][0] == 0
        assert _plan_cost(d, tuple(paths[k - 1])) == pytest.approx(brute)


def test_boss_path_equals_brute_force():
    rng = np.random.default_rng(3)
    m = 9
    jumps = np.where(np.triu(np.ones((m + 1, m + 1)), 1) > 0, rng.uniform(0, 1, (m + 1, m + 1)), np.inf)
    for k in range(1, m + 1):
        cost, path = boss_path(jumps, k)
        brute = min(sum(jumps[a, b] for a, b in zip((0,) + c, c + (m,)))
                    for c in itertools.combinations(range(1, m), k - 1))
        assert cost == pytest.approx(brute)
        assert len(path) == k and path[0] == 0 and path == sorted(set(path))


def _brute_front(units):
    pts = sorted((sum(u.macs * k for u, k in zip(units, ch)), sum(u.errors[k - 1] for u, k in zip(units, ch)))
                 for ch in itertools.product(*[range(1, len(u.errors) + 1) for u in units]))
    front, last = [], np.inf
    for m, e in pts:
        if e < last - 1e-12:
            front.append((m, e))
            last = e
    return front


def _score(units, choice):
    return (sum(u.macs * k for u, k in zip(units, choice)), sum(u.errors[k - 1] for u, k in zip(units, choice)))


def test_knapsack_front_equals_brute_force_and_lagrangian_points_lie_on_it():
    rng = np.random.default_rng(4)
    units = [Unit(np.sort(rng.uniform(0, 5, 6))[::-1].copy(), m) for m in (1, 2, 3, 5)]
    front = _brute_front(units)
    knap = sorted(_score(units, ch) for ch in knapsack_front(units, bins=2000))
    assert [(m, pytest.approx(e)) for m, e in knap] == front
    best_at = dict(front)
    for choice in lagrangian_front(units):
        m, e = _score(units, choice)
        assert e == pytest.approx(min(v for mm, v in front if mm <= m))   # never dominated
        assert m in best_at


@pytest.mark.parametrize("combine", ["knapsack", "lagrangian"])
def test_dp_searcher_finds_the_true_front_of_the_synthetic_pool(combine):
    pool = SyntheticPool(num_blocks=1, num_steps=6, components=("attn1", "ff"))
    space = SearchSpace(pool.spec, pool.sampling)
    searcher = DPSearcher(space, OBJ, {"combine": combine, "candidates": 100, "refine_rounds": 1,
                                       "min_speedup": 1.0, "error_power": 1.0},   # the synthetic truth is linear
                          cost_table=pool.cost_table())
    points = []
    while not searcher.finished:
        request = searcher.profile_request()
        if request is not None:
            searcher.tell_profile(request, pool.profile(request.schedule))
            continue
        results = list(pool.evaluate(searcher.ask(64)))
        searcher.tell(results)
        points += [OBJ.values(r) for r in results]
    truth = [(pool.quality(s), mac_speedup(s, pool.table))
             for s in (space.decode(list(bits)) for bits in itertools.product([0, 1], repeat=space.length))]
    hv, true_hv = OBJ.hypervolume(points), OBJ.hypervolume(truth)
    if combine == "knapsack":
        assert hv == pytest.approx(true_hv)
    else:                       # convex-hull points only
        assert 0.95 * true_hv <= hv <= true_hv + 1e-9
    assert pool.profiles == 2   # all compute, then one on-policy round
    assert len(set(pool.evaluated)) == len(pool.evaluated)


def test_dp_searcher_timesteps_space_verifies_boss_then_caches_on_its_timesteps():
    """BOSS picks the best K of M for every K; those are evaluated; the cache DP then runs on the
    study's own steps and on the best verified BOSS timesteps, each profiled along its own steps."""
    from search.space import fine_grid
    grid = fine_grid(12)
    pool = SyntheticPool(num_blocks=2, num_steps=6, components=("attn1",), grid=grid)
    space = SearchSpace(pool.spec, pool.sampling, ("cache", "timesteps"), grid, min_steps=3)
    searcher = DPSearcher(space, OBJ, {"refine_rounds": 0, "heuristics": False, "bases": 2},
                          cost_table=pool.cost_table())
    request = searcher.profile_request()
    assert request.kind == "timesteps" and request.grid == grid
    jumps = pool.timestep_costs(grid)
    searcher.tell_profile(request, jumps)
    boss = searcher.ask(100)
    assert {s.num_steps for s in boss} >= {3, 4, 5}
    for s in boss:
        assert space.indices_of(s) == boss_path(jumps, s.num_steps)[1] and s.compute_fraction() == 1.0
        assert s.provenance["reference_steps"] == 6 or s.num_steps == 6
    searcher.tell(list(pool.evaluate(boss)))
    bases = []
    while (request := searcher.profile_request()) is not None:
        assert request.kind == "drift"
        bases.append(request.schedule)
        searcher.tell_profile(request, pool.profile(request.schedule))
    assert bases[0] == space.baseline() and len(bases) == 2 and bases[1].num_steps < 6
    assert bases[1].hash in {s.hash for s in boss}
    candidates = searcher.ask(100)
    assert {c.sampling for c in candidates} == {b.sampling for b in bases}
    assert all(c.compute_fraction() < 1.0 for c in candidates)
    searcher.tell(list(pool.evaluate(candidates)))
    assert searcher.finished


def _run_dp(pool, space, settings):
    searcher = DPSearcher(space, OBJ, settings, cost_table=pool.cost_table())
    points = []
    while not searcher.finished:
        request = searcher.profile_request()
        if request is not None:
            searcher.tell_profile(request, pool.profile(request.schedule))
            continue
        results = list(pool.evaluate(searcher.ask(8)))
        searcher.tell(results)
        points += [OBJ.values(r) for r in results]
    return OBJ.hypervolume(points), searcher


def test_calibration_learns_what_the_profile_hides():
    """True cost of attn1 is 5x what its drift says: the calibrated DP finds a better front."""
    pool = SyntheticPool(num_blocks=4, num_steps=10, sensitivity={"attn1": 5.0})
    space = SearchSpace(pool.spec, pool.sampling)
    common = {"candidates": 12, "refine_rounds": 1, "error_power": 1.0}
    plain, _ = _run_dp(pool, space, {**common, "calibrate": False})
    calibrated, searcher = _run_dp(pool, space, {**common, "calibrate": True})
    weights = np.array(searcher.weights)
    assert weights[0].mean() > 2 * weights[1:].mean()      # attn1 (row 0) learned to be costlier
    assert calibrated > plain


def test_dp_state_round_trips_through_json():
    import json
    pool = SyntheticPool(num_blocks=2, num_steps=5)
    space = SearchSpace(pool.spec, pool.sampling)
    settings = {"candidates": 4}
    a = DPSearcher(space, OBJ, settings, cost_table=pool.cost_table())
    while a.phase == "heuristics":
        a.tell(list(pool.evaluate(a.ask(8))))
    request = a.profile_request()
    a.tell_profile(request, pool.profile(None))
    a.tell(list(pool.evaluate(a.ask(2))))
    state = json.loads(json.dumps(a.state()))
    b = DPSearcher.from_state(space, OBJ, settings, state, cost_table=pool.cost_table())
    assert b.state() == a.state()
    assert [s.hash for s in b.ask(10)] == [s.hash for s in a.ask(10)]


def test_two_history_dp_equals_brute_force_and_reduces_to_the_reuse_dp():
    """With forecasts, a served step's cost depends on the last two computes; the DP over (p, a)
    finds the optimum for every budget (checked against enumeration), and without forecasts it is
    the plain segmentation DP."""
    import itertools

    from search.dp import bellman_two_history, served_costs, served_modes

    rng = np.random.default_rng(0)
    n = 7
    for _ in range(3):
        d, f = rng.random((n, n)), rng.random((n, n, n)) * 1.2
        cell, choice = served_costs(d, [f])
        costs, paths = bellman_two_history(cell)
        for k in range(1, n + 1):
            def cost(comp):
                total = 0.0
                for i, a in enumerate(comp):
                    p, end = (comp[i - 1] if i else -1), (comp[i + 1] if i + 1 < len(comp) else n)
                    total += sum(min(d[a, s], f[p, a, s] if p >= 0 else np.inf) for s in range(a + 1, end))
                return total
            brute = min(cost([0, *rest]) for rest in itertools.combinations(range(1, n), k - 1))
            assert costs[k - 1] == pytest.approx(brute) == pytest.approx(cost(paths[k - 1]))
            modes = served_modes(choice, paths[k - 1], n)
            assert set(modes) == set(range(n)) - set(paths[k - 1])
        plain, _ = bellman_all_budgets(segment_costs(d))
        assert np.allclose(bellman_two_history(served_costs(d, [])[0])[0], plain)
