"""Prefix-shared evaluation: a run resumed from another run's step-k snapshot equals a run from
scratch bit for bit, on every family's tiny pipeline, and the evaluator's scores are identical with
and without sharing while it runs fewer denoising steps."""

from __future__ import annotations

import inspect
import time

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler
from tiny_pipelines import TINY_PIPELINES

from evaluators.trajectory import TrajectoryControl, branch_points, common_prefix
from schedules import SamplingSpec, Schedule, apply_schedule, describe
from schedules.adapters import find_denoiser

STEPS = 6


def _pair(spec, steps: int = STEPS) -> tuple[Schedule, Schedule, int]:
    """Two schedules sharing their first `k` steps (FORA-2, and FORA-2 up to k then all compute)."""
    sampling = SamplingSpec(steps)
    a = Schedule.periodic(spec, sampling, 2)
    k = 3
    masks = {}
    for g in spec.block_groups:
        for c in g.components:
            rows = list(a.rows(g.name, c))
            for s in range(k, steps):
                rows[s] = "1" * g.num_blocks
            masks[(g.name, c)] = rows
    b = Schedule.from_masks(spec, sampling, masks)
    assert common_prefix(a, b) == k
    return a, b, k


def _steer_kwargs(pipe) -> dict | None:
    """Which callback the evaluator's runner would steer this pipeline with (None: it cannot)."""
    params = inspect.signature(type(pipe).__call__).parameters
    if "callback_on_step_end" in params:
        return {"callback_on_step_end": None}
    if "callback" in params and getattr(pipe.scheduler, "order", 1) == 1:
        return {"callback": None}
    return None


def _steered(entry, pipe, schedule, resume=None, save_at=()):
    legacy = "callback" in _steer_kwargs(pipe)    # read before apply_schedule wraps the class
    with apply_schedule(pipe, schedule, record_history=True) as handle, \
            TrajectoryControl(pipe, handle, find_denoiser(pipe), time.perf_counter, resume, save_at) as control:
        steer = ({"callback": control.legacy_callback, "callback_steps": 1} if legacy else
                 {"callback_on_step_end": control.callback, "callback_on_step_end_tensor_inputs": ["latents"]})
        images = entry.run(pipe, num_inference_steps=schedule.num_steps, **steer)
    return images, control


@pytest.mark.parametrize("family", sorted(TINY_PIPELINES))
def test_resumed_run_equals_run_from_scratch(family):
    entry = TINY_PIPELINES[family]
    pipe = entry.build()
    if _steer_kwargs(pipe) is None:
        pytest.skip(f"{type(pipe).__name__} has no per-step callback: the evaluator runs it from scratch")
    a, b, k = _pair(describe(pipe))
    scratch, _ = _steered(entry, pipe, b)
    _, first = _steered(entry, pipe, a, save_at={k})
    snap = first.saved[k]
    resumed, control = _steered(entry, pipe, b, resume=snap)
    assert torch.equal(resumed, scratch), f"{family}: resuming at step {k} changed the images"
    assert control.restored_at is not None and snap.step == k
    assert control.calls == first.calls, "the skipped steps still call through the denoiser (as zeros)"
    assert snap.denoiser_calls == k * first.calls // STEPS, "only the first k steps' calls were skipped"


def test_stochastic_solver_resumes_exactly():
    """SDE-DPM-Solver++ draws noise at every step: the skipped steps still draw it, in the same order."""
    entry = TINY_PIPELINES["pixart"]
    scheduler = DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++")
    pipe = entry.build(scheduler=scheduler)
    a, b, k = _pair(describe(pipe))
    scratch, _ = _steered(entry, pipe, b)
    _, first = _steered(entry, pipe, a, save_at={k})
    resumed, _ = _steered(entry, pipe, b, resume=first.saved[k])
    assert torch.equal(resumed, scratch)


def test_branch_points_order_a_request_depth_first():
    pipe = TINY_PIPELINES["pixart"].build()
    spec = describe(pipe)
    a, b, k = _pair(spec)
    c = Schedule.periodic(spec, SamplingSpec(STEPS), 3)
    order, points = branch_points([c, b, a])
    first = order.index(a) if order.index(a) < order.index(b) else order.index(b)
    assert k in points[order[first].hash], "the first of the pair saves where the second leaves it"


def _pool(shared: bool, tmp_path, embedded: bool = False):
    from evaluators import EvaluationConfig, LocalPool
    doc = dict(model="embedded", num_prompts=2, seeds=[0], num_inference_steps=8, batch_size=2, n_thumbnails=1,
               latency={"warmup": 0, "repeats": 1, "reference_every": 0}, cache_dir=str(tmp_path / "cache"),
               metrics=["psnr", "latent_mse", "judge_adherence"], sharing={"enabled": shared, "save_every": 2})
    return LocalPool(EvaluationConfig(**doc))


def test_evaluator_scores_identically_with_and_without_sharing(tmp_path):
    with _pool(False, tmp_path) as plain, _pool(True, tmp_path) as shared:
        spec, sampling = plain.model_spec(), plain.sampling_spec()
        schedules = [Schedule.periodic(spec, sampling, k) for k in (2, 3, 4)]
        schedules += [Schedule.periodic(spec, sampling, 2, warmup=w) for w in (3, 5)]
        alone = {r.schedule.hash: r for r in plain.evaluate(schedules)}
        together = {r.schedule.hash: r for r in shared.evaluate(schedules)}
        assert alone.keys() == together.keys()
        for h, r in alone.items():
            assert r.metrics == together[h].metrics and r.per_prompt == together[h].per_prompt
            assert r.thumbnails == together[h].thumbnails and r.macs == together[h].macs
        ran_plain = plain.worker_info()[0]["steps_run"]
        info = shared.worker_info()[0]
        assert info["prefix_hits"] > 0 and info["steps_run"] < ran_plain, info


def test_a_dominated_candidate_is_raced_out_after_its_first_batch(tmp_path):
    """Racing: with an opponent far better on every pair, scoring stops after the first batch; the
    partial result says how many pairs it scored and is not a full result."""
    from evaluators import EvaluationConfig, LocalPool
    from evaluators.racing import Race
    from schedules import RACED
    doc = dict(model="embedded", num_prompts=4, seeds=[0], num_inference_steps=8, batch_size=2, n_thumbnails=0,
               latency={"warmup": 0, "repeats": 1, "reference_every": 0}, cache_dir=str(tmp_path / "cache"),
               metrics=["psnr"], sharing={"enabled": False})
    with LocalPool(EvaluationConfig(**doc)) as pool:
        evaluator = pool.evaluator
        bad = Schedule.periodic(pool.model_spec(), pool.sampling_spec(), 7)
        full = evaluator.evaluate(bad)
        assert full.ok and full.pairs_scored == 4 and full.image_steps == 4 * 8
        beaten = Race("psnr", True, tuple(v + 10.0 for v in full.per_prompt["psnr"]))
        raced = evaluator.evaluate(bad, race=beaten)
        assert raced.status == RACED and not raced.ok
        assert raced.pairs_scored == 2 and raced.pairs_total == 4 and raced.image_steps == 2 * 8
        assert raced.per_prompt["psnr"] == full.per_prompt["psnr"][:2]
        close = Race("psnr", True, tuple(full.per_prompt["psnr"]))     # a tie is not "clearly dominated"
        assert evaluator.evaluate(bad, race=close).ok
