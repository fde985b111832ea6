"""Export: pick rules, whole-front export, cache-dit configs, and the end-to-end promise that an
exported file, loaded and applied to the model, reproduces the metric stored for it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from schedules import BlockGroup, EvaluationResult, ModelSpec, SamplingSpec, Schedule, apply_schedule, describe, load_schedule
from store import (
    ExportError, NothingQualifies, ObjectiveError, Objective, Store, choose, export_front, export_pick, parse_pick,
)
from store.cachedit import cache_dit_config
from test_store import POINTS, fill_points, url_of
from tiny_models import run_trajectory, tiny_pixart

STEPS = 5


def psnr(out: list[torch.Tensor], ref: list[torch.Tensor]) -> float:
    """PSNR of the whole trajectory against the all-compute one, data range from the reference."""
    a, b = torch.stack(out).double(), torch.stack(ref).double()
    mse = torch.mean((a - b) ** 2).item()
    rng = (b.max() - b.min()).item()
    return math.inf if mse == 0 else 10 * math.log10(rng * rng / mse)


def rows(pattern: str, blocks: int = 3) -> tuple[str, ...]:
    """Per-step block rows from a per-step code: 'c' all compute, 'm' middle reuse, 'r' all but block 0."""
    table = {"c": "1" * blocks, "m": "1" + "0" * (blocks - 2) + "1", "r": "1" + "0" * (blocks - 1)}
    return tuple(table[ch] for ch in pattern)


def test_export_load_apply_reproduces_stored_metric(tmp_path: Path) -> None:
    model, inputs = tiny_pixart(num_layers=3)
    ref = run_trajectory(model, inputs, STEPS)
    spec, sampling = describe(model), SamplingSpec(STEPS, cfg="batched")
    plans = {
        "every-other": {c: rows("cmcmc") for c in ("attn1", "attn2", "ff")},
        "tgate": {"attn1": rows("ccccc"), "attn2": rows("ccrrr"), "ff": rows("ccccc")},
        "aggressive": {c: rows("crrrr") for c in ("attn1", "attn2", "ff")},
        "mild": {c: rows("cccmc") for c in ("attn1", "attn2", "ff")},
    }
    with Store(url_of(tmp_path / "e.db")) as store:
        store.create_study("tiny", {"seeds": [0]}, "tiny-pixart", "heuristics", {},
                           [Objective("psnr"), Objective("mac_speedup")], {"psnr": 0.0})
        for name, plan in plans.items():
            schedule = Schedule(spec, sampling, {"transformer_blocks": plan}, provenance={"heuristic": name})
            with apply_schedule(model, schedule):
                value = psnr(run_trajectory(model, inputs, STEPS), ref)
            store.record_evaluation("tiny", EvaluationResult(
                schedule, "done", metrics={"psnr": value}, mac_speedup=1 / schedule.compute_fraction(),
                prompt_set_hash="tiny-ps"))
        stored = {r.schedule_hash: r for r in store.evaluations("tiny")}
        out = export_pick(store, "tiny", "knee", tmp_path / "knee.json")

    loaded = load_schedule(out)
    record = stored[loaded.hash]
    assert loaded.metrics["psnr"] == record.metrics["psnr"]
    assert loaded.metrics["mac_speedup"] == record.mac_speedup
    prov = loaded.provenance
    assert (prov["study"], prov["searcher"], prov["prompt_set_hash"], prov["seeds"], prov["pick"]) == (
        "tiny", "heuristics", "tiny-ps", [0], "knee")
    assert prov["evaluation_id"] == record.id and "diffusers" in prov["versions"]
    assert prov["heuristic"] in plans

    fresh, fresh_inputs = tiny_pixart(num_layers=3)          # a new process would build the same model
    plain = run_trajectory(fresh, fresh_inputs, STEPS)
    with apply_schedule(fresh, loaded):
        again = psnr(run_trajectory(fresh, fresh_inputs, STEPS), plain)
    assert again == loaded.metrics["psnr"]


def test_pick_rules_on_hand_checked_points(tmp_path: Path) -> None:
    """Front E(35,1.0) A(30,1.5) B(25,2.0) C(22,3.0) G(19,4.0), D(24,1.8) dominated. Scaled to [0,1]
    (0 = best) the chord from E to G is x + y = 1, and every member lies beyond it (x + y: A 1.15, B 1.29,
    C 1.15): the front sags away from the ideal corner, so it has no knee in the bulge sense and the
    rule falls back to the member closest to the corner: A .890, B .913, C .878 -> C."""
    with Store(url_of(tmp_path / "k.db")) as s:
        ids = fill_points(s)
        assert choose(s, "p", "knee").id == ids["C"] == s.knee("p").id
        assert choose(s, "p", "fastest-with psnr>=26").id == ids["A"]
        assert choose(s, "p", "fastest-with quality >= 24").id == ids["B"]     # 'quality' = primary metric
        assert choose(s, "p", "best-with speedup>=1.9").id == ids["B"]
        assert choose(s, "p", "best-with mac_speedup>3.5").id == ids["G"]
        assert choose(s, "p", "fastest-with latent_mse<=70").id == ids["A"]     # lower-is-better bound
        with pytest.raises(NothingQualifies, match=r"has mac_speedup >= 5: the closest is evaluation \d+ "
                                                   r"with mac_speedup = 4"):
            export_pick(s, "p", "best-with speedup>=5", tmp_path / "x.json")
        with pytest.raises(NothingQualifies, match="psnr >= 40"):
            export_pick(s, "p", "fastest-with psnr>=40", tmp_path / "x.json")
        with pytest.raises(ObjectiveError, match="reports 'ssim'"):
            export_pick(s, "p", "fastest-with ssim>=0.5", tmp_path / "x.json")
        with pytest.raises(ObjectiveError, match="cannot read pick rule 'fastest psnr 30'; expected knee"):
            export_pick(s, "p", "fastest psnr 30", tmp_path / "x.json")
        with pytest.raises(ExportError, match="unknown export format 'onnx'"):
            export_pick(s, "p", "knee", tmp_path / "x.json", fmt="onnx")
        assert not (tmp_path / "x.json").exists()
        s.create_study("empty", {}, "sig", "random", {}, [Objective("psnr"), Objective("mac_speedup")], {"psnr": 0})
        with pytest.raises(NothingQualifies, match="no front"):
            export_pick(s, "empty", "knee", tmp_path / "x.json")

        written = export_front(s, "p", tmp_path / "front")
        assert len(written) == 5
        speeds = [load_schedule(p).metrics["mac_speedup"] for p in written]
        assert speeds == sorted(speeds, reverse=True) == [4.0, 3.0, 2.0, 1.5, 1.0]
        assert {load_schedule(p).hash for p in written} == {r.schedule_hash for r in s.front("p")}
    assert parse_pick("fastest-with psnr>=30").bound == ("psnr", ">=", 30.0)
    assert len(POINTS) == 7


def test_cache_dit_config_for_a_fitting_plan(tmp_path: Path) -> None:
    model, _ = tiny_pixart(num_layers=4)
    spec, sampling = describe(model), SamplingSpec(6, cfg="sequential")
    fit = {c: ("1111", "1001", "1111", "1001", "1001", "1111") for c in ("attn1", "attn2", "ff")}
    schedule = Schedule(spec, sampling, {"transformer_blocks": fit})
    with Store(url_of(tmp_path / "cd.db")) as s:
        s.create_study("cd", {}, "sig", "dp", {}, [Objective("psnr"), Objective("mac_speedup")], {"psnr": 0})
        s.record_evaluation("cd", EvaluationResult(schedule, "done", metrics={"psnr": 33.0}, mac_speedup=1.5))
        path = export_pick(s, "cd", "knee", tmp_path / "cd.yaml", fmt="cache-dit")
    text = path.read_text()
    assert text.startswith(f"# cachesearch schedule {schedule.hash}")
    assert "psnr=33" in text and "not identical" in text
    assert yaml.safe_load(text) == {"cache_config": {
        "Fn_compute_blocks": 1, "Bn_compute_blocks": 1, "num_inference_steps": 6,
        "steps_computation_mask": [1, 0, 1, 0, 0, 1], "steps_computation_policy": "static",
        "max_warmup_steps": 1, "warmup_interval": 1, "max_cached_steps": -1,
        "max_continuous_cached_steps": -1, "enable_separate_cfg": True}}


def _pixart_plan(**overrides: tuple[str, ...]) -> Schedule:
    spec = ModelSpec("pixart", "PixArtTransformer2DModel", (BlockGroup("transformer_blocks", 4, ("attn1", "attn2", "ff")),))
    plan = {c: overrides.get(c, ("1111", "1001", "1001")) for c in ("attn1", "attn2", "ff")}
    return Schedule(spec, SamplingSpec(3), {"transformer_blocks": plan})


@pytest.mark.parametrize("schedule, reason", [
    (_pixart_plan(attn2=("1111", "1101", "1001")),
     r"step 1, block 1 computes \['attn2'\] but reuses \['attn1', 'ff'\]"),
    (_pixart_plan(attn1=("1111", "10-1", "1001"), attn2=("1111", "10-1", "1001"), ff=("1111", "10-1", "1001")),
     r"step 1, block 2: attn1 '-' \(skip\)"),
    (_pixart_plan(attn1=("1111", "1111", "10F1"), attn2=("1111", "1111", "1001"), ff=("1111", "1111", "1001")),
     r"step 2, block 2: attn1 'F' \(forecast\)"),
    (_pixart_plan(attn1=("1111", "0001", "1001"), attn2=("1111", "0001", "1001"), ff=("1111", "0001", "1001")),
     r"step 1 reuses block 0; cache-dit always computes at least the first block"),
    (_pixart_plan(attn1=("1111", "1010", "1001"), attn2=("1111", "1010", "1001"), ff=("1111", "1010", "1001")),
     r"step 1 computes block\(s\) \[2\] between reused blocks 1 and 3"),
    (_pixart_plan(attn1=("1111", "1001", "1000"), attn2=("1111", "1001", "1000"), ff=("1111", "1001", "1000")),
     r"step 1 computes the first 1 and last 1 blocks but step 2 computes the first 1 and last 0"),
])
def test_cache_dit_refuses_plans_that_do_not_fit(schedule: Schedule, reason: str) -> None:
    with pytest.raises(ExportError, match="does not fit cache-dit: " + reason):
        cache_dit_config(schedule)


def test_cache_dit_refuses_other_layouts() -> None:
    flux = ModelSpec("flux", "FluxTransformer2DModel", (BlockGroup("transformer_blocks", 2, ("attn", "ff", "ff_context")),
                                                         BlockGroup("single_transformer_blocks", 2, ("attn", "proj_mlp", "proj_out"))))
    with pytest.raises(ExportError, match="2 block groups \\(transformer_blocks, single_transformer_blocks\\)"):
        cache_dit_config(Schedule.all_compute(flux, SamplingSpec(3)))
    unet = ModelSpec("unet", "UNet2DConditionModel", (BlockGroup("down_blocks", 2, ("block",)),))
    with pytest.raises(ExportError, match="UNet"):
        cache_dit_config(Schedule.all_compute(unet, SamplingSpec(3)))


@pytest.mark.parametrize("hostile", ["/somewhere/escaped/pwned", "../../escaped", "..", "a\\b:c*?\n", "x" * 400])
def test_file_names_from_study_names_never_leave_their_folder(tmp_path: Path, hostile: str) -> None:
    """New studies cannot have such names; a database written before the rule (or by another
    program) still can: `export --all-front` and the dashboard's download name stay in their folder."""
    import sqlite3

    from dashboard import data
    from store import StudyNameError
    db = tmp_path / "legacy.db"
    with Store(url_of(db)) as s:
        fill_points(s)
        with pytest.raises(StudyNameError, match=r"letters, digits, '\.', '_', '-' or '\+'"):
            s.create_study(hostile, {}, "sig", "random", {}, [Objective("psnr"), Objective("mac_speedup")], {"psnr": 0})
    with sqlite3.connect(db) as con:
        con.execute("UPDATE studies SET name = ? WHERE name = 'p'", (hostile,))
    folder = tmp_path / "work" / "front"
    with Store(url_of(db)) as s:
        written = export_front(s, hostile, folder)
        info = s.get_study(hostile)
        _, name = data.export_bytes(s, info, s.front(hostile)[0], "cachesearch")
    assert len(written) == 5 and all(p.parent == folder for p in written)
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in written)
    assert "/" not in name and "\\" not in name and not name.startswith(".") and len(name) <= 130
    everything = {p.relative_to(tmp_path) for p in tmp_path.rglob("*")}
    assert everything <= {Path("legacy.db"), Path("legacy.db-wal"), Path("legacy.db-shm"), Path("work"),
                          Path("work/front")} | {p.relative_to(tmp_path) for p in written}


