"""Held-out validation: front members re-scored on prompts the search did not see, stored as
`validation` results linked to the originals, kept out of fronts, shown beside the calibration
quality (CLI, dashboard), and usable by `export --held-out`.

Store-level tests write validation results through the Store API; the end-to-end test runs
`cachesearch validate` on a real study of the embedded model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from schedules import DONE
from search.cli import app as cli
from store import VALIDATION, NothingQualifies, Store
from store.export import choose
from store.validation import heldout_sets, validation_pairs
from test_dashboard_app import app as dashboard_app, texts
from test_dashboard_data import fill_store

runner = CliRunner()
HELD = "ps-heldout"


def add_heldout(url: str, study: str, drops: list[float]) -> list[int]:
    """Validation results for the study's front members: calibration PSNR minus drops[i]."""
    with Store(url) as store:
        front = store.front(study)
        results = []
        for i, r in enumerate(front):
            schedule = store.schedule(r.schedule_hash).with_info(
                provenance={"validates": r.id, "prompts": "heldout", "num_prompts": 4, "seeds": [7]})
            results.append(dataclasses.replace(
                _result(store, r), schedule=schedule, prompt_set_hash=HELD,
                metrics={"psnr": r.metrics["psnr"] - drops[i % len(drops)], "ssim": r.metrics["ssim"]}))
        store.record_evaluations(study, results, kind=VALIDATION)
        return [r.id for r in front]


def _result(store: Store, record):
    from schedules import EvaluationResult
    return EvaluationResult(schedule=store.schedule(record.schedule_hash), status=DONE, metrics=dict(record.metrics),
                            mac_speedup=record.mac_speedup, latency_speedup=record.latency_speedup,
                            macs=record.macs, latency_s=record.latency_s)


@pytest.fixture()
def validated(tmp_path: Path) -> str:
    url = fill_store(tmp_path / "v.db")
    add_heldout(url, "tiny-random", drops=[0.5, 3.0])
    return url


def test_validation_results_are_linked_and_stay_out_of_fronts(tmp_path: Path) -> None:
    url = fill_store(tmp_path / "v.db")
    with Store(url) as store:
        before = ([r.id for r in store.front("tiny-random")], store.hypervolume("tiny-random"),
                  len(store.results("tiny-random")))
    ids = add_heldout(url, "tiny-random", drops=[0.5, 3.0])
    with Store(url) as store:
        after = ([r.id for r in store.front("tiny-random")], store.hypervolume("tiny-random"),
                 len(store.results("tiny-random")))
        assert after == before                         # fronts, hypervolume and budget see only the search
        held = store.evaluations("tiny-random", DONE, kind=VALIDATION)
        assert sorted(r.provenance["validates"] for r in held) == sorted(ids)
        assert {r.prompt_set_hash for r in held} == {HELD}
        sets = heldout_sets(store, "tiny-random")
        assert len(sets) == 1 and sets[0]["results"] == len(ids) and sets[0]["prompts"] == "heldout"
        pairs = validation_pairs(store, "tiny-random")
    assert [p.original.id for p in pairs] == ids
    assert [round(p.drop, 6) for p in pairs] == [0.5 if i % 2 == 0 else 3.0 for i in range(len(ids))]
    assert [p.flagged(2.0) for p in pairs] == [i % 2 == 1 for i in range(len(ids))]


def test_export_picks_on_held_out_quality(validated: str, tmp_path: Path) -> None:
    with Store(validated) as store:
        front = store.front("tiny-random")
        pairs = {p.original.id: p for p in validation_pairs(store, "tiny-random")}
        # the bar is met on calibration by every member but on held-out prompts only by some
        bar = min(p.calibration_quality for p in pairs.values())
        ok = [r for r in front if pairs[r.id].heldout_quality >= bar]
        picked = choose(store, "tiny-random", f"fastest-with psnr>={bar}", heldout=True)
        assert picked.id == max(ok, key=lambda r: r.mac_speedup).id
        assert picked.kind == "search" and picked.metrics == next(r for r in front if r.id == picked.id).metrics
        assert choose(store, "tiny-random", "knee", heldout=True).id in pairs
        with pytest.raises(NothingQualifies, match="cachesearch validate tiny-ecad"):
            choose(store, "tiny-ecad", "knee", heldout=True)          # never validated
    out = tmp_path / "held.json"
    result = runner.invoke(cli, ["export", "tiny-random", "--pick", "knee", "--held-out", "-o", str(out),
                                 "--db", validated])
    assert result.exit_code == 0, result.output
    assert "on held-out prompts" in json.loads(out.read_text())["provenance"]["pick"]


def test_frontier_page_shows_held_out_quality_and_flags_drops(validated: str, monkeypatch) -> None:
    at = dashboard_app(validated, "frontier", monkeypatch, study="tiny-random")
    assert any(e.label.startswith("Held-out validation (heldout") for e in at.expander)
    with Store(validated) as store:
        pairs = validation_pairs(store, "tiny-random")
    flagged = [f"#{p.original.id}" for p in pairs if p.flagged(2.0)]
    assert flagged and all(f in texts(at, "warning") for f in flagged)
    tables = [d.value for d in at.dataframe if "held-out" in d.value.columns]
    assert len(tables) == 1 and list(tables[0]["id"]) == [p.original.id for p in pairs]
    at.number_input(key="max_drop").set_value(5.0).run()              # a looser bar: nothing flagged
    assert "lose more than" not in texts(at, "warning")


