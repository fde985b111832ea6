"""The runtime on live diffusers models of every family: exactness, call counts, MACs, state, errors."""

from __future__ import annotations

import functools
import re

import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline, DiTTransformer2DModel, FirstBlockCacheConfig
from tiny_models import FAMILIES, run_trajectory, tiny_flux, tiny_pixart

from schedules import (
    COMPUTE, SKIP, BlockGroup, ModelSpec, SamplingSpec, Schedule, ScheduleConflictError, ScheduleMismatchError,
    ScheduleStepError, apply_schedule, counting_mode, describe, measure_cost_table, schedule_macs,
)
from schedules.adapters import component_module, group_blocks

STEPS = 5


def alternating_schedule(spec: ModelSpec, steps: int = STEPS) -> Schedule:
    """Different reuse patterns per component and block, so counting catches any mix-up."""
    masks = {}
    for gi, g in enumerate(spec.block_groups):
        for ci, c in enumerate(g.components):
            rows = ["1" * g.num_blocks]
            for step in range(1, steps):
                rows.append("".join("1" if (step + b + ci + gi) % 2 == 0 else "0" for b in range(g.num_blocks)))
            masks[(g.name, c)] = rows
    return Schedule.from_masks(spec, SamplingSpec(steps), masks)


def count_component_calls(model: torch.nn.Module, spec: ModelSpec) -> dict[tuple[str, str, int], int]:
    """Wrap each component's forward (before the schedule is attached, so the schedule's hook sits
    outside it): the counter only ticks when the component really computes."""
    counts: dict[tuple[str, str, int], int] = {}
    for g in spec.block_groups:
        for b, block in enumerate(group_blocks(model, g.name)):
            for c in g.components:
                module = component_module(block, c)
                if module is None:
                    continue
                key = (g.name, c, b)
                counts[key] = 0

                def counted(*args, _orig=module.forward, _key=key, **kwargs):
                    counts[_key] += 1
                    return _orig(*args, **kwargs)
                module.forward = counted
    return counts


def has_no_hooks(model: torch.nn.Module) -> bool:
    return all(not getattr(m, "_diffusers_hook", None) or not m._diffusers_hook.hooks for m in model.modules())


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_all_compute_is_bit_identical(family):
    model, inputs = FAMILIES[family]()
    plain = run_trajectory(model, inputs, STEPS)
    with apply_schedule(model, Schedule.all_compute(describe(model), SamplingSpec(STEPS))):
        scheduled = run_trajectory(model, inputs, STEPS)
    assert all(torch.equal(a, b) for a, b in zip(plain, scheduled))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_reuse_calls_each_component_exactly_as_planned(family):
    model, inputs = FAMILIES[family]()
    spec = describe(model)
    plain = run_trajectory(model, inputs, STEPS)
    schedule = alternating_schedule(spec)
    counts = count_component_calls(model, spec)
    with apply_schedule(model, schedule):
        scheduled = run_trajectory(model, inputs, STEPS)
    for (g, c, b), n in counts.items():
        expected = sum(row[b] == COMPUTE for row in schedule.rows(g, c))
        assert n == expected, f"{g}[{b}].{c}: computed {n} times, plan says {expected}"
    assert torch.equal(plain[0], scheduled[0]), "step 0 computes everything"
    assert not torch.equal(plain[-1], scheduled[-1]), "reuse must change the output"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_predicted_macs_equal_measured_macs(family):
    model, inputs = FAMILIES[family]()
    spec = describe(model)
    table = measure_cost_table(model, lambda: model(**inputs(0)))
    for schedule in (Schedule.all_compute(spec, SamplingSpec(STEPS)), alternating_schedule(spec)):
        with apply_schedule(model, schedule), counting_mode() as counter:
            run_trajectory(model, inputs, STEPS)
        assert schedule_macs(schedule, table) == counter.get_total_flops() // 2


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_remove_restores_plain_behaviour_and_runs_repeat(family):
    model, inputs = FAMILIES[family]()
    plain = run_trajectory(model, inputs, STEPS)
    handle = apply_schedule(model, alternating_schedule(describe(model)))
    first = run_trajectory(model, inputs, STEPS)
    second = run_trajectory(model, inputs, STEPS)  # a bare denoiser wraps to step 0 after N calls
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    handle.remove()
    assert has_no_hooks(model)
    after = run_trajectory(model, inputs, STEPS)
    assert all(torch.equal(a, b) for a, b in zip(plain, after))


