"""The latency cost model inside the evaluator and the search (evaluation.latency.model).

No wall clock: the evaluator is given a *work clock* that advances only when the denoiser really
does work — by each nn.Linear's weight size when it runs, plus a fixed amount per denoiser call.
Time is then exactly linear in the pieces the latency model counts, so a correct integration must
fit it exactly and predict every schedule's measured speedup."""

from __future__ import annotations

import random

import pytest
import torch

from evaluators import EvaluationConfig, LocalPool
from schedules import Schedule
from schedules.latency import LatencyTable, calibration_schedules, random_schedule
from search.config import ConfigError, validate_config
from search.study import make_space, run_study
from store import Store

embedded = pytest.importorskip("evaluators.embedded")
from evaluators.embedded.model import DENOISER_WEIGHTS

pytestmark = pytest.mark.skipif(not DENOISER_WEIGHTS.exists(), reason="embedded denoiser weights not shipped yet")

STEPS = 6
EVALUATION = {"num_prompts": 2, "seeds": [0], "num_inference_steps": STEPS, "metrics": ["psnr"],
              "n_thumbnails": 0, "sharing": {"enabled": False},
              "latency": {"warmup": 0, "repeats": 1, "reference_every": 0, "model": True, "model_repeats": 1}}


class WorkClock:
    """Seconds = work done by the denoiser so far (Linear weights run + a cost per denoiser call)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.handles: list = []

    def attach(self, denoiser: torch.nn.Module) -> None:
        def linear(module, args, out):
            self.now += 1e-9 * module.weight.numel() * args[0].shape[0]

        def call(module, args, kwargs):
            self.now += 1e-4

        for m in denoiser.modules():
            if isinstance(m, torch.nn.Linear):
                self.handles.append(m.register_forward_hook(linear))
        self.handles.append(denoiser.register_forward_pre_hook(call, with_kwargs=True))

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from evaluators.models import load_model
    from schedules.adapters import find_denoiser

    cfg = EvaluationConfig(cache_dir=str(tmp_path_factory.mktemp("cache")), **EVALUATION)
    pipe = load_model(cfg)
    clock = WorkClock()
    clock.attach(find_denoiser(pipe))
    with LocalPool(cfg, pipe=pipe, clock=clock) as pool:
        yield cfg, pipe, clock, pool


def test_the_evaluator_fits_its_latency_model_and_scores_with_it(setup):
    _, _, _, pool = setup
    info = pool.worker_info()[0]
    table = LatencyTable.from_dict(info["latency_table"], pool.cost_table())
    todo = calibration_schedules(pool.model_spec(), pool.sampling_spec())
    assert table.calibration_runs == len(todo) and table.batch_size == 2
    assert table.fit_error < 1e-6        # the work clock is linear in the counted pieces
    rng = random.Random(3)
    spec, sampling = pool.model_spec(), pool.sampling_spec()
    schedules = [Schedule.periodic(spec, sampling, 2), Schedule.periodic(spec, sampling, 3)]
    schedules += [random_schedule(spec, sampling, rng, p, "0F") for p in (0.3, 0.6)]
    results = list(pool.evaluate(schedules))
    assert len(results) == len(schedules)
    for r in results:
        assert r.ok, r.error
        assert r.latency_speedup_model == pytest.approx(table.speedup(r.schedule, pool.all_compute_schedule()))
        assert r.latency_speedup_model == pytest.approx(r.latency_speedup, rel=1e-6)   # predicted = measured
        assert r.latency_speedup_model > 1.0


def test_a_study_optimises_the_modelled_latency(setup, tmp_path):
    cfg, _, _, pool = setup
    db = f"sqlite:///{tmp_path / 'lat.db'}"
    config = validate_config({
        "study": "latency-model", "evaluation": cfg.model_dump(mode="json"),
        "objectives": [{"name": "psnr", "reference": 10.0}, {"name": "latency_speedup_model"}],
        "searcher": {"name": "heuristics"}, "budget": {"evaluations": 6}})
    name, outcome = run_study(config, db=db, pool=pool, show_progress=False, log=lambda *_: None)
    assert outcome.evaluations >= 1
    with Store(db) as store:
        rows = store.results(name)
        front = store.front(name)
    assert rows and all(r.latency_speedup_model is not None for r in rows if r.ok)
    assert front and all(p.latency_speedup_model is not None for p in front)


def test_the_modelled_latency_objective_needs_the_model():
    doc = {"evaluation": {**EVALUATION, "latency": {"model": False}},
           "objectives": [{"name": "psnr", "reference": 10.0}, {"name": "latency_speedup_model"}],
           "searcher": {"name": "heuristics"}}
    with pytest.raises(ConfigError, match=r"objectives\[1\].name: latency_speedup_model needs the latency model"):
        validate_config(doc)


def test_a_searcher_predicts_the_modelled_latency(setup):
    cfg, _, _, pool = setup
    from search.study import make_searcher, pool_cost_table, pool_latency_table
    config = validate_config({
        "evaluation": cfg.model_dump(mode="json"),
        "objectives": [{"name": "psnr", "reference": 10.0}, {"name": "latency_speedup_model"}],
        "searcher": {"name": "ecad"}})
    costs = pool_cost_table(pool)
    table = pool_latency_table(pool, costs)
    searcher = make_searcher(config, make_space(config, pool), costs, [], table)
    assert searcher.predicts_cost()
    fora = Schedule.periodic(pool.model_spec(), pool.sampling_spec(), 3)
    assert searcher.speedup(fora) == pytest.approx(table.speedup(fora, pool.all_compute_schedule()))
