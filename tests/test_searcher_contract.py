"""The contract every registered searcher keeps (Optuna's `testing/pytest_samplers.py` pattern):
each test runs for every entry of `search.registry.SEARCHERS` without being told, with the searcher's
own `quick_settings`, through the real loop, a real SQLite store and the synthetic pool.

- an interrupted and resumed study asks exactly what an uninterrupted one asks, and never repeats a
  finished evaluation;
- no schedule is evaluated twice, and every ask is an admissible point of the study's space;
- the saved searcher state is JSON that restores to the same state and the same pending asks;
- every stored result says who found it (`schedules.provenance`).
"""

from __future__ import annotations

import json

import pytest

from schedules import Schedule
from schedules.provenance import ORIGINS, describe, origin
from search.registry import SEARCHERS
from search.study import make_searcher, make_space, run_study
from search.synthetic import SyntheticPool
from store import Store
from test_search import InterruptingPool, _config, _front

NAMES = sorted(SEARCHERS)


@pytest.mark.parametrize("name", NAMES)
def test_interrupted_and_resumed_study_equals_uninterrupted(tmp_path, name):
    budget = 40
    cfg = _config(name, budget)
    full = SyntheticPool(num_blocks=4, num_steps=8)
    run_study(cfg, db=str(tmp_path / "a.db"), show_progress=False, pool=full, log=lambda m: None)

    first = InterruptingPool(17, num_blocks=4, num_steps=8)
    _, out1 = run_study(cfg, db=str(tmp_path / "b.db"), show_progress=False, pool=first, log=lambda m: None)
    assert out1.reason == "interrupted" and out1.evaluations == 16
    second = SyntheticPool(num_blocks=4, num_steps=8)
    _, out2 = run_study(cfg, db=str(tmp_path / "b.db"), resume=cfg.study, show_progress=False, pool=second,
                        log=lambda m: None)
    done_before = first.evaluated[:16]
    assert not set(done_before) & set(second.evaluated), "a finished evaluation was repeated"
    assert len(set(second.evaluated)) == len(second.evaluated)
    assert done_before + second.evaluated == full.evaluated     # the very same sequence of evaluations
    assert _front(tmp_path / "a.db", cfg.study) == _front(tmp_path / "b.db", cfg.study)
    assert out2.evaluations == len(full.evaluated)


@pytest.mark.parametrize("name", NAMES)
def test_no_duplicates_every_ask_admissible_and_provenance_on_every_result(tmp_path, name):
    pool = SyntheticPool(num_blocks=2, num_steps=5, components=("attn1", "ff"))
    cfg = _config(name, 60, synthetic={"num_blocks": 2, "num_steps": 5})
    _, out = run_study(cfg, db=str(tmp_path / "c.db"), show_progress=False, pool=pool, log=lambda m: None)
    assert len(pool.evaluated) == len(set(pool.evaluated)) == out.evaluations > 0
    assert out.front, "a front"
    space = make_space(cfg, pool)
    with Store(f"sqlite:///{tmp_path / 'c.db'}", create=False) as store:
        results = store.results(cfg.study)
    for r in results:
        space.check(r.schedule)
        assert space.admissible(r.schedule)
        prov = r.schedule.provenance
        assert prov.get("searcher") == name and origin(prov) in ORIGINS, prov
        assert describe(prov) != "unknown"


@pytest.mark.parametrize("name", NAMES)
def test_saved_state_is_json_and_restores_exactly(tmp_path, name):
    """The state the loop saved mid-study (no pickle anywhere) restores to the same state and pending asks."""
    cfg = _config(name, 40)
    pool = InterruptingPool(13, num_blocks=4, num_steps=8)
    run_study(cfg, db=str(tmp_path / "s.db"), show_progress=False, pool=pool, log=lambda m: None)
    with Store(f"sqlite:///{tmp_path / 's.db'}", create=False) as store:
        saved, _step = store.load_searcher_state(cfg.study)
        dispatched = {s.hash for s in store.unfinished_schedules(cfg.study)}
    state = json.loads(json.dumps(saved["searcher"], allow_nan=False))
    space = make_space(cfg, pool)
    restored = make_searcher(cfg, space, pool.cost_table(), [])
    restored.load_state(state)
    assert restored.state() == state
    pending = [s.hash for s in restored.pending()]
    assert pending == [Schedule.from_dict(d).hash for d in state["pending"]]
    assert dispatched <= set(pending), "what was dispatched and never finished is pending in the state"
