"""`cachesearch` CLI: config errors name the field and exit non-zero without touching the store; a
synthetic study runs, lists, shows its front, exports, and resumes."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
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
    assert again.exit_code == 2 and "--resume syn" in again.output

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
    assert missing.exit_code == 2 and "no study named 'nope'" in missing.output
    unknown = _run("search", str(cfg), "--db", db, "-q", "--resume", "nope")
    assert unknown.exit_code == 2 and "no study named 'nope'" in unknown.output


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


# ------------------------------------------------------------------------------------------ bad input
def _read_only(path: Path) -> None:
    """Read-only even for root: the immutable attribute (root ignores permission bits)."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        return
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot make a file read-only for root here ({done.stderr.strip()})")


def _writable_again(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    path.chmod(0o644)


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


BAD_INPUTS = [
    ("not-sqlite", ["studies", "--db", "{dir}/notes.txt"], "notes.txt is not a SQLite database"),
    ("directory", ["studies", "--db", "{dir}/adir"], "adir is a directory, not a database file"),
    ("dialect", ["search", "{dir}/syn.yaml", "--db", "nosuchdialect://x"], "names an unknown dialect 'nosuchdialect'"),
    ("not-a-url", ["studies", "--db", "ht!tp://x"], "is neither a file path nor a database URL"),
    ("foreign-studies", ["search", "{dir}/syn.yaml", "--db", "{dir}/foreign.db"], "no schema version row"),
    ("foreign-other", ["search", "{dir}/syn.yaml", "--db", "{dir}/other.db"], "belongs to another program"),
    ("read-only", ["search", "{dir}/syn.yaml", "--db", "{dir}/readonly.db"], "is read-only: a search needs to write"),
    ("pg-unreachable", ["studies", "--db", "postgresql://nobody@/db?host={dir}/nosocket&port=1"],
     "cannot connect to the database postgresql://nobody@/db"),
    ("hub-model", ["search", "{dir}/hub.yaml", "--db", "{dir}/real.db"],
     "model 'nosuch/model' is not in the local Hugging Face cache"),
    ("describe-hub", ["describe", "nosuch/model"], "model 'nosuch/model' is not in the local Hugging Face cache"),
    ("empty-prompt", ["apply", "{dir}/sched.json", "-p", ""], "--prompt: prompt 1 is empty"),
    ("deep-json", ["apply", "{dir}/deep.json", "-p", "a red circle"], "nested too deeply"),
    ("unknown-study", ["front", "nope", "--db", "{dir}/real.db"], "no study named 'nope' (studies here: p)"),
    ("resume-unknown", ["search", "{dir}/syn.yaml", "--db", "{dir}/real.db", "--resume", "nope"], "no study named 'nope'"),
    ("study-name", ["search", "{dir}/badname.yaml", "--db", "{dir}/real.db"], "study: study name '../../x' is not allowed"),
    ("pick-rule", ["export", "p", "--pick", "fastest psnr 30", "-o", "{dir}/x.json", "--db", "{dir}/real.db"],
     "cannot read pick rule"),
]


@pytest.fixture
def bad_input_dir(tmp_path):
    from test_store import fill_points, make_schedule

    from store import Store
    with Store(f"sqlite:///{tmp_path / 'real.db'}") as s:
        fill_points(s)
    shutil.copy(tmp_path / "real.db", tmp_path / "readonly.db")
    for name, ddl in (("foreign.db", "CREATE TABLE studies (x INTEGER)"), ("other.db", "CREATE TABLE t (x)")):
        con = sqlite3.connect(tmp_path / name)
        con.execute(ddl)
        con.commit()
        con.close()
    (tmp_path / "notes.txt").write_text("not a database\n")
    (tmp_path / "adir").mkdir()
    _write(tmp_path / "syn.yaml", {"study": "fresh", "synthetic": {}, "searcher": {"name": "random"},
                                   "budget": {"evaluations": 2}})
    _write(tmp_path / "hub.yaml", {"study": "hub", "evaluation": {"model": "nosuch/model"},
                                   "searcher": {"name": "random"}})
    _write(tmp_path / "badname.yaml", {"study": "../../x", "synthetic": {}, "searcher": {"name": "random"}})
    (tmp_path / "sched.json").write_text(make_schedule(1).to_json())
    (tmp_path / "deep.json").write_text("[" * 200_000)
    _read_only(tmp_path / "readonly.db")
    yield tmp_path
    _writable_again(tmp_path / "readonly.db")


@pytest.mark.parametrize("args, message", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_leaves_every_file_as_it_was(bad_input_dir, monkeypatch, args, message):
    monkeypatch.chdir(bad_input_dir)           # nothing may appear in the working folder either
    before = _snapshot(bad_input_dir)
    result = runner.invoke(app, [a.format(dir=bad_input_dir) for a in args])
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2, result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert _snapshot(bad_input_dir) == before, "a file was created, changed or removed"


# ------------------------------------------------------------------------------------------ stale runs
def _cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "search.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def _status(db: str, study: str) -> str:
    from store import Store
    with Store(db, create=False) as s:
        return s.get_study(study).display_status(time.time())


def _wait_for(condition, what: str, timeout: float = 300.0):
    """Poll until `condition()` is truthy (generous: the machine may be busy); never a timing claim."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_killed_search_shows_stale_and_resume_takes_it_over(tmp_path):
    """A search piped to a file prints plain progress lines; SIGKILLed mid-run its study goes stale
    (heartbeat silent for 3 intervals) in `studies`, `front` and the store; a second search cannot
    take a live study, and `--resume` takes over the stale one and finishes without repeating work."""
    db = str(tmp_path / "cs.db")
    cfg = _write(tmp_path / "slow.yaml", {"study": "slow", "synthetic": {"num_blocks": 3, "num_steps": 6, "delay": 0.2},
                                          "searcher": {"name": "random"}, "budget": {"evaluations": 500},
                                          "heartbeat_s": 0.2, "batch_size": 1})
    proc = _cli("search", str(cfg), "--db", db)
    seen: list[str] = []
    try:
        _wait_for(lambda: seen.append(proc.stdout.readline()) or "evaluations, front" in seen[-1],
                  "a plain progress line")
        busy = _run("search", str(cfg), "--db", db, "-q", "--resume", "slow")
        assert busy.exit_code == 2 and "is being run by" in busy.output, busy.output
    finally:
        proc.kill()
        proc.wait()
    assert all("\x1b[" not in line for line in seen), "no terminal control codes in a pipe"
    assert any(line.split(" ", 1)[0].count(":") == 2 for line in seen), "lines start with a time stamp"
    stale = _wait_for(lambda: (s := _status(db, "slow")).startswith("stale") and s, "the study to go stale")
    assert "last seen" in stale
    listing = _run("studies", "--db", db)
    assert "stale (last seen" in listing.output
    front = _run("front", "slow", "--db", db)
    assert "stale (last seen" in front.output and "--resume slow" in front.output

    from store import Store
    with Store(db, create=False) as s:
        done_before = len(s.finished_hashes("slow"))
    more = _write(tmp_path / "more.yaml", {**yaml.safe_load(cfg.read_text()),
                                           "synthetic": {"num_blocks": 3, "num_steps": 6},
                                           "budget": {"evaluations": done_before + 3}})
    resumed = _run("search", str(more), "--db", db, "-q", "--resume", "slow")
    assert resumed.exit_code == 0, resumed.output
    assert f"{done_before + 3} evaluations (3 in this run)" in resumed.output
    assert _status(db, "slow") == "finished"


def test_kill_before_the_evaluator_started_still_resumes(tmp_path):
    """The study row exists before the evaluator's start-up (references can take minutes), so a run
    killed during that start-up is resumable, not 'no study named ...'."""
    db = str(tmp_path / "cs.db")
    cfg = _write(tmp_path / "syn.yaml", {"study": "early", "synthetic": {"num_blocks": 3, "num_steps": 6},
                                         "searcher": {"name": "ecad", "settings": {"population": 4}},
                                         "budget": {"evaluations": 6}, "heartbeat_s": 0.2})
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import os, signal
        import search.study as study
        from search.config import load_config
        def start_up(*args, **kwargs):        # the evaluator's start-up: the process dies in it
            os.kill(os.getpid(), signal.SIGKILL)
        study.make_pool = start_up
        study.run_study(load_config({str(cfg)!r}), db={db!r}, show_progress=False)
    """)], env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    assert _wait_for(lambda: _status(db, "early").startswith("stale"), "the study to go stale")
    resumed = _run("search", str(cfg), "--db", db, "-q", "--resume", "early")
    assert resumed.exit_code == 0 and "6 evaluations (6 in this run)" in resumed.output, resumed.output


