"""Evaluators on a tiny random PixArtAlphaPipeline saved to disk and loaded by path (no download).

Covers: config errors (field-level, plug-in weights/packages), hub/local-path loading, the local pool's
scores, dedup, failures (mismatch, NaN) that leave the pool working, the reference cache (hit on the
same settings, miss on any change), drift profiling, and the Ray pool (same metrics as in-process;
an actor SIGKILLed mid-evaluation -> retried, every schedule reported once).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from tiny_pipelines import TINY_PIXART_KWARGS, save_tiny_clip, save_tiny_pixart

from evaluators import EvaluationConfig, LocalPool, make_pool
from evaluators.metrics import PSNR_CAP_DB
from evaluators.models import ModelLoadError, load_model
from evaluators.prompts import load_prompts, pairs
from evaluators.references import Reference, ReferenceStore
from schedules import Schedule

STEPS = 10
GROUP = "transformer_blocks"
COMPONENTS = ("attn1", "attn2", "ff")


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory) -> Path:
    return save_tiny_pixart(tmp_path_factory.mktemp("models") / "tiny-pixart")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def tiny_config(path: Path, cache: Path, **over) -> EvaluationConfig:
    doc = dict(model=str(path), prompts="calibration", num_prompts=3, seeds=[0, 1], num_inference_steps=STEPS,
               guidance_scale=4.0, batch_size=4, pipeline_kwargs=TINY_PIXART_KWARGS, cache_dir=str(cache),
               n_thumbnails=2, latency={"warmup": 0, "repeats": 1}, profile_pairs=2,
               num_threads=1)   # Ray actors and this process alike: the same kernels, so the same bits
    doc.update(over)
    return EvaluationConfig(**doc)


@pytest.fixture(scope="module")
def local_pool(tiny_path, cache_dir):
    with LocalPool(tiny_config(tiny_path, cache_dir)) as pool:
        yield pool


def fora(pool, every: int, block_mask=None) -> Schedule:
    """Reuse the components of the blocks in `block_mask` (default all) except on every `every`-th step."""
    spec, sampling = pool.model_spec(), pool.sampling_spec()
    n = spec.group(GROUP).num_blocks
    reuse = block_mask or [True] * n
    rows = [[True] * n if s % every == 0 else [not r for r in reuse] for s in range(STEPS)]
    return Schedule.from_masks(spec, sampling, {(GROUP, c): rows for c in COMPONENTS})


# ------------------------------------------------------------------------------------------ config
def test_config_defaults_and_hashes(tiny_path, cache_dir):
    cfg = EvaluationConfig()
    assert cfg.model == "embedded" and cfg.pool.kind == "local"
    assert cfg.metric_names()[:3] == ["latent_mse", "psnr", "ssim"]
    base = tiny_config(tiny_path, cache_dir)
    assert base.metric_names() == ["latent_mse", "psnr", "ssim"]
    same = tiny_config(tiny_path, cache_dir)
    assert base.model_signature() == same.model_signature() and base.prompt_set_hash() == same.prompt_set_hash()
    more_seeds = tiny_config(tiny_path, cache_dir, seeds=[0, 1, 2])
    assert more_seeds.model_signature() == base.model_signature()
    assert more_seeds.prompt_set_hash() != base.prompt_set_hash()
    guided = tiny_config(tiny_path, cache_dir, guidance_scale=5.0)
    assert guided.model_signature() != base.model_signature()
    # round trip as the study YAML will embed it
    restored = EvaluationConfig.model_validate(json.loads(base.model_dump_json()))
    assert restored.prompt_set_hash() == base.prompt_set_hash()


@pytest.mark.parametrize("doc, field, needle", [
    ({"model": "./no/such/folder"}, "model", "does not exist"),
    ({"pool": {"kind": "slurm"}}, "pool.kind", "'local' or 'ray'"),
    ({"prompts": "no-such-file.txt"}, "prompts", "neither a built-in prompt set"),
    ({"seeds": []}, "seeds", "at least one seed"),
    ({"dtype": "int8"}, "dtype", "float32"),
    ({"scheduler": "NoSuchScheduler"}, "scheduler", "no scheduler class"),
    ({"metrics": ["psnr", "nope"]}, "metrics", "unknown metric"),
    ({"metrics": ["clip_score"]}, "metrics", "needs `path`"),
    ({"metrics": [{"name": "clip_score", "path": "/no/such/clip"}]}, "metrics", "does not exist"),
    ({"metrics": ["imagereward"]}, "metrics", "image-reward"),
    ({"model": "org/some-model", "metrics": ["judge_adherence"]}, "metrics", "embedded"),
    ({"unknown_field": 1}, "unknown_field", "Extra inputs"),
])
def test_config_errors_are_field_level_and_clear(doc, field, needle):
    with pytest.raises(ValidationError) as info:
        EvaluationConfig(**doc)
    errors = info.value.errors()
    assert any(".".join(str(p) for p in e["loc"]) == field for e in errors), errors
    assert needle in str(info.value)


def test_plugin_weights_checked_at_config_time(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    with pytest.raises(ValidationError, match="no config.json"):
        EvaluationConfig(metrics=[{"name": "clip_score", "path": str(folder)}])
    (folder / "config.json").write_text("{}")
    with pytest.raises(ValidationError, match="no weights"):
        EvaluationConfig(metrics=[{"name": "clip_score", "path": str(folder)}])
    (folder / "model.safetensors").write_bytes(b"")
    cfg = EvaluationConfig(metrics=[{"name": "clip_score", "path": str(folder)}])
    assert cfg.metric_names() == ["clip_score"]
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(ValidationError, match="torchvision"):
            EvaluationConfig(metrics=[{"name": "lpips", "path": str(folder / "model.safetensors")}])
    else:
        with pytest.raises(ValidationError, match="does not exist"):
            EvaluationConfig(metrics=[{"name": "lpips", "path": str(tmp_path / "alexnet.pth")}])


def test_clip_score_plugin_from_local_folder(tmp_path):
    from evaluators.metrics import Batch, build_metrics
    folder = save_tiny_clip(tmp_path / "tiny-clip")
    cfg = EvaluationConfig(metrics=[{"name": "clip_score", "path": str(folder)}])
    [metric] = build_metrics(cfg, torch.device("cpu"))
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    values = metric.update(Batch(["a red circle", "a blue square", "a ring"], [0, 0, 0], images, None, images, None))
    assert len(values) == 3 and all(0.0 <= v <= 100.0 for v in values)
    assert values == metric.update(Batch(["a red circle", "a blue square", "a ring"], [0, 0, 0], images, None,
                                         images, None))


def test_prompt_files(tmp_path, tiny_path, cache_dir):
    lines = tmp_path / "p.txt"
    lines.write_text("# comment\na red circle\n\na blue square\n")
    listed = tmp_path / "p.json"
    listed.write_text(json.dumps(["a red circle", "a blue square"]))
    for f in (lines, listed):
        cfg = tiny_config(tiny_path, cache_dir, prompts=str(f), num_prompts=None, seeds=[3, 4])
        assert load_prompts(cfg) == ["a red circle", "a blue square"]
        assert pairs(cfg) == [("a red circle", 3), ("a red circle", 4), ("a blue square", 3), ("a blue square", 4)]
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="list of non-empty strings"):
        load_prompts(tiny_config(tiny_path, cache_dir, prompts=str(bad)))


# ------------------------------------------------------------------------------------------ loading
def test_load_model_from_local_path(tiny_path, cache_dir, tmp_path):
    pipe = load_model(tiny_config(tiny_path, cache_dir, pipeline_class="PixArtAlphaPipeline",
                                  scheduler="DDIMScheduler"))
    assert type(pipe).__name__ == "PixArtAlphaPipeline"
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    assert next(pipe.transformer.parameters()).dtype == torch.float32
    empty = tmp_path / "not-a-pipeline"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="not-a-pipeline"):
        load_model(tiny_config(empty, cache_dir))


# ------------------------------------------------------------------------------------------ local pool
def test_local_pool_scores_all_compute_and_reuse(local_pool):
    n_pairs = 6
    base, reuse = local_pool.all_compute_schedule(), fora(local_pool, 2)
    results = {r.schedule.hash: r for r in local_pool.evaluate([base, reuse, base])}
    assert len(results) == 2                                         # duplicate evaluated once
    ref, fast = results[base.hash], results[reuse.hash]
    assert ref.ok and fast.ok, (ref.error, fast.error)
    assert ref.metrics["psnr"] == PSNR_CAP_DB and ref.metrics["latent_mse"] == 0.0
    assert ref.metrics["ssim"] == pytest.approx(1.0)
    assert ref.mac_speedup == 1.0 and fast.mac_speedup > 1.5 and fast.macs < ref.macs
    assert fast.metrics["psnr"] < PSNR_CAP_DB and fast.metrics["latent_mse"] > 0
    for r in (ref, fast):
        assert set(r.per_prompt) == {"latent_mse", "psnr", "ssim"}
        assert all(len(v) == n_pairs for v in r.per_prompt.values())
        assert r.metrics["psnr"] == pytest.approx(sum(r.per_prompt["psnr"]) / n_pairs)
        assert len(r.thumbnails) == 2 and r.thumbnails[0][:8] == b"\x89PNG\r\n\x1a\n"
        assert r.latency_s > 0 and r.latency_speedup > 0
        assert r.prompt_set_hash == local_pool.config.prompt_set_hash()
        assert r.started_at <= r.finished_at and r.worker.startswith("local@")
    assert len(local_pool.reference_thumbnails()) == 2
    assert local_pool.sampling_spec().cfg == "batched"


def test_mismatched_schedule_fails_with_reason(local_pool):
    from schedules import SamplingSpec
    wrong = Schedule.all_compute(local_pool.model_spec(), SamplingSpec(STEPS, cfg="sequential"))
    sigmas = Schedule.all_compute(local_pool.model_spec(), SamplingSpec(2, cfg="batched", sigmas=(1.0, 0.5)))
    results = {r.schedule.hash: r for r in local_pool.evaluate([wrong, sigmas])}
    assert results[wrong.hash].status == "failed" and "cfg='sequential'" in results[wrong.hash].error
    assert results[sigmas.hash].status == "failed"
    assert "DPMSolverMultistepScheduler cannot sample custom sigmas" in results[sigmas.hash].error


def explicit_steps(pool, every: int, fora_every: int = 1) -> Schedule:
    """Every `every`-th point of the study's own STEPS timesteps, optionally with FORA reuse on top."""
    kind, grid = pool.timestep_grid(STEPS)
    values = grid[::every]
    sampling = replace(pool.sampling_spec(), num_inference_steps=len(values), **{kind: values})
    n = pool.model_spec().group(GROUP).num_blocks
    rows = [[s % fora_every == 0] * n for s in range(len(values))]
    return Schedule.from_masks(pool.model_spec(), sampling, {(GROUP, c): rows for c in COMPONENTS})


