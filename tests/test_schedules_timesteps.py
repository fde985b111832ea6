"""Explicit timesteps and sigmas on every family's tiny pipeline: the denoiser runs exactly the
schedule's K steps at exactly its values, a K-step all-compute schedule is the pipeline's own K-step
run bit for bit, predicted MACs equal the FLOP counter's, and what cannot work is refused up front."""

from __future__ import annotations

import re

import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler
from tiny_pipelines import TINY_PIPELINES, build_tiny_dit, build_tiny_flux, build_tiny_pixart_pipeline

from schedules import (
    SamplingSpec, Schedule, ScheduleMismatchError, ScheduleStepError, apply_schedule, counting_mode, describe,
    mac_speedup, measure_cost_table, schedule_macs,
)
from schedules.adapters import ADAPTERS, find_denoiser
from schedules.timesteps import fine_grid, is_flow_matching, native_kind, set_timesteps

VALUES = {"timesteps": (999.0, 800.0, 450.0, 120.0), "sigmas": (1.0, 0.8, 0.45, 0.12)}
K = 4
FAMILIES = sorted(TINY_PIPELINES)


def explicit(pipe, values=None) -> SamplingSpec:
    kind = native_kind(pipe.scheduler)
    return SamplingSpec(K, **{kind: values or VALUES[kind]})


def reuse_schedule(pipe, sampling: SamplingSpec) -> Schedule:
    """Every other block reuses on odd steps (per component shifted), so counting catches mix-ups."""
    spec = describe(pipe)
    masks = {(g.name, c): [[s == 0 or (s + b + ci) % 2 == 0 for b in range(g.num_blocks)] for s in range(K)]
             for g in spec.block_groups for ci, c in enumerate(g.components)}
    return Schedule.from_masks(spec, sampling, masks)


def record_timesteps(pipe) -> list[float]:
    seen: list[float] = []

    def hook(module, args, kwargs):
        t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        seen.append(float(torch.as_tensor(t).reshape(-1)[0]))
    find_denoiser(pipe).register_forward_pre_hook(hook, with_kwargs=True)
    return seen


def test_every_adapter_family_has_a_tiny_pipeline():
    assert {a.family for a in ADAPTERS} <= set(TINY_PIPELINES)


@pytest.mark.parametrize("family", FAMILIES)
def test_denoiser_runs_exactly_the_schedule_timesteps(family):
    entry = TINY_PIPELINES[family]
    pipe = entry.build()
    if is_flow_matching(pipe.scheduler):
        pipe.scheduler = FlowMatchEulerDiscreteScheduler()   # no shift: the denoiser sees the sigmas themselves
    sampling = explicit(pipe)
    seen = record_timesteps(pipe)
    with apply_schedule(pipe, Schedule.all_compute(describe(pipe), sampling)):
        entry.run(pipe)                                        # a plain call: no steps, no timesteps passed
    kind, values = sampling.explicit
    assert len(seen) == K
    if kind == "timesteps":
        assert seen == list(values)
    else:
        assert [t / entry.unit for t in seen] == pytest.approx(values, rel=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_all_compute_k_steps_equal_the_pipelines_own_k_step_run(family):
    entry = TINY_PIPELINES[family]
    pipe = entry.build()
    kind = native_kind(pipe.scheduler)
    if entry.takes_values:        # the pipeline's own `timesteps=`/`sigmas=` at uneven values
        values = VALUES[kind]
        plain = entry.run(pipe, **{kind: list(values)})
    else:                         # its own K-step spacing, listed explicitly
        values = fine_grid(pipe.scheduler, K)[1]
        plain = entry.run(pipe, num_inference_steps=K)
    schedule = Schedule.all_compute(describe(pipe), SamplingSpec(K, **{kind: values}))
    with apply_schedule(pipe, schedule):
        scheduled = entry.run(pipe)
    assert torch.equal(plain, scheduled)
    assert "set_timesteps" not in vars(pipe.scheduler), "the scheduler is restored after the call"


def test_flux_shift_applies_to_schedule_sigmas_as_to_the_pipelines_own():
    """FLUX-dev's resolution-dependent shift (mu) reaches the scheduler with the schedule's sigmas."""
    entry = TINY_PIPELINES["flux"]
    pipe = build_tiny_flux(scheduler=FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5,
                                                                     max_shift=1.15))
    seen = record_timesteps(pipe)
    plain = entry.run(pipe, sigmas=list(VALUES["sigmas"]))
    own = list(seen)
    with apply_schedule(pipe, Schedule.all_compute(describe(pipe), explicit(pipe))):
        scheduled = entry.run(pipe)
    assert torch.equal(plain, scheduled) and seen[K:] == own
    assert own != pytest.approx(VALUES["sigmas"]), "the shift did change the sigmas the denoiser sees"


