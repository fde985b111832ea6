"""Block fast paths: a block none of whose components compute at a step runs only its gates and
residual adds, bit-identical to its forward with component hooks, for every family with a fast path."""

from __future__ import annotations

import pytest
import torch
from tiny_models import FAMILIES, run_trajectory

from schedules import SamplingSpec, Schedule, apply_schedule, counting_mode, describe, measure_cost_table, schedule_macs
from schedules.adapters import adapter_for, group_blocks

STEPS = 6
FAST_FAMILIES = sorted(f for f in FAMILIES
                       if any(layout.fast_path is not None for layout in adapter_for(FAMILIES[f]()[0]).groups))


def mixed_schedule(spec, steps: int = STEPS) -> Schedule:
    """Every kind of step: whole-block reuse (fast path), partial reuse (hooks only), skips inside a
    fully non-compute block, forecasts, and blocks that keep computing."""
    masks = {}
    for gi, g in enumerate(spec.block_groups):
        for ci, c in enumerate(g.components):
            rows = ["1" * g.num_blocks, "1" * g.num_blocks]
            for step in range(2, steps):
                row = []
                for b in range(g.num_blocks):
                    if step % 2 == 1 and b == 0:
                        row.append("1")                        # a block that computes at odd steps
                    elif step == 3 and b == g.num_blocks - 1:
                        row.append("1" if ci == 0 else "0")    # partial reuse: hooks, no fast path
                    elif step == 4 and ci == len(g.components) - 1:
                        row.append("-")                        # a skip inside a fast block
                    elif step == 5 and ci == 0:
                        row.append("F")                        # a forecast inside a fast block
                    else:
                        row.append("0")
                rows.append("".join(row))
            masks[(g.name, c)] = rows
    return Schedule.from_masks(spec, SamplingSpec(steps), masks)


@pytest.mark.parametrize("family", FAST_FAMILIES)
def test_fast_paths_are_bit_identical_to_the_hooked_forward(family):
    model, inputs = FAMILIES[family]()
    schedule = mixed_schedule(describe(model))
    with apply_schedule(model, schedule, fast_paths=False) as slow:
        reference = run_trajectory(model, inputs, STEPS)
        assert slow.fast_blocks == []
    with apply_schedule(model, schedule) as fast:
        outputs = run_trajectory(model, inputs, STEPS)
        assert fast.fast_blocks, "the mixed plan has whole-block reuse: some fast path must attach"
    for step, (a, b) in enumerate(zip(reference, outputs)):
        assert torch.equal(a, b), f"{family}: step {step} differs between fast path and forward"


@pytest.mark.parametrize("family", FAST_FAMILIES)
def test_fast_path_skips_the_block_forward(family):
    """At a whole-block reuse step the block's own forward (norms, modulation, processors) never runs."""
    model, inputs = FAMILIES[family]()
    spec = describe(model)
    masks = {(g.name, c): ["1" * g.num_blocks] + ["0" * g.num_blocks] * (STEPS - 1)
             for g in spec.block_groups for c in g.components}
    schedule = Schedule.from_masks(spec, SamplingSpec(STEPS), masks)
    calls = []
    norms = [getattr(block, "norm1", None) or block.norm
             for layout in adapter_for(model).groups for block in group_blocks(model, layout.attribute)]
    handles = [norm.register_forward_pre_hook(lambda *a: calls.append(1)) for norm in norms]
    n_blocks = len(handles)
    with apply_schedule(model, schedule):
        run_trajectory(model, inputs, STEPS)
    for h in handles:
        h.remove()
    assert n_blocks and len(calls) == n_blocks, "each block's first norm runs at step 0 only"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_predicted_macs_equal_measured_macs_with_fast_paths(family):
    model, inputs = FAMILIES[family]()
    spec = describe(model)
    table = measure_cost_table(model, lambda: model(**inputs(0)))
    schedule = mixed_schedule(spec)
    with apply_schedule(model, schedule), counting_mode() as counter:
        run_trajectory(model, inputs, STEPS)
    assert schedule_macs(schedule, table) == counter.get_total_flops() // 2


def test_caption_projection_runs_only_where_a_cross_attention_computes():
    """PixArt's caption projection only feeds attn2: at steps where no attn2 computes it sits out."""
    model, inputs = FAMILIES["pixart"]()
    spec = describe(model)
    n = spec.block_groups[0].num_blocks
    attn2 = ["1" * n, "0" * n, "1" + "0" * (n - 1), "0" * n, "0" * n, "1" * n]
    schedule = Schedule.from_masks(spec, SamplingSpec(STEPS), {("transformer_blocks", "attn2"): attn2})
    calls = []
    model.caption_projection.linear_1.register_forward_pre_hook(lambda *a: calls.append(1))  # inside: runs only if it computes
    with apply_schedule(model, schedule, fast_paths=False):
        reference = run_trajectory(model, inputs, STEPS)
    assert len(calls) == STEPS
    calls.clear()
    with apply_schedule(model, schedule) as handle:
        outputs = run_trajectory(model, inputs, STEPS)
        assert handle.skipped_feeders == ["caption_projection"]
    assert len(calls) == 3, "steps 0, 2 and 5 compute an attn2"
    assert all(torch.equal(a, b) for a, b in zip(reference, outputs))


@pytest.mark.slow
def test_a_scheduled_denoiser_compiles_one_graph_per_step_pattern():
    """Under torch.compile (inductor, CPU) a static reuse schedule runs with the same outputs as in
    eager mode, and dynamo builds graphs per distinct step pattern, not per step."""
    import torch._dynamo

    model, inputs = FAMILIES["pixart"]()
    spec = describe(model)
    steps = 9
    masks = {(g.name, c): [("1" if s % 3 == 0 else "0") * g.num_blocks for s in range(steps)]
             for g in spec.block_groups for c in g.components}
    schedule = Schedule.from_masks(spec, SamplingSpec(steps), masks)   # two step patterns
    with apply_schedule(model, schedule):
        eager = run_trajectory(model, inputs, steps)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = torch.compile(model, dynamic=False)
    with apply_schedule(model, schedule):
        first = run_trajectory(compiled, inputs, steps)
        second = run_trajectory(compiled, inputs, steps)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    torch._dynamo.reset()
    for a, b, c in zip(eager, first, second):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4) and torch.equal(b, c)
    # the step counter is a graph break at the top of the denoiser: per pattern, one graph before
    # and one after it; more would mean dynamo specialised on the step number
    assert graphs <= 2 * 2 + 1, f"{graphs} graphs for 2 step patterns"