def test_fewer_explicit_timesteps_are_scored_against_the_full_step_reference(local_pool):
    kind, grid = local_pool.timestep_grid(STEPS)
    assert kind == "timesteps" and len(grid) == STEPS
    half, half_fora = explicit_steps(local_pool, 2), explicit_steps(local_pool, 2, fora_every=2)
    calls = []
    handle = local_pool.evaluator.denoiser.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        results = {r.schedule.hash: r for r in local_pool.evaluate([half, half_fora])}
    finally:
        handle.remove()
    a, b = results[half.hash], results[half_fora.hash]
    assert a.ok and b.ok, (a.error, b.error)
    assert len(calls) == 2 * 2 * (STEPS // 2)          # 2 schedules x 2 batches x 5 steps: nothing more
    [ref] = local_pool.evaluate([local_pool.all_compute_schedule()])
    assert a.mac_speedup == pytest.approx(2.0) and a.macs * 2 == ref.macs
    assert b.mac_speedup > a.mac_speedup and b.macs < a.macs
    assert a.metrics["psnr"] < PSNR_CAP_DB and a.metrics["latent_mse"] > 0   # against the 10-step reference
    profile = local_pool.profile(half)
    assert profile[(GROUP, "attn1")].shape == (2, STEPS // 2, STEPS // 2)


def test_timestep_costs_on_the_fine_grid(local_pool):
    import numpy as np
    _, grid = local_pool.timestep_grid(STEPS)
    costs = local_pool.timestep_costs(grid)
    assert costs.shape == (STEPS + 1, STEPS + 1)
    upper = np.triu_indices(STEPS + 1, k=1)
    assert np.isfinite(costs[upper]).all() and (costs[upper] >= 0).all()
    assert np.isinf(costs[np.tril_indices(STEPS + 1)]).all()
    assert costs[0, STEPS] > costs[0, 2] > 0, "a longer jump costs more"


def test_nan_output_fails_and_pool_keeps_working(local_pool):
    """Poison block 1's self-attention output on late steps (timestep < 550): every schedule that
    computes it there makes NaN; one that reuses it there stays finite."""
    transformer = local_pool.evaluator.pipe.transformer
    state = {"t": 1000.0}

    def remember_t(module, args, kwargs):
        state["t"] = float(kwargs["timestep"].reshape(-1)[0])

    def poison(module, args, output):
        return output * float("nan") if state["t"] < 550 else output

    late_reuse = [[True, True] if s < 5 else [True, False] for s in range(STEPS)]
    spared = Schedule.from_masks(local_pool.model_spec(), local_pool.sampling_spec(), {(GROUP, "attn1"): late_reuse})
    base = local_pool.all_compute_schedule()
    handles = [transformer.register_forward_pre_hook(remember_t, with_kwargs=True),
               transformer.transformer_blocks[1].attn1.to_out[0].register_forward_hook(poison)]
    try:
        results = {r.schedule.hash: r for r in local_pool.evaluate([base, spared])}
    finally:
        for h in handles:
            h.remove()
    assert results[base.hash].status == "failed"
    assert "NaN/inf" in results[base.hash].error and "latents" in results[base.hash].error
    assert results[spared.hash].ok and math.isfinite(results[spared.hash].metrics["psnr"])
    [again] = local_pool.evaluate([base])                              # the pool still works
    assert again.ok and again.metrics["psnr"] == PSNR_CAP_DB


class CallClock:
    """A clock that moves only when the transformer runs, `cost` seconds per call: timings are exact,
    whatever else the machine is doing (the real clock is measured in bench/latency_drift.py)."""

    def __init__(self, cost: float) -> None:
        self.now, self.cost = 0.0, cost

    def __call__(self) -> float:
        return self.now

    def tick(self, *_: object) -> None:
        self.now += self.cost


def test_reference_latency_is_retimed_when_the_machine_slows_down(tiny_path, cache_dir):
    """Every transformer call becomes 5x slower after start-up (another job took the machine): the
    all-compute schedule first looks 5x *slower* than its own start-up reference; once the reference
    is re-timed (every 2nd evaluation, window 1) its speedup is exactly 1 again. One batch of all 6
    images, batched CFG: one transformer call per step."""
    config = tiny_config(tiny_path, cache_dir, batch_size=6, latency={"warmup": 0, "repeats": 1,
                                                                      "reference_every": 2, "reference_window": 1})
    clock = CallClock(0.010)
    pipe = load_model(config)
    pipe.transformer.register_forward_pre_hook(clock.tick)
    with LocalPool(config, pipe=pipe, clock=clock) as pool:
        base = pool.all_compute_schedule()
        before = pool.evaluator.reference_latency_s
        clock.cost = 0.050
        [stale] = pool.evaluate([base])        # evaluation 1: the start-up reference
        [retimed] = pool.evaluate([base])      # evaluation 2: the reference is re-timed first
        after = pool.evaluator.reference_latency_s
    assert before == pytest.approx(STEPS * 0.010 / 6)
    assert stale.latency_s == pytest.approx(STEPS * 0.050 / 6) and stale.latency_speedup == pytest.approx(0.2)
    assert after == pytest.approx(5 * before)
    assert retimed.latency_speedup == pytest.approx(1.0)


def test_profile_drift(local_pool):
    prof = local_pool.profile(None)
    assert prof.seconds > 0 and prof.schedule_hash is None and prof.num_pairs == 2
    assert set(prof) == {(GROUP, c) for c in COMPONENTS}
    for d in prof.values():
        assert d.shape == (2, STEPS, STEPS) and torch.isfinite(d).all()
        assert torch.all(torch.diagonal(d, dim1=1, dim2=2) == 0) and (d > 0).sum() == 2 * STEPS * (STEPS - 1)
    # forecast errors for every forecast mode of the table: defined exactly where p < a < s
    from evaluators.profiling import FORECAST_WINDOW
    from schedules.modes import forecast_modes
    assert set(prof.forecast) == {(GROUP, c, m) for c in COMPONENTS for m in forecast_modes()}
    for f in prof.forecast.values():
        assert f.shape == (2, STEPS, STEPS, STEPS)
        p, a, s = torch.meshgrid(*(torch.arange(STEPS),) * 3, indexing="ij")
        valid = (p < a) & (a < s) & (a - p <= FORECAST_WINDOW) & (s - a <= FORECAST_WINDOW)
        assert torch.isfinite(f[:, valid]).all() and not torch.isfinite(f[:, ~valid]).any()
    reuse = fora(local_pool, 2)
    on_policy = local_pool.profile(reuse)
    assert on_policy.schedule_hash == reuse.hash
    # fresh outputs are recorded on reused steps too, so consecutive steps still differ
    assert (on_policy[(GROUP, "ff")][:, 0, 1] > 0).all()
    assert not torch.equal(on_policy[(GROUP, "ff")], prof[(GROUP, "ff")])


# ------------------------------------------------------------------------------------------ reference cache
def test_reference_cache_hits_and_misses(tiny_path, cache_dir, tmp_path):
    calls: list[int] = []

    def fake_compute(prompts, seeds):
        calls.append(len(prompts))
        return [Reference(torch.full((3, 4, 4), float(s)), torch.zeros(4, 2, 2)) for s in seeds]

    def run(cfg) -> ReferenceStore:
        store = ReferenceStore(cfg, "cpu")
        ps = pairs(cfg)
        refs = store.get_or_compute([ps[:4], ps[4:]], fake_compute)
        assert [float(r.image[0, 0, 0]) for r in refs] == [float(s) for _, s in ps]
        return store

    root = tmp_path / "cache"
    base = tiny_config(tiny_path, root)
    first = run(base)
    assert first.misses == 6 and first.hits == 0
    again = run(tiny_config(tiny_path, root))
    assert again.hits == 6 and again.misses == 0
    model_copy = tmp_path / "model-copy"
    shutil.copytree(tiny_path, model_copy)
    sched = json.loads((model_copy / "scheduler" / "scheduler_config.json").read_text())
    sched["beta_end"] = 0.03
    (model_copy / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched))
    for change in ({"guidance_scale": 3.0}, {"num_inference_steps": STEPS + 2}, {"height": 32, "width": 32},
                   {"scheduler": "DDIMScheduler"}, {"dtype": "bfloat16"}, {"pipeline_kwargs": {}},
                   {"model": str(model_copy)}):
        store = run(tiny_config(tiny_path, root, **change))
        assert store.hits == 0 and store.misses == 6, change
    new_seed = run(tiny_config(tiny_path, root, seeds=[0, 5]))      # only the pairs with seed 5 are new
    assert new_seed.hits == 3 and new_seed.misses == 3
    assert ReferenceStore(base, "cuda").key("p", 0) != ReferenceStore(base, "cpu").key("p", 0)
    # a corrupt file is recomputed, never trusted
    victim = ReferenceStore(base, "cpu").path(*pairs(base)[0])
    victim.write_bytes(b"garbage")
    assert run(base).misses == 1


def test_second_worker_reuses_cached_references(local_pool):
    pool = LocalPool(local_pool.config, pipe=local_pool.evaluator.pipe)
    info = pool.worker_info()[0]
    assert info["reference_misses"] == 0 and info["reference_hits"] == 6


# ------------------------------------------------------------------------------------------ ray pool
@pytest.fixture(scope="module")
def ray_pool(ray_cluster, tiny_path, cache_dir, local_pool):
    # same prompts as the local pool: its references are cached, so both actors start in parallel
    cfg = tiny_config(tiny_path, cache_dir, pool={"kind": "ray", "num_actors": 2, "task_timeout_s": 120})
    reports: list[tuple] = []
    pool = make_pool(cfg, lambda *args: reports.append(args))
    pool.start_up_reports = reports
    yield pool
    pool.close()


@pytest.mark.ray
def test_ray_pool_reports_start_up_and_workers_are_not_niced(ray_pool):
    """Ray starts workers at niceness 15 by default, which starved a 2-actor study for ~10 minutes on
    a loaded machine; our clusters run them at 0 and the driver reports the actors' progress."""
    reports = ray_pool.start_up_reports
    assert reports[-1] == ("evaluator actors ready", 2, 2)
    assert all(r[0] == "evaluator actors ready" and 0 <= r[1] <= 2 for r in reports), reports
    assert [info["niceness"] for info in ray_pool.worker_info()] == [0, 0]


def test_ray_start_up_failure_is_one_message_with_the_setting(tiny_path, cache_dir, monkeypatch):
    """`ray.init` failing (on a loaded machine: "node timed out during startup") is retried
    `pool.start_attempts` times, then one PoolStartError saying what to change."""
    import ray

    from evaluators.pool import PoolStartError
    from evaluators.ray_pool import RayPool
    calls: list[dict] = []

    def failing_init(**kwargs):
        calls.append(kwargs)
        raise Exception("The current node timed out during startup. This could happen because some of the "
                        "raylet failed to startup or the GCS has become overloaded.")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", failing_init)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    cfg = tiny_config(tiny_path, cache_dir, pool={"kind": "ray", "start_attempts": 3})
    with pytest.raises(PoolStartError) as err:
        RayPool(cfg)
    message = str(err.value)
    assert "\n" not in message and "could not start a local Ray cluster after 3 attempt(s)" in message
    assert "timed out during startup" in message and "pool.start_attempts" in message and "pool.kind: local" in message
    assert len(calls) == 3 and calls[0]["_system_config"] == {"worker_niceness": 0}


@pytest.mark.ray
def test_ray_pool_matches_local_pool(ray_pool, local_pool):
    local = local_pool
    assert local.config.prompt_set_hash() == ray_pool.config.prompt_set_hash()
    schedules = [local.all_compute_schedule(), fora(local, 2), fora(local, 3), fora(local, 2)]
    assert ray_pool.model_spec() == local.model_spec() and ray_pool.sampling_spec() == local.sampling_spec()
    here = {r.schedule.hash: r for r in local.evaluate(schedules)}
    there = {r.schedule.hash: r for r in ray_pool.evaluate(schedules)}
    assert set(here) == set(there) and len(there) == 3
    assert {i["torch_threads"] for i in ray_pool.worker_info() + local.worker_info()} == {1}
    for h, a in here.items():
        b = there[h]
        assert a.ok and b.ok, (a.error, b.error)
        assert b.worker.startswith("ray-")
        assert (a.macs, a.mac_speedup, a.prompt_set_hash) == (b.macs, b.mac_speedup, b.prompt_set_hash)
        # same scoring code and the same torch thread count (tiny_config): bit-identical quality
        assert (b.metrics, b.per_prompt) == (a.metrics, a.per_prompt)
    assert ray_pool.profile(None)[(GROUP, "attn1")].shape == (2, STEPS, STEPS)
    assert len(ray_pool.reference_thumbnails()) == 2
    assert ray_pool.timestep_grid(STEPS) == local.timestep_grid(STEPS)
    grid = local.timestep_grid(STEPS)[1]
    assert (ray_pool.timestep_costs(grid) == local.timestep_costs(grid)).all()   # exact, as above
    half = explicit_steps(local, 2)
    [a], [b] = local.evaluate([half]), ray_pool.evaluate([half])
    assert a.ok and b.ok and a.mac_speedup == b.mac_speedup == pytest.approx(2.0)


@pytest.mark.ray
def test_ray_actor_killed_mid_evaluation_is_retried_once(ray_pool):
    pids = [info["pid"] for info in ray_pool.worker_info()]
    schedules = [fora(ray_pool, k) for k in (4, 5, 6, 7)]
    before = dict(ray_pool.stats)
    killed: list[int] = []

    def kill_first_running_actor():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            running = ray_pool.in_flight()
            if running:
                pid = pids[running[0]["actor"]]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.002)

    killer = threading.Thread(target=kill_first_running_actor)
    killer.start()
    results = list(ray_pool.evaluate(schedules))
    killer.join()
    assert killed
    assert sorted(r.schedule.hash for r in results) == sorted(s.hash for s in schedules)   # each once
    assert all(r.ok for r in results), [r.error for r in results]
    assert ray_pool.stats["retries"] - before["retries"] >= 1
    assert ray_pool.stats["actor_deaths"] - before["actor_deaths"] >= 1
    assert all(str(killed[0]) not in r.worker for r in results)        # nothing came from the dead process


