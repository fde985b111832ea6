"""The mode table: every consumer reads it, forecasting extrapolates exactly, bad plans are refused."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import tiny_pixart

from schedules import SamplingSpec, Schedule, ScheduleError, apply_schedule, describe, json_schema
from schedules.modes import FORECAST, MODE_TABLE, mode_of, plan_pattern


class Linear(torch.nn.Module):
    """A denoiser whose one component's output is exactly linear in the step: a*x + b*step."""

    def __init__(self) -> None:
        super().__init__()
        self.block = torch.nn.ModuleList([Block()])

    def forward(self, x: torch.Tensor, step: float) -> torch.Tensor:
        return self.block[0](x, step)


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.comp = Comp()

    def forward(self, x: torch.Tensor, step: float) -> torch.Tensor:
        return self.comp(x, step)


class Comp(torch.nn.Module):
    def forward(self, x: torch.Tensor, step: float) -> torch.Tensor:
        return 3.0 * x + 0.5 * step


def test_forecast_state_extrapolates_linear_outputs_exactly():
    state = MODE_TABLE[FORECAST].state()
    x = torch.randn(4, 8)
    for s in (0, 1):
        state.update(3.0 * x + 0.5 * s, float(s))
    for s in (2, 3, 7):
        torch.testing.assert_close(state.predict(float(s)), 3.0 * x + 0.5 * s, rtol=1e-6, atol=1e-6)
    state.update(3.0 * x + 0.5 * 4, 4.0)        # non-uniform gap: positions, not call counts
    torch.testing.assert_close(state.predict(9.0), 3.0 * x + 0.5 * 9, rtol=1e-6, atol=1e-5)
    state.reset()
    assert state.predict(1.0) is None


def test_forecast_cells_on_a_live_model_follow_the_line_and_reset_between_runs(monkeypatch):
    """Through the real runtime (hooks, step counter): F cells equal the exact continuation."""
    import schedules.adapters as adapters
    linear = adapters.Adapter("linear", ("Linear",), (adapters.GroupLayout("block", ("comp",)),))
    monkeypatch.setattr(adapters, "ADAPTERS", adapters.ADAPTERS + (linear,))
    model = Linear()
    schedule = Schedule.from_masks(describe(model), SamplingSpec(5), {("block", "comp"): ["1", "1", "F", "F", "1"]})
    x = torch.randn(2, 3)
    with apply_schedule(model, schedule):
        for _ in range(2):   # a second trajectory: the forecast state starts over
            outs = [model(x, float(s)) for s in range(5)]
            for s, out in enumerate(outs):
                torch.testing.assert_close(out, 3.0 * x + 0.5 * s, rtol=1e-6, atol=1e-6)


def test_a_forecast_needs_two_earlier_computes_and_the_error_names_the_cell():
    spec = describe(tiny_pixart()[0])
    rows = ["111", "1F1", "111"]
    with pytest.raises(ScheduleError, match=r"plan.transformer_blocks.ff\[1\].*block 1 is 'F' \(forecast\) at "
                                            r"step 1, which needs 2 earlier computes"):
        Schedule.from_masks(spec, SamplingSpec(3), {("transformer_blocks", "ff"): rows})
    Schedule.from_masks(spec, SamplingSpec(4), {("transformer_blocks", "ff"): ["111", "111", "1F1", "F1F"]})


def test_unknown_modes_are_errors_everywhere():
    spec = describe(tiny_pixart()[0])
    with pytest.raises(ScheduleError, match="outside the alphabet"):
        Schedule.from_masks(spec, SamplingSpec(2), {("transformer_blocks", "ff"): ["111", "1X1"]})
    with pytest.raises(ScheduleError, match="unknown mode 'X'"):
        mode_of("X")


def test_the_json_schema_pattern_is_the_table():
    pattern = json_schema()["properties"]["plan"]["additionalProperties"]["additionalProperties"]["items"]["pattern"]
    assert pattern == plan_pattern()
    assert set(json.loads(json.dumps(list(MODE_TABLE)))) == {"1", "0", "-", "F", "D"}


def test_cache_memory_counts_each_modes_history_at_measured_sizes():
    from schedules import cache_memory, measure_cost_table
    model, inputs = tiny_pixart()
    spec = describe(model)
    table = measure_cost_table(model, lambda: model(**inputs(0)))
    one = table.output_bytes["transformer_blocks"]["ff"][0]
    assert one == 2 * 16 * 16 * 4            # batch 2, 16 tokens, 16 channels, float32
    reuse = Schedule.from_masks(spec, SamplingSpec(4), {("transformer_blocks", "ff"): ["111", "011", "111", "111"]})
    assert cache_memory(reuse, table)["bytes"] == one
    forecast = Schedule.from_masks(spec, SamplingSpec(4), {("transformer_blocks", "ff"): ["111", "111", "F11", "011"]})
    assert cache_memory(forecast, table)["bytes"] == 2 * one, "a forecast holds two outputs, shared with reuse"
    assert cache_memory(Schedule.all_compute(spec, SamplingSpec(4)), table)["bytes"] == 0