def test_skip_mode_passes_the_residual_through():
    model, inputs = tiny_pixart()
    spec = describe(model)
    rows = ["111", "1-1", "111"]
    schedule = Schedule.from_masks(spec, SamplingSpec(3), {("transformer_blocks", c): rows for c in ("attn1", "attn2", "ff")})
    seen = {}
    block = model.transformer_blocks[1]

    def record(module, args, kwargs, out):
        seen[len(seen)] = (args, kwargs, out)
    hook = block.register_forward_hook(record, with_kwargs=True)
    with apply_schedule(model, schedule):
        run_trajectory(model, inputs, 3)
    hook.remove()
    args, kwargs, out = seen[1]
    hidden_in = args[0] if args else kwargs["hidden_states"]
    assert torch.equal(out, hidden_in), "block 1 at step 1 skips all components: output == input"


# ------------------------------------------------------------------ mismatches and conflicts
def _spec_variants(spec: ModelSpec):
    g = spec.block_groups[0]
    yield "class", ModelSpec(spec.family, "FluxTransformer2DModel", spec.block_groups), "model.transformer_class"
    yield "blocks", ModelSpec(spec.family, spec.transformer_class,
                              (BlockGroup(g.name, g.num_blocks + 1, g.components),)), "model.block_groups[0].num_blocks"
    yield "component", ModelSpec(spec.family, spec.transformer_class,
                                 (BlockGroup(g.name, g.num_blocks, g.components + ("proj_mlp",)),)), "no component(s) ['proj_mlp']"
    yield "group", ModelSpec(spec.family, spec.transformer_class,
                             (BlockGroup("single_transformer_blocks", g.num_blocks, g.components),)), "no block group 'single_transformer_blocks'"
    yield "family", ModelSpec("dit", spec.transformer_class, spec.block_groups), "model.family"


@pytest.mark.parametrize("variant", ["class", "blocks", "component", "group", "family"])
def test_mismatched_model_is_refused_and_left_untouched(variant):
    model, inputs = tiny_pixart()
    plain = run_trajectory(model, inputs, 3)
    name, spec, message = next(v for v in _spec_variants(describe(model)) if v[0] == variant)
    schedule = Schedule.all_compute(spec, SamplingSpec(3))
    with pytest.raises(ScheduleMismatchError, match=re.escape(message)):
        apply_schedule(model, schedule)
    assert has_no_hooks(model)
    assert all(torch.equal(a, b) for a, b in zip(plain, run_trajectory(model, inputs, 3)))


def _flux_without(spec: ModelSpec, *, group: str | None = None, component: str | None = None,
                  subset: bool = False) -> ModelSpec:
    groups = tuple(BlockGroup(g.name, g.num_blocks, tuple(c for c in g.components if c != component))
                   for g in spec.block_groups if g.name != group)
    return ModelSpec(spec.family, spec.transformer_class, groups, subset=subset)


@pytest.mark.parametrize("left_out, message", [
    ({"group": "single_transformer_blocks"}, "the model also has block group(s) ['single_transformer_blocks']"),
    ({"component": "ff_context"}, "also have component(s) ['ff_context']"),
])
def test_flux_schedule_that_leaves_parts_out_is_refused_unless_it_says_subset(left_out, message):
    """A FLUX file without `single_transformer_blocks` (or without a component) was made for another
    model: attached, the missing parts would compute and the file would claim a speedup it does not
    give. Refused, the model untouched; with `model.subset: true` it attaches, the rest computes, and
    the cost model counts what it leaves out as computed at every step."""
    model, inputs = tiny_flux()
    full = describe(model)
    partial = _flux_without(full, **left_out)
    reuse = {(g.name, c): ["1" * g.num_blocks] + ["0" * g.num_blocks] * (STEPS - 1)
             for g in partial.block_groups for c in g.components}
    schedule = Schedule.from_masks(partial, SamplingSpec(STEPS), reuse)
    with pytest.raises(ScheduleMismatchError, match=re.escape(message)) as err:
        apply_schedule(model, schedule)
    assert "model.subset: true" in str(err.value)
    assert has_no_hooks(model)

    marked = Schedule.from_masks(_flux_without(full, **left_out, subset=True), SamplingSpec(STEPS), reuse)
    calls = count_component_calls(model, full)
    with apply_schedule(model, marked):
        run_trajectory(model, inputs, STEPS)
    for g in full.block_groups:
        for c in g.components:
            listed = any(pg.name == g.name and c in pg.components for pg in partial.block_groups)
            for b in range(g.num_blocks):
                assert calls[(g.name, c, b)] == (1 if listed else STEPS), (g.name, c, b)
    table = measure_cost_table(model, lambda: run_trajectory(model, inputs, 1))
    same_on_the_full_model = Schedule.from_masks(full, SamplingSpec(STEPS), reuse)   # the rest computes
    assert schedule_macs(marked, table) == schedule_macs(same_on_the_full_model, table)