@pytest.mark.ray
def test_ray_task_timeout_fails_and_pool_keeps_working(ray_pool):
    """Runs last among the Ray tests: the timed-out actor restarts in the background."""
    slow = fora(ray_pool, 8)
    ray_pool.config.pool.task_timeout_s = 0.001
    try:
        [timed_out] = ray_pool.evaluate([slow])
    finally:
        ray_pool.config.pool.task_timeout_s = 120
    assert timed_out.status == "failed" and "timed out" in timed_out.error
    [ok] = ray_pool.evaluate([slow])
    assert ok.ok and ok.schedule.hash == slow.hash


def test_load_model_takes_a_model_string(tiny_path):
    """`load_model("embedded")` / a hub id / a folder, the natural call from Python, works; anything
    else says what to pass."""
    pipe = load_model(str(tiny_path))
    assert type(pipe.transformer).__name__ == "PixArtTransformer2DModel"
    assert type(load_model("embedded").transformer).__name__ == "PixArtTransformer2DModel"
    with pytest.raises(TypeError, match="an EvaluationConfig or a model string"):
        load_model(42)
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model("./no/such/folder")


def test_start_up_reports_each_phase_and_reference_progress(tiny_path, tmp_path):
    """The slow start-up is visible: each phase in order, and the reference runs advance with every
    denoiser call (not only per batch), ending at all pairs; a second start-up hits the cache."""
    reports: list[tuple] = []
    config = tiny_config(tiny_path, tmp_path / "fresh-cache", latency={"warmup": 1, "repeats": 2})
    LocalPool(config, progress=lambda *args: reports.append(args))
    phases = list(dict.fromkeys(r[0] for r in reports))
    assert phases == [f"loading the model ({tiny_path})", "measuring MACs per component",
                      "all-compute references (pairs)", "timing the all-compute pipeline (calls)"]
    refs = [r[1] for r in reports if r[0] == "all-compute references (pairs)"]
    assert refs == sorted(refs) and refs[-1] == 6 and len(refs) >= 2 * STEPS      # 2 batches x 10 steps
    assert any(0 < v < 4 for v in refs) and 4 in refs                           # inside batch 1, then its end
    assert [r[1:] for r in reports if r[0].startswith("timing")] == [(0, 3), (1, 3), (2, 3), (3, 3)]
    again: list[tuple] = []
    LocalPool(config, progress=lambda *args: again.append(args))
    assert [r[1:] for r in again if r[0] == "all-compute references (pairs)"] == [(4, 6), (6, 6)]


