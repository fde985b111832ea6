"""`cachesearch` CLI: config errors name the field and exit non-zero without touching the store; a
synthetic study runs, lists, shows its front, exports, and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from search.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def _write(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def _run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.mark.parametrize("doc, field", [
    ({"synthetic": {}, "searcher": {"name": "ecad", "settings": {"population": "many"}}},
     "searcher.settings.population"),
    ({"synthetic": {}, "searcher": {"name": "ecad"}, "budget": {"evaluations": 0}}, "budget.evaluations"),
    ({"synthetic": {}, "searcher": {"name": "dp", "settings": {"granularity": "pixel"}}},
     "searcher.settings.granularity"),
    ({"synthetic": {}, "searcher": {"name": "nsga3"}}, "searcher"),
    ({"synthetic": {}, "searcher": {"name": "random"}, "space": {"kinds": ["cache", "tokens"]}}, "space.kinds[1]"),
    ({"searcher": {"name": "random"}, "evaluation": {"num_inference_steps": 0}}, "evaluation.num_inference_steps"),
    ({"searcher": {"name": "random"}, "evaluation": {"metrics": ["psnr"]},
      "objectives": [{"name": "ssim", "reference": 0}, {"name": "mac_speedup", "reference": 1}]}, "objectives[0].name"),
    ({"synthetic": {}, "searcher": {"name": "random"}, "budjet": {}}, "budjet"),
])
def test_config_errors_name_the_field_and_store_nothing(tmp_path, doc, field):
    cfg = _write(tmp_path / "bad.yaml", doc)
    db = tmp_path / "x.db"
    result = _run("search", str(cfg), "--db", str(db), "-q")
    assert result.exit_code == 2
    assert f"{field}:" in result.output
    assert not db.exists()


def test_yaml_syntax_error_names_the_line(tmp_path):
    cfg = tmp_path / "broken.yaml"
    cfg.write_text("searcher:\n  name: [ecad\n")
    result = _run("search", str(cfg), "-q")
    assert result.exit_code == 2 and "line" in result.output


def test_search_studies_front_export_resume(tmp_path):
    db = str(tmp_path / "cs.db")
    cfg = _write(tmp_path / "syn.yaml", {"study": "syn", "synthetic": {"num_blocks": 3, "num_steps": 6},
                                         "searcher": {"name": "ecad", "settings": {"population": 8}},
                                         "budget": {"evaluations": 20}})
    result = _run("search", str(cfg), "--db", db, "-q")
    assert result.exit_code == 0, result.output
    assert "front of syn" in result.output and "20 evaluations" in result.output

    again = _run("search", str(cfg), "--db", db, "-q")
    assert again.exit_code == 1 and "--resume syn" in again.output

    more = _write(tmp_path / "more.yaml", {**yaml.safe_load(cfg.read_text()), "budget": {"evaluations": 28}})
    resumed = _run("search", str(more), "--db", db, "-q", "--resume", "syn")
    assert resumed.exit_code == 0 and "28 evaluations (8 in this run)" in resumed.output

    listing = _run("studies", "--db", db)
    assert "syn" in listing.output and "ecad" in listing.output

    front = _run("front", "syn", "--db", db, "--json")
    members = json.loads(front.output)
    assert members and all("quality" in m and "mac_speedup" in m for m in members)

    out = tmp_path / "knee.json"
    exported = _run("export", "syn", "--pick", "knee", "-o", str(out), "--all-front", str(tmp_path / "front"),
                    "--db", db)
    assert exported.exit_code == 0, exported.output
    doc = json.loads(out.read_text())
    assert doc["provenance"]["study"] == "syn" and "quality" in doc["metrics"]
    assert len(list((tmp_path / "front").glob("*.json"))) == len(members)

    missing = _run("front", "nope", "--db", db)
    assert missing.exit_code == 1 and "no study named 'nope'" in missing.output
    unknown = _run("search", str(cfg), "--db", db, "-q", "--resume", "nope")
    assert unknown.exit_code == 1 and "no study named 'nope'" in unknown.output


def test_schema_commands():
    schedule = json.loads(_run("schema").output)
    assert schedule["title"] == "cachesearch schedule"
    config = json.loads(_run("schema", "config").output)
    assert "searcher" in config["properties"]


def test_shipped_configs_validate():
    from search.config import load_config
    paths = sorted((ROOT / "configs").glob("*.yaml"))
    assert any(p.name == "embedded_quick.yaml" for p in paths)
    for path in paths:
        if path.name.startswith("embedded"):
            load_config(path)           # GPU configs name hub models and CUDA: checked on their machines
        else:
            doc = yaml.safe_load(path.read_text())
            assert doc["searcher"]["name"] in ("ecad", "dp", "bayes", "random", "heuristics")


def test_apply_a_timestep_schedule_against_the_study_steps(tmp_path):
    """`cachesearch apply` on a 10-of-20-steps schedule: compared with the plain 20-step pipeline."""
    from dataclasses import replace

    from evaluators.embedded.model import build_scheduler, build_transformer, read_config
    from schedules import SamplingSpec, Schedule, describe, save_schedule
    from schedules.timesteps import fine_grid
    config = read_config()                       # the shipped architecture, without loading its weights
    kind, grid = fine_grid(build_scheduler(config["scheduler"]), 20)
    sampling = replace(SamplingSpec(10, cfg="batched", guidance_scale=4.0), **{kind: grid[::2]})
    spec = describe(build_transformer(config["transformer"]), model_id="cachesearch/embedded")
    schedule = Schedule.all_compute(spec, sampling, provenance={"reference_steps": 20})
    path = save_schedule(schedule, tmp_path / "ten.json")
    result = _run("apply", str(path), "--prompt", "a red 3 on a blue background", "--repeats", "1",
                  "--out", str(tmp_path / "img"))
    assert result.exit_code == 0, result.output
    assert "10 steps at explicit timesteps [999, 899, 799" in result.output
    assert "the plain pipeline runs 20 steps" in result.output and "MAC speedup 2.00x" in result.output
    assert len(list((tmp_path / "img").glob("*.png"))) == 2