def test_cache_dit_says_why_it_cannot_express_a_timestep_schedule() -> None:
    s = _pixart_plan()
    timed = Schedule(s.model, SamplingSpec(3, timesteps=(999, 600, 200)), s.plan)
    with pytest.raises(ExportError, match=r"samples 3 explicit timesteps \(999, 600, 200, ...\) and cache-dit "
                                          "configures caching only"):
        cache_dit_config(timed)


def test_exported_timestep_schedule_carries_its_timesteps_and_a_plain_call_samples_them(tmp_path: Path) -> None:
    from tiny_pipelines import TINY_PIPELINES
    entry = TINY_PIPELINES["pixart"]
    pipe = entry.build()
    sampling = SamplingSpec(4, scheduler="DPMSolverMultistepScheduler", timesteps=(999, 700, 350, 80), cfg="batched")
    schedule = Schedule.all_compute(describe(pipe), sampling, provenance={"reference_steps": 10})
    with Store(url_of(tmp_path / "t.db")) as store:
        store.create_study("ts", {"seeds": [0]}, "tiny-pixart", "dp", {},
                           [Objective("psnr"), Objective("mac_speedup")], {"psnr": 0.0})
        store.record_evaluation("ts", EvaluationResult(schedule, "done", metrics={"psnr": 30.0}, mac_speedup=2.5,
                                                       prompt_set_hash="ps"))
        path = export_pick(store, "ts", "knee", tmp_path / "ts.json")
    doc = yaml.safe_load(path.read_text())
    assert doc["sampling"]["timesteps"] == [999.0, 700.0, 350.0, 80.0] and doc["sampling"]["num_inference_steps"] == 4
    assert doc["provenance"]["reference_steps"] == 10
    seen = []
    pipe.transformer.register_forward_pre_hook(lambda m, a, k: seen.append(float(k["timestep"][0])), with_kwargs=True)
    with apply_schedule(pipe, load_schedule(path)):
        entry.run(pipe)
    assert seen == [999.0, 700.0, 350.0, 80.0]
    with Store(url_of(tmp_path / "t.db")) as store, pytest.raises(ExportError, match="does not fit cache-dit"):
        export_pick(store, "ts", "knee", tmp_path / "ts.yaml", fmt="cache-dit")