# ------------------------------------------------------------------------------------------ joint study
def test_joint_study_on_a_real_pipeline(local_pool, tmp_path):
    """The timesteps space from the pool's scheduler, BOSS one-jump costs through the loop, and fewer
    explicit steps scored for real: nothing fails, and the front mixes step counts with caching."""
    from search.config import validate_config
    from search.study import run_study
    from store import Store
    cfg = validate_config({
        "study": "joint", "evaluation": local_pool.config.model_dump(mode="json"),
        "space": {"kinds": ["cache", "timesteps", "architecture"], "fine_steps": STEPS, "min_steps": 4},
        "objectives": [{"name": "psnr", "reference": 5.0}, {"name": "mac_speedup", "reference": 1.0}],
        "searcher": {"name": "dp", "settings": {"max_heuristics": 6, "candidates": 6, "refine_rounds": 0,
                                                "boss_candidates": 3, "bases": 2}},
        "budget": {"evaluations": 24}})
    _, outcome = run_study(cfg, db=str(tmp_path / "j.db"), pool=local_pool, show_progress=False, log=lambda m: None)
    with Store(f"sqlite:///{tmp_path / 'j.db'}") as store:
        results = store.results("joint")
    assert results and all(r.ok for r in results), [r.error for r in results if not r.ok]
    steps = {r.schedule.num_steps for r in results}
    assert min(steps) < STEPS and STEPS in steps
    boss = [r for r in results if r.schedule.provenance.get("granularity") == "boss"]
    assert 2 <= len(boss) <= 3     # the K = 10 path may be the default timesteps (the reference)
    assert all(r.mac_speedup == pytest.approx(STEPS / r.schedule.num_steps) for r in boss)
    assert any(r.schedule.num_steps < STEPS and r.schedule.compute_fraction() < 1 for r in results)