def test_ctrl_c_during_evaluator_start_up_says_how_to_resume(tmp_path, monkeypatch):
    """The first Ctrl-C while the evaluator (e.g. Ray) starts is a clean interruption with the resume
    command, not 'interrupted again while saving'."""
    import search.study as study

    def start_up(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(study, "make_pool", start_up)
    db = str(tmp_path / "cs.db")
    cfg = _write(tmp_path / "syn.yaml", {"study": "cc", "synthetic": {}, "searcher": {"name": "random"},
                                         "budget": {"evaluations": 4}})
    result = _run("search", str(cfg), "--db", db, "-q")
    assert result.exit_code == 130, result.output
    assert "interrupted during start-up" in result.output and f"--resume cc --db {db}" in result.output
    assert "again" not in result.output
    assert _status(db, "cc") == "interrupted"
    monkeypatch.undo()
    resumed = _run("search", str(cfg), "--db", db, "-q", "--resume", "cc")
    assert resumed.exit_code == 0 and "4 evaluations (4 in this run)" in resumed.output, resumed.output


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


def test_cachesearch_db_names_the_database_when_no_db_is_given(tmp_path, monkeypatch):
    """A team sets one URL once (`CACHESEARCH_DB`); `--db` and a config's `db:` still win over it."""
    team = tmp_path / "team.db"
    monkeypatch.setenv("CACHESEARCH_DB", str(team))
    cfg = _write(tmp_path / "s.yaml", {"study": "env-db", "synthetic": {}, "searcher": {"name": "random"},
                                       "budget": {"evaluations": 3}})
    assert _run("search", str(cfg), "-q").exit_code == 0
    assert "env-db" in _run("studies").output
    from store import Store
    with Store(str(team), create=False) as s:
        assert [st.name for st in s.list_studies()] == ["env-db"]
    other = tmp_path / "other.db"
    assert _run("search", str(_write(tmp_path / "o.yaml", {**yaml.safe_load(cfg.read_text()), "db": str(other)})),
                "-q").exit_code == 0
    assert "env-db" in _run("studies", "--db", str(other)).output         # the config's db: won
    with Store(str(team), create=False) as s:
        assert len(s.finished_hashes("env-db")) == 3                         # and the team store is as it was