def test_refuses_to_stack_on_another_caching_method():
    model, _ = tiny_flux()
    schedule = Schedule.all_compute(describe(model), SamplingSpec(3))
    model.enable_cache(FirstBlockCacheConfig(threshold=0.2))
    with pytest.raises(ScheduleConflictError, match="FirstBlockCacheConfig"):
        apply_schedule(model, schedule)
    model.disable_cache()
    handle = apply_schedule(model, schedule)
    with pytest.raises(ScheduleConflictError, match="already applied"):
        apply_schedule(model, schedule)
    handle.remove()
    apply_schedule(model, schedule).remove()


def test_sequential_cfg_branches_keep_separate_caches():
    """FLUX-style pipelines run cond and uncond in `cache_context` branches: each branch must have
    its own step counter and cache, i.e. interleaving equals running each branch alone."""
    model, inputs = tiny_flux()
    schedule = alternating_schedule(describe(model), steps=4)
    other = {k: v.clone() * 0.5 if isinstance(v, torch.Tensor) and v.dtype.is_floating_point and k == "encoder_hidden_states" else v
             for k, v in inputs(0).items()}

    def branch_inputs(step, uncond):
        kw = inputs(step)
        if uncond:
            kw["encoder_hidden_states"] = other["encoder_hidden_states"]
        return kw

    with torch.no_grad(), apply_schedule(model, schedule) as handle:
        interleaved = {"cond": [], "uncond": []}
        for step in range(4):
            for name in ("cond", "uncond"):
                with model.cache_context(name):
                    interleaved[name].append(model(**branch_inputs(step, name == "uncond")).sample)
        assert handle.steps_run() == {"cond": 4, "uncond": 4}
        alone = {}
        for name in ("cond", "uncond"):
            handle.reset()
            alone[name] = [model(**branch_inputs(step, name == "uncond")).sample for step in range(4)]
    for name in ("cond", "uncond"):
        assert all(torch.equal(a, b) for a, b in zip(interleaved[name], alone[name])), name


# ------------------------------------------------------------------ on a real pipeline
@functools.lru_cache(maxsize=1)
def _dit_parts():
    torch.manual_seed(0)
    transformer = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                                        num_layers=3, sample_size=8, num_embeds_ada_norm=1000).eval()
    vae = AutoencoderKL(block_out_channels=(8,), latent_channels=4, norm_num_groups=8,
                        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",)).eval()
    return transformer, vae


def tiny_dit_pipeline() -> DiTPipeline:
    transformer, vae = _dit_parts()
    pipe = DiTPipeline(transformer=transformer, vae=vae, scheduler=DDIMScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, steps=STEPS):
    return pipe(class_labels=[1, 2], num_inference_steps=steps, guidance_scale=4.0,
                generator=torch.Generator().manual_seed(0), output_type="np").images


def test_pipeline_calls_repeat_reset_and_remove_cleanly():
    pipe = tiny_dit_pipeline()
    plain = generate(pipe)
    handle = apply_schedule(pipe, Schedule.all_compute(describe(pipe), SamplingSpec(STEPS)))
    assert (generate(pipe) == plain).all(), "all-compute through the pipeline is bit-identical"
    handle.remove()
    handle = apply_schedule(pipe, alternating_schedule(describe(pipe)))
    assert isinstance(pipe, DiTPipeline)
    first, second = generate(pipe), generate(pipe)
    assert (first == second).all(), "state resets between pipeline calls"
    assert not (first == plain).all()
    handle.remove()
    assert type(pipe) is DiTPipeline and has_no_hooks(pipe.transformer)
    assert (generate(pipe) == plain).all()


def test_pipeline_call_with_other_step_count_is_an_error_before_any_work():
    pipe = tiny_dit_pipeline()
    calls = []
    pipe.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    with apply_schedule(pipe, alternating_schedule(describe(pipe))):
        with pytest.raises(ScheduleStepError, match="called with 3 denoising steps but the schedule has "
                                                     "sampling.num_inference_steps=5"):
            generate(pipe, steps=3)
        assert calls == []
        generate(pipe)  # the handle still works after a refused call
    assert len(calls) == STEPS


def test_apply_accepts_a_path(tmp_path):
    from schedules import save_schedule
    model, inputs = tiny_pixart()
    schedule = alternating_schedule(describe(model))
    path = save_schedule(schedule, tmp_path / "s.json")
    with apply_schedule(model, path) as handle:
        assert handle.schedule == schedule
        run_trajectory(model, inputs, STEPS)


def test_skip_in_step_zero_is_rejected():
    spec = describe(tiny_pixart()[0])
    with pytest.raises(Exception, match="step 0 must compute"):
        Schedule.from_masks(spec, SamplingSpec(2), {("transformer_blocks", "ff"): [SKIP * 3, "111"]})
