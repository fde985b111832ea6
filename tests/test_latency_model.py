"""The latency cost model: features count what the runtime executes, the fit recovers known costs.
No wall clock anywhere: "measured" seconds come from a known synthetic cost plus deterministic noise."""

from __future__ import annotations

import random

import pytest
from tiny_models import FAMILIES, run_trajectory

from schedules import SamplingSpec, Schedule, apply_schedule, describe, measure_cost_table
from schedules.latency import LatencyTable, random_schedule, calibration_schedules, features, measure_latency_table, validate

STEPS = 8


def _setup(family: str):
    model, inputs = FAMILIES[family]()
    spec = describe(model)
    table = measure_cost_table(model, lambda: model(**inputs(0)))
    return model, inputs, spec, table


def _truth(table) -> dict[str, float]:
    """A plausible cost per piece: components by their MACs, fixed costs per step/run/fast block."""
    truth = {"run": 0.05, "step": 0.004}
    for g, comps in table.component_macs.items():
        for c, macs in comps.items():
            truth[f"compute:{g}.{c}"] = 1e-9 * max(macs) + 2e-4
        truth[f"served:{g}"] = 2e-5
        truth[f"fast:{g}"] = -4e-4
        truth[f"forecast:{g}"] = 5e-5
    for attribute in table.feeder_macs:
        truth[f"feeder:{attribute}"] = 3e-4
    return truth


@pytest.mark.parametrize("family", ["pixart", "flux"])
def test_fit_recovers_a_known_cost_model(family):
    _, _, spec, table = _setup(family)
    sampling = SamplingSpec(STEPS)
    truth = _truth(table)
    noise = random.Random(0)

    def time_run(schedule: Schedule) -> float:   # the injected "clock": known cost x (1 +- 1%)
        seconds = sum(truth.get(k, 0.0) * v for k, v in features(schedule, table).items())
        return seconds * (1 + noise.uniform(-0.01, 0.01))

    model = measure_latency_table(time_run, spec, sampling, table, repeats=3)
    assert model.fit_error < 0.01
    rng = random.Random(7)
    others = [random_schedule(spec, sampling, rng, p, "0F") for p in (0.1, 0.3, 0.5, 0.7, 0.9) for _ in range(4)]
    exact = [(s, sum(truth.get(k, 0.0) * v for k, v in features(s, table).items())) for s in others]
    assert validate(model, exact)["max_abs_error"] < 0.02
    full = Schedule.all_compute(spec, sampling)
    assert model.speedup(full) == pytest.approx(1.0)


def test_features_count_what_the_runtime_executes():
    """compute:* counts equal the real component calls; fast:* the steps on which blocks take their
    fast path (counted by the runtime's own block hooks)."""
    model, inputs, spec, table = _setup("pixart")
    sampling = SamplingSpec(STEPS)
    schedule = random_schedule(spec, sampling, random.Random(3), 0.4, "0")
    feats = features(schedule, table)
    calls = {c: 0 for c in ("attn1", "attn2", "ff")}
    for block in model.transformer_blocks:   # submodules inside a component fire only when it computes
        for c, inner in (("attn1", block.attn1.to_q), ("attn2", block.attn2.to_q), ("ff", block.ff.net[0])):
            inner.register_forward_pre_hook(lambda *a, _c=c: calls.__setitem__(_c, calls[_c] + 1))
    with apply_schedule(model, schedule) as handle:
        run_trajectory(model, inputs, STEPS)
        fast_hooks = [h for m, name in handle._hooked if name == "cachesearch_reused_block"
                      for h in [m._diffusers_hook.get_hook(name)]]
        fast_block_steps = sum(sum(h.fast_steps) for h in fast_hooks)
    assert {c: feats[f"compute:transformer_blocks.{c}"] for c in calls} == calls
    assert feats.get("fast:transformer_blocks", 0) == fast_block_steps
    assert feats["step"] == STEPS and feats["run"] == 1


def test_table_round_trips_and_refuses_other_models():
    _, _, spec, table = _setup("pixart")
    sampling = SamplingSpec(STEPS)
    truth = _truth(table)
    model = measure_latency_table(lambda s: sum(truth.get(k, 0) * v for k, v in features(s, table).items()),
                                  spec, sampling, table, repeats=1)
    again = LatencyTable.from_dict(model.to_dict(), table)
    schedule = calibration_schedules(spec, sampling)[4]
    assert again.predict(schedule) == pytest.approx(model.predict(schedule))
    _, _, flux_spec, _ = _setup("flux")
    with pytest.raises(ValueError, match="latency table is for PixArtTransformer2DModel"):
        model.predict(Schedule.all_compute(flux_spec, sampling))
