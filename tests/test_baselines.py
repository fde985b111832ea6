"""Peer methods (evaluators.baselines) as part of a study: every registered peer hooks something and
really skips work on the embedded model and a tiny PixArt pipeline, detaches to a bit-identical
plain pipeline, is scored with measured MACs on the cost table's scale, stored beside the study's
evaluations (never in its front), and compared with our front by `cachesearch compare`.

Contract tests run for every entry of `BASELINES` (no list here): a new peer inherits them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from tiny_pipelines import TINY_PIPELINES
from typer.testing import CliRunner

from evaluators.baselines import BASELINES, apply_baseline, expand_settings
from evaluators.runner import CfgWatch
from schedules.adapters import find_denoiser
from schedules import counting_mode
from schedules.cost import DenoiserFlops
from search.cli import app as cli
from store import Store

STEPS = 8
runner = CliRunner()


def _settings(method: str, steps: int) -> dict:
    settings = dict(BASELINES[method].probe)
    if "num_inference_steps" in BASELINES[method].defaults:
        settings["num_inference_steps"] = steps
    return settings


@pytest.fixture(scope="module", params=["embedded", "pixart"])
def pipeline(request):
    entry = TINY_PIPELINES[request.param]
    if request.param == "embedded":
        from evaluators.embedded.model import DENOISER_WEIGHTS
        if not DENOISER_WEIGHTS.exists():
            pytest.skip("embedded weights not shipped")
    pipe = entry.build()
    run = lambda: entry.run(pipe, num_inference_steps=STEPS)   # noqa: E731
    with CfgWatch(find_denoiser(pipe)) as watch:
        images = run()
    return pipe, run, watch.mode(len(images), STEPS)


@pytest.mark.parametrize("method", sorted(BASELINES))
def test_every_peer_hooks_skips_work_and_detaches(pipeline, method) -> None:
    pipe, run, cfg = pipeline
    plain = run()
    with counting_mode() as full:
        run()
    handle = apply_baseline(pipe, method, calibrate=run, cfg=cfg, **_settings(method, STEPS))
    denoiser = find_denoiser(pipe)
    try:
        assert handle.hooked, f"{method} hooked nothing"
        handle.reset()
        with counting_mode() as cached, DenoiserFlops(denoiser) as counted:
            run()
    finally:
        handle.remove()
    assert cached.get_total_flops() < full.get_total_flops(), f"{method} at {handle.label} skipped no work"
    # what a study records (DenoiserFlops, per denoiser call) is FlopCounterMode's count of the whole
    # run less the work outside the denoiser (text encoder, VAE: the plain run's, the same work)
    outside = full.get_total_flops() - sum(full.get_flop_counts()[type(denoiser).__name__].values())
    assert counted.flops == cached.get_total_flops() - outside > 0
    assert torch.equal(run(), plain), "the plain pipeline is not bit-identical after the peer was removed"


def test_sweeps_expand_to_every_combination() -> None:
    assert expand_settings({"a": [1, 2], "b": 3, "c": [True, False]}) == [
        {"a": 1, "b": 3, "c": True}, {"a": 1, "b": 3, "c": False},
        {"a": 2, "b": 3, "c": True}, {"a": 2, "b": 3, "c": False}]
    ranged = {"r": [0, 1000]}                             # a list-valued setting is one value ...
    assert expand_settings({"r": [0, 1000]}, ranged) == [{"r": [0, 1000]}]
    assert expand_settings({"r": [[0, 500], [100, 800]]}, ranged) == [{"r": [0, 500]}, {"r": [100, 800]}]   # ... or a sweep of them


# ------------------------------------------------------------------------------ in a study, embedded model
STUDY = {
    "study": "peers", "evaluation": {"num_prompts": 2, "seeds": [0], "num_inference_steps": 6, "metrics": ["psnr"],
                                     "n_thumbnails": 0, "latency": {"warmup": 0, "repeats": 1}},
    "searcher": {"name": "heuristics", "settings": {"include": ["fora"]}}, "budget": {"evaluations": 3},
    "baselines": [{"method": m, "settings": _settings(m, 6)} for m in sorted(BASELINES)]
                 + [{"method": "first_block_cache", "settings": {"threshold": [0.0]}}]}


@pytest.fixture(scope="module")
def peers_study(tmp_path_factory) -> tuple[str, Path]:
    from evaluators.embedded.model import DENOISER_WEIGHTS
    if not DENOISER_WEIGHTS.exists():
        pytest.skip("embedded weights not shipped")
    folder = tmp_path_factory.mktemp("peers")
    cfg = folder / "peers.yaml"
    cfg.write_text(yaml.safe_dump(STUDY))
    db = f"sqlite:///{folder / 'peers.db'}"
    result = runner.invoke(cli, ["search", str(cfg), "--db", db, "-q"])
    assert result.exit_code == 0, result.output
    return db, cfg


def test_a_study_scores_its_peers_and_keeps_them_out_of_the_front(peers_study) -> None:
    db, _ = peers_study
    with Store(db) as store:
        peers = {p.label: p for p in store.baselines("peers")}
        front = store.front("peers")
        results = store.results("peers")
    assert len(peers) == len(BASELINES) + 1
    for p in peers.values():
        assert p.ok, (p.label, p.error)
        assert p.hooked and p.macs and p.prompt_set_hash == results[0].prompt_set_hash
    never = peers["first_block_cache(threshold=0.0)"]     # a threshold that never skips: full compute,
    assert never.mac_speedup == pytest.approx(1.0)         # measured on the cost table's own scale
    assert all(p.mac_speedup > 1.0 for label, p in peers.items() if label != never.label)
    assert len(results) == 3 and all(r.schedule_hash for r in front)   # peers are not evaluations


def test_cachesearch_compare_and_front_show_the_peers(peers_study) -> None:
    db, _ = peers_study
    result = runner.invoke(cli, ["compare", "peers", "--db", db])
    assert result.exit_code == 0, result.output
    assert "our front vs peers" in result.output and "first_block_cache(threshold=100.0)" in result.output
    assert "faster than all-compute" in result.output
    doc = json.loads(runner.invoke(cli, ["compare", "peers", "--db", db, "--json"]).stdout)
    assert len(doc["peers"]) == len(BASELINES) + 1
    for p in doc["peers"]:
        m = p["mac_speedup"]
        assert m["peer"] is not None
        if m["ours_id"] is not None:      # ours at >= the peer's MAC speedup, margin = ours - peer
            assert m["ours_speed"] >= m["peer"] - 1e-9
            assert m["margin"] == pytest.approx(m["ours_quality"] - p["peer_quality"])
    front = runner.invoke(cli, ["front", "peers", "--db", db])
    assert front.exit_code == 0 and "peer methods scored in peers" in front.output


def test_a_resumed_study_does_not_score_its_peers_again(peers_study) -> None:
    db, cfg = peers_study
    with Store(db) as store:
        before = {p.label: p.recorded_at for p in store.baselines("peers")}
    result = runner.invoke(cli, ["search", str(cfg), "--db", db, "--resume", "peers", "-q"])
    assert result.exit_code == 0, result.output
    with Store(db) as store:
        assert {p.label: p.recorded_at for p in store.baselines("peers")} == before


def test_an_unknown_peer_or_setting_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    for peer, needle in (({"method": "nocache"}, "baselines[0]: unknown baseline 'nocache'"),
                         ({"method": "mag_cache", "settings": {"treshold": 0.1}}, "unknown setting(s) ['treshold']")):
        cfg = tmp_path / "bad.yaml"
        cfg.write_text(yaml.safe_dump({**STUDY, "study": "bad", "baselines": [peer]}))
        db = tmp_path / "bad.db"
        result = runner.invoke(cli, ["search", str(cfg), "--db", f"sqlite:///{db}", "-q"])
        assert result.exit_code == 2 and needle in result.output, result.output
        assert not db.exists() or "bad" not in runner.invoke(cli, ["studies", "--db", f"sqlite:///{db}"]).output


def test_the_frontier_page_draws_the_peers(peers_study, monkeypatch) -> None:
    from test_dashboard_app import app, plotly_specs
    db, _ = peers_study
    at = app(db, "frontier", monkeypatch, study="peers")
    traces = plotly_specs(at)[0]["data"]
    peers = [t for t in traces if t.get("name", "").startswith("peer methods")]
    assert peers and len(peers[0]["x"]) == len(BASELINES) + 1


# ------------------------------------------------------------------------------ refusals that say why
def test_dbcache_without_cache_dit_is_refused_with_the_install_line(pipeline, monkeypatch) -> None:
    import sys
    from evaluators.baselines import BaselineError
    pipe, run, cfg = pipeline
    plain = run()
    monkeypatch.setitem(sys.modules, "cache_dit", None)        # as if the extra were not installed
    with pytest.raises(BaselineError, match=r"cache-dit, which is not installed .*pip install 'cachesearch\[cache-dit\]'"):
        apply_baseline(pipe, "dbcache", cfg=cfg)
    assert torch.equal(run(), plain)


def test_faster_cache_refuses_without_knowing_how_guidance_runs(pipeline) -> None:
    from evaluators.baselines import BaselineError
    pipe, run, _ = pipeline
    plain = run()
    for cfg, needle in ((None, "needs to know how the pipeline runs classifier-free guidance"),
                        ("sequential", "calls the denoiser once per half")):
        with pytest.raises(BaselineError, match=needle):
            apply_baseline(pipe, "faster_cache", cfg=cfg)
    assert torch.equal(run(), plain), "a refused peer left a hook behind"


def test_a_peer_that_breaks_while_attaching_is_refused_and_leaves_nothing(pipeline, monkeypatch) -> None:
    import diffusers.hooks
    from evaluators.baselines import BaselineError
    pipe, run, cfg = pipeline
    plain = run()
    real = diffusers.hooks.apply_first_block_cache

    def half_then_fail(module, config):
        real(module, config)
        raise IndexError("pop from empty list")
    monkeypatch.setattr(diffusers.hooks, "apply_first_block_cache", half_then_fail)
    with pytest.raises(BaselineError, match=r"first_block_cache\(threshold=0.05\) cannot be applied to .*IndexError"):
        apply_baseline(pipe, "first_block_cache", cfg=cfg)
    assert torch.equal(run(), plain), "the half-applied peer was not undone"


def test_sea_cache_falling_back_to_full_compute_is_reported(pipeline) -> None:
    pipe, run, cfg = pipeline
    handle = apply_baseline(pipe, "sea_cache", cfg=cfg, **BASELINES["sea_cache"].probe)
    root = handle.denoiser._diffusers_hook.get_hook("sea_cache_root")
    root.raw_vision_callback = lambda *args: None            # as on a model whose latents it cannot read
    try:
        handle.reset()
        with counting_mode() as cached:
            run()
    finally:
        handle.remove()
    assert handle.failures and "raw vision latents" in handle.failures[0]
    with counting_mode() as full:
        run()
    assert cached.get_total_flops() == full.get_total_flops()   # what the failure says: full compute


def test_a_peer_that_fell_back_to_full_compute_is_a_failed_result_naming_why(tmp_path, monkeypatch) -> None:
    from evaluators import EvaluationConfig, LocalPool
    from evaluators import diffusers_peers
    from evaluators.embedded.model import DENOISER_WEIGHTS
    if not DENOISER_WEIGHTS.exists():
        pytest.skip("embedded weights not shipped")
    monkeypatch.setattr(diffusers_peers, "_latents_for_sea_cache", lambda *args: None)
    cfg = EvaluationConfig(num_prompts=2, seeds=[0], metrics=["psnr"], num_inference_steps=6, n_thumbnails=0,
                           cache_dir=str(tmp_path), latency={"warmup": 0, "repeats": 1})
    with LocalPool(cfg) as pool:
        sea, fbc = pool.evaluate_baselines([("sea_cache", dict(BASELINES["sea_cache"].probe)),
                                            ("first_block_cache", {"threshold": 100.0})])
    assert not sea.ok and "fell back to full compute" in sea.error and "raw vision latents" in sea.error
    assert sea.macs is None                                   # no figure recorded for it
    assert fbc.ok and fbc.mac_speedup > 1.0                   # the same pool scores the next peer normally


def test_cachesearch_peers_lists_every_registered_peer_and_what_is_missing(monkeypatch) -> None:
    import importlib.util
    doc = json.loads(runner.invoke(cli, ["peers", "--json"]).stdout)
    assert [d["method"] for d in doc] == sorted(BASELINES)
    assert all(d["defaults"] == dict(BASELINES[d["method"]].defaults) for d in doc)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "cache_dit" else real(name, *a))
    result = runner.invoke(cli, ["peers"])
    assert result.exit_code == 0
    assert "dbcache needs cache_dit, which is not installed: pip install 'cachesearch[cache-dit]'" in result.output
