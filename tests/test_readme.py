"""The README's first steps run as written: CI runs exactly its commands, and its Python snippet for
an exported schedule works on the bundled model with the file name the quick start exports."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from schedules import SamplingSpec, Schedule, describe, save_schedule

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(language: str, after: str) -> list[str]:
    section = README[README.index(after):]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def test_ci_runs_exactly_the_readme_commands():
    setup = _blocks("bash", "## Set-up: the two commands")[0]
    commands = [ln.strip() for ln in setup.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    install, tests = commands
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    install_part = install.split(" && cachesearch search")[0]     # CI installs; the search is the user's demo
    assert "--index-url https://download.pytorch.org/whl/cpu" in install_part
    assert install_part in ci
    assert re.search(rf"^\s*{re.escape(tests)} \|\| status=\$\?", ci, flags=re.M), "the test step as written"
    assert re.search(r"^timeout \d+ python -m pytest -q -m e2e \|\| status=\$\?", ci, flags=re.M), "step 2"
    assert ci.count('fail_on_no_tests "$status"') == 2


@pytest.mark.parametrize("code, expected", [(0, 0), (1, 1), (5, 1)])
def test_ci_counts_no_tests_as_a_failure(code, expected):
    """pytest's exit code 5 (no tests ran) fails CI in both steps: the function .ci/run uses, run."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    function = re.search(r"^fail_on_no_tests\(\) \{\n.*?^\}\n", ci, flags=re.S | re.M).group(0)
    done = subprocess.run(["bash", "-c", f'{function}\nfail_on_no_tests {code} step'], capture_output=True, text=True)
    assert done.returncode == expected, done.stderr


def test_apply_snippet_runs_on_the_bundled_model(tmp_path, monkeypatch):
    from evaluators import load_model
    snippet = _blocks("python", "## Using an exported schedule")[0]
    assert 'load_schedule("fast.json")' in snippet
    spec = describe(load_model("embedded"))
    fora2 = {(g.name, c): ["1" * g.num_blocks if s % 2 == 0 else "0" * g.num_blocks for s in range(20)]
             for g in spec.block_groups for c in g.components}
    save_schedule(Schedule.from_masks(spec, SamplingSpec(20), fora2), tmp_path / "fast.json")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)
    assert (tmp_path / "fast.png").is_file()
    assert not scope["handle"].active and scope["image"].size == (24, 24)


def test_the_cluster_config_in_the_readme_is_a_valid_study_config():
    """The fields *Running on a cluster* shows are the config's own (a renamed field fails here)."""
    import yaml

    from evaluators.placement import plan_actors
    from search.config import validate_config
    doc = yaml.safe_load(_blocks("yaml", "## Running on a cluster")[0])
    cfg = validate_config({**doc, "searcher": {"name": "ecad"}})
    pool = cfg.evaluation.pool
    assert (pool.kind, pool.address, pool.gpus_per_actor, pool.resources_per_actor) == (
        "ray", "HEAD:6379", 1, {"evaluator": 1})
    two_gpu_nodes = [{"CPU": 8, "GPU": 1, "evaluator": 2}, {"CPU": 8, "GPU": 1, "evaluator": 2}, {"CPU": 0}]
    plan = plan_actors(pool, cfg.evaluation.device, two_gpu_nodes)
    assert (plan.num_actors, plan.device) == (2, "cuda")            # "one actor per GPU", as it says
