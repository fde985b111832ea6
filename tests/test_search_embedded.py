"""On the embedded model with a small budget, every searcher's front beats random search's at the
same budget (fixed seeds). Small on purpose: 2 prompts x 1 image seed, PSNR only, one model load for
all studies and identical schedules scored once (scoring is deterministic on CPU)."""

from __future__ import annotations

import dataclasses

import pytest

from search.config import validate_config
from search.study import make_pool, run_study

pytestmark = pytest.mark.e2e

BUDGET = 24
EVALUATION = {"model": "embedded", "num_prompts": 2, "seeds": [0], "metrics": ["psnr"], "n_thumbnails": 0,
              "latency": {"warmup": 0, "repeats": 1}}
OBJECTIVES = [{"name": "psnr", "reference": 15.0}, {"name": "mac_speedup", "reference": 1.0}]
SETTINGS = {"random": {}, "heuristics": {}, "ecad": {"population": 8},
            "dp": {"max_heuristics": 8, "candidates": 8, "refine_rounds": 1}, "bayes": {"n_startup_trials": 4}}


class _Memo:
    def __init__(self, pool):
        self.pool, self.memo = pool, {}

    def __getattr__(self, name):
        return getattr(self.pool, name)

    def evaluate(self, schedules):
        for s in schedules:
            if s.hash not in self.memo:
                self.memo[s.hash] = next(iter(self.pool.evaluate([s])))
            yield dataclasses.replace(self.memo[s.hash], schedule=s)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    cfg = validate_config({"evaluation": {**EVALUATION, "cache_dir": str(tmp_path_factory.mktemp("refs"))},
                           "searcher": {"name": "random"}, "objectives": OBJECTIVES})
    p = make_pool(cfg)
    yield _Memo(p)
    p.close()


def test_every_searcher_beats_random_at_equal_budget(pool, tmp_path):
    hv = {}
    from search.registry import SEARCHERS
    for name in ["random", *(n for n in SEARCHERS if n != "random")]:      # every registered searcher
        settings = SETTINGS.get(name, SEARCHERS[name].quick_settings)
        cfg = validate_config({"study": name, "evaluation": EVALUATION, "objectives": OBJECTIVES,
                               "searcher": {"name": name, "seed": 0, "settings": settings},
                               "budget": {"evaluations": BUDGET}})
        _, outcome = run_study(cfg, db=str(tmp_path / "e.db"), pool=pool, show_progress=False, log=lambda m: None)
        assert outcome.evaluations <= BUDGET
        hv[name] = outcome.hypervolume
    assert all(hv[n] > hv["random"] for n in hv if n != "random"), hv


def test_search_killed_during_its_first_reference_runs_resumes(tmp_path):
    """The issue's case on the real start-up: a search on the embedded model, piped (plain progress
    lines), is SIGKILLed while it computes its first all-compute references; the study exists, goes
    stale, and `--resume` takes it over and finishes its budget."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import yaml

    from store import Store
    root = Path(__file__).resolve().parents[1]
    db = str(tmp_path / "e2e.db")
    cfg = tmp_path / "e2e.yaml"
    cfg.write_text(yaml.safe_dump({
        "study": "killed", "evaluation": {**EVALUATION, "cache_dir": str(tmp_path / "refs")},
        "objectives": OBJECTIVES, "searcher": {"name": "random"}, "budget": {"evaluations": 3},
        "heartbeat_s": 0.5}))
    env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "search.cli", "search", str(cfg), "--db", db], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "all-compute references" in line:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait()
    assert any("all-compute references" in ln for ln in lines), lines
    deadline = time.monotonic() + 300
    while True:
        with Store(db, create=False) as s:
            status = s.get_study("killed").display_status(time.time())
            done = len(s.finished_hashes("killed"))
        if status.startswith("stale") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status.startswith("stale") and done == 0, status
    resumed = subprocess.run([sys.executable, "-m", "search.cli", "search", str(cfg), "--db", db, "-q",
                              "--resume", "killed"], env=env, capture_output=True, text=True, timeout=1200)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "3 evaluations (3 in this run)" in resumed.stdout
    with Store(db, create=False) as s:
        assert s.get_study("killed").display_status(time.time()) == "finished"
        assert len(s.finished_hashes("killed")) == 3