@pytest.mark.parametrize("family", FAMILIES)
def test_predicted_macs_equal_measured_macs_over_the_steps_run(family):
    entry = TINY_PIPELINES[family]
    pipe = entry.build()
    table = measure_cost_table(pipe, lambda: entry.run(pipe, num_inference_steps=2))
    schedule = reuse_schedule(pipe, explicit(pipe))
    with apply_schedule(pipe, schedule), counting_mode() as counter:
        entry.run(pipe)
    denoiser = type(find_denoiser(pipe)).__name__
    assert schedule_macs(schedule, table) == sum(counter.get_flop_counts()[denoiser].values()) // 2
    reference = Schedule.all_compute(describe(pipe), SamplingSpec(2 * K))
    assert mac_speedup(schedule, table, reference) == pytest.approx(2 * mac_speedup(schedule, table))


def has_no_hooks(model) -> bool:
    return all(not getattr(m, "_diffusers_hook", None) or not m._diffusers_hook.hooks for m in model.modules())


@pytest.mark.parametrize("scheduler,kind,message", [
    (DDIMScheduler(), "timesteps", "DDIMScheduler cannot sample custom timesteps"),
    (DPMSolverMultistepScheduler(), "sigmas", "DPMSolverMultistepScheduler cannot sample custom sigmas"),
    (DPMSolverMultistepScheduler(use_karras_sigmas=True), "timesteps",
     "DPMSolverMultistepScheduler refuses the schedule's timesteps: Cannot use `timesteps` with"),
    (FlowMatchEulerDiscreteScheduler(), "timesteps", "FlowMatchEulerDiscreteScheduler samples by sigmas"),
], ids=["ddim", "dpm-sigmas", "dpm-karras", "flow-timesteps"])
def test_scheduler_that_cannot_sample_the_values_is_refused_at_apply(scheduler, kind, message):
    pipe = build_tiny_dit(scheduler=scheduler)
    schedule = Schedule.all_compute(describe(pipe), SamplingSpec(K, **{kind: VALUES[kind]}))
    with pytest.raises(ScheduleMismatchError, match=message):
        apply_schedule(pipe, schedule)
    assert has_no_hooks(pipe.transformer) and type(pipe).__name__ == "DiTPipeline"


def test_timesteps_the_scheduler_would_change_are_refused():
    pipe = build_tiny_dit()
    schedule = Schedule.all_compute(describe(pipe), SamplingSpec(2, timesteps=(999.5, 500.0)))
    with pytest.raises(ScheduleMismatchError, match="would sample timestep 999 where the schedule lists 999.5"):
        apply_schedule(pipe, schedule)


@pytest.mark.parametrize("kwargs,message", [
    ({"num_inference_steps": 7}, "called with 7 denoising steps but the schedule samples 4 explicit timesteps"),
    ({"timesteps": [999, 500]}, "called with its own timesteps=[999, 500] (2 values)"),
    ({"sigmas": [1.0, 0.5, 0.2, 0.1]}, "called with its own sigmas"),
])
def test_a_call_with_conflicting_steps_is_an_error_before_any_work(kwargs, message):
    entry = TINY_PIPELINES["pixart"]
    pipe = build_tiny_pixart_pipeline()
    seen = record_timesteps(pipe)
    with apply_schedule(pipe, Schedule.all_compute(describe(pipe), explicit(pipe))):
        with pytest.raises(ScheduleStepError, match=re.escape(message)):
            entry.run(pipe, **kwargs)
        assert seen == []
        entry.run(pipe, num_inference_steps=K, timesteps=list(VALUES["timesteps"]))   # the same ones: fine
    assert len(seen) == K


class CustomLoop:
    """A sampler that never asks its scheduler for timesteps: the schedule's cannot reach it."""

    def __init__(self, pipe, use_helper: bool):
        self.transformer, self.scheduler = pipe.transformer, pipe.scheduler
        self.use_helper, self.sampling = use_helper, None

    def __call__(self, num_inference_steps: int = K):
        x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        text = torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(1))
        if self.use_helper:
            set_timesteps(self.scheduler, self.sampling)
            steps = self.scheduler.timesteps
        else:
            steps = torch.tensor([900, 600, 300, 50])
        for t in steps:
            self.transformer(x, encoder_hidden_states=text, timestep=t.reshape(1),
                             added_cond_kwargs={"resolution": None, "aspect_ratio": None})


def test_a_loop_that_never_sets_timesteps_is_an_error_and_the_helper_fixes_it():
    pipe = build_tiny_pixart_pipeline()
    sampling = explicit(pipe)
    schedule = Schedule.all_compute(describe(pipe), sampling)
    loop = CustomLoop(pipe, use_helper=False)
    with apply_schedule(loop, schedule), pytest.raises(ScheduleStepError, match="never called scheduler.set_timesteps"):
        loop()
    loop = CustomLoop(pipe, use_helper=True)
    loop.sampling = sampling
    seen = record_timesteps(pipe)
    with apply_schedule(loop, schedule):
        loop()
    assert seen == list(sampling.timesteps)