def test_frontier_page_without_validation_says_how(tmp_path: Path, monkeypatch) -> None:
    url = fill_store(tmp_path / "none.db")
    at = dashboard_app(url, "frontier", monkeypatch, study="tiny-random")
    assert "cachesearch validate tiny-random" in texts(at, "caption")


# ------------------------------------------------------------------------------ end to end, embedded model
EMBEDDED_STUDY = {
    "study": "val", "evaluation": {"num_prompts": 2, "seeds": [0], "num_inference_steps": 6, "metrics": ["psnr"],
                                   "n_thumbnails": 0, "latency": {"warmup": 0, "repeats": 1}},
    "searcher": {"name": "heuristics", "settings": {"include": ["fora"]}}, "budget": {"evaluations": 3}}


def test_cachesearch_validate_on_the_embedded_model(tmp_path: Path) -> None:
    pytest.importorskip("evaluators.embedded")
    from evaluators.embedded.model import DENOISER_WEIGHTS
    if not DENOISER_WEIGHTS.exists():
        pytest.skip("embedded denoiser weights not shipped")
    import yaml
    cfg = tmp_path / "val.yaml"
    cfg.write_text(yaml.safe_dump(EMBEDDED_STUDY))
    db = f"sqlite:///{tmp_path / 'val.db'}"
    assert runner.invoke(cli, ["search", str(cfg), "--db", db, "-q"]).exit_code == 0
    with Store(db) as store:
        front = [r.id for r in store.front("val")]
    db_file = tmp_path / "val.db"

    # refusals: one line naming the option, exit 2, the database untouched
    before = db_file.read_bytes()
    for args, needle in ((["--steps", "8"], "--steps: the study's plans are per step at 6 steps"),
                         (["--prompts", "calibration", "--num-prompts", "2"], "is the study's own calibration set"),
                         (["--prompts", str(tmp_path / "none.txt")], "--prompts"),
                         (["--ids", "999"], "--ids: evaluation 999 is not a done search result"),
                         (["--resolution", "big"], "--resolution: expected HxW such as 512x512, got 'big'"),
                         (["--resolution", "32x32", "--num-prompts", "2"],     # the embedded pipeline has no
                          "--resolution: asked for 32x32 but the pipeline made")):  # height/width
        result = runner.invoke(cli, ["validate", "val", "--db", db, *args])
        assert result.exit_code == 2 and needle in result.output, (args, result.output)
        assert db_file.read_bytes() == before

    result = runner.invoke(cli, ["validate", "val", "--db", db, "--num-prompts", "2", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [m["id"] for m in doc["members"]] == front
    assert all(m["heldout"] is not None and m["heldout_id"] is not None for m in doc["members"])
    with Store(db) as store:
        held = store.evaluations("val", DONE, kind=VALIDATION)
        assert sorted(r.provenance["validates"] for r in held) == sorted(front)
        assert all(r.prompt_set_hash != store.evaluation(front[0]).prompt_set_hash for r in held)
        assert [r.id for r in store.front("val")] == front
    again = runner.invoke(cli, ["validate", "val", "--db", db, "--num-prompts", "2"])
    assert again.exit_code == 0 and f"validating 0 of {len(front)}" in again.output
    assert "calibration vs held-out" in again.output


def test_validate_at_another_resolution_applies_the_same_plans_there(tmp_path: Path) -> None:
    """A tiny PixArt study searched at 16x16, its front re-scored at 32x32: same plans, references and
    MACs measured at 32x32, stored as a held-out set of its own that records the resolution."""
    import yaml
    from tiny_pipelines import TINY_PIXART_KWARGS, save_tiny_pixart
    model = save_tiny_pixart(tmp_path / "tiny-pixart")
    study = {"study": "res", "evaluation": {
        "model": str(model), "prompts": "calibration", "num_prompts": 2, "seeds": [0], "num_inference_steps": 6,
        "guidance_scale": 4.0, "height": 16, "width": 16, "pipeline_kwargs": TINY_PIXART_KWARGS,
        "metrics": ["psnr"], "n_thumbnails": 0, "cache_dir": str(tmp_path / "cache"),
        "latency": {"warmup": 0, "repeats": 1}},
        "searcher": {"name": "heuristics", "settings": {"include": ["fora"]}}, "budget": {"evaluations": 3}}
    cfg = tmp_path / "res.yaml"
    cfg.write_text(yaml.safe_dump(study))
    db = f"sqlite:///{tmp_path / 'res.db'}"
    assert runner.invoke(cli, ["search", str(cfg), "--db", db, "-q"]).exit_code == 0
    result = runner.invoke(cli, ["validate", "res", "--db", db, "--prompts", "calibration", "--num-prompts", "2",
                                 "--resolution", "32x32", "--json"])
    assert result.exit_code == 0, result.output
    with Store(db) as store:
        front = {r.id: r for r in store.front("res")}
        held = store.evaluations("res", DONE, kind=VALIDATION)
        sets = heldout_sets(store, "res")
        assert sorted(r.provenance["validates"] for r in held) == sorted(front)
        for r in held:
            original = front[r.provenance["validates"]]
            assert r.schedule_hash == original.schedule_hash          # the identity map: the same plan
            assert r.macs > 3 * original.macs                          # 4x the tokens, measured anew
    assert sets[0]["resolution"] == "32x32" and sets[0]["prompts"] == "calibration"
