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
    members = json.loads(front.output)["members"]
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
    from search.registry import SEARCHERS
    paths = sorted((ROOT / "configs").glob("*.yaml"))
    assert any(p.name == "embedded_quick.yaml" for p in paths)
    for path in paths:
        if path.name.startswith("embedded"):
            load_config(path)           # GPU configs name hub models and CUDA: checked on their machines
        else:
            doc = yaml.safe_load(path.read_text())
            assert doc["searcher"]["name"] in SEARCHERS


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


@pytest.mark.e2e   # two real `python -m search.cli` processes on the embedded model (~30 s): the e2e step
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
    assert "cache memory while it runs: 0.0 MiB" in result.output       # computes every cell: caches nothing
    assert len(list((tmp_path / "img").glob("*.png"))) == 2
    def stdout_of(*args: str) -> str:                       # stdout alone (model loading reports on stderr)
        done = subprocess.run([sys.executable, "-m", "search.cli", *args], capture_output=True, text=True,
                              timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert done.returncode == 0, done.stderr
        return done.stdout
    report = json.loads(stdout_of("apply", str(path), "-p", "a red 3", "--repeats", "1", "--out", str(tmp_path / "j"),
                                  "--json"))
    assert report["steps"] == 10 and report["reference_steps"] == 20 and report["mac_speedup"] == pytest.approx(2.0)
    assert report["latency_speedup"] > 0 and len(report["images"]) == 1
    described = json.loads(stdout_of("describe", "--json"))
    assert described["model"]["block_groups"][0]["components"] == ["attn1", "attn2", "ff"]
    per_call = described["macs_per_call"]
    assert per_call["full"] > sum(per_call["components"]["transformer_blocks"].values())


# ------------------------------------------------------------------------------------------ scripting
@pytest.fixture
def points_db(tmp_path):
    """The hand-checked study `p` (test_store.fill_points) plus one with a long name and no reference."""
    from test_store import fill_points

    from store import Store
    db = tmp_path / "pts.db"
    with Store(f"sqlite:///{db}") as s:
        ids = fill_points(s)
        fill_points(s, "a-study-with-a-rather-long-name-that-a-narrow-table-would-cut")
    return db, ids


def test_json_outputs_parse_and_carry_evaluation_ids(points_db, tmp_path):
    db, ids = points_db
    studies = json.loads(_run("studies", "--db", str(db), "--json").output)
    assert [s["name"] for s in studies][0] == "p"
    assert studies[0]["front_size"] == 5 and studies[0]["quality"] == "psnr" and studies[0]["cost"] == "mac_speedup"
    front = json.loads(_run("front", "p", "--db", str(db), "--json").output)
    assert [m["id"] for m in front["members"]] == [ids[n] for n in "GCBAE"]       # fastest first, by id
    assert front["hypervolume"] == pytest.approx(9.5) and front["members"][0]["psnr"] == 19.0
    out = _run("export", "p", "--pick", "knee", "-o", str(tmp_path / "k.json"), "--db", str(db), "--json")
    written = json.loads(out.output)["written"]
    assert written[0]["id"] == ids["C"] and written[0]["path"] == str(tmp_path / "k.json")
    assert json.loads((tmp_path / "k.json").read_text())["provenance"]["evaluation_id"] == ids["C"]
    syn = _write(tmp_path / "syn.yaml", {"synthetic": {"num_blocks": 2, "num_steps": 4},
                                         "searcher": {"name": "random"}})
    from schedules import Schedule, save_schedule
    from search.synthetic import SyntheticPool
    pool = SyntheticPool(num_blocks=2, num_steps=4)
    plan = save_schedule(Schedule.periodic(pool.spec, pool.sampling, 2), tmp_path / "fora2.json")
    evaluated = json.loads(_run("evaluate", str(syn), str(plan), "--json").output)
    assert evaluated["status"] == "done" and evaluated["mac_speedup"] > 1 and "latency_speedup_model" in evaluated


def test_front_without_a_reference_omits_the_hypervolume_and_shows_ids(points_db):
    db, ids = points_db
    table = _run("front", "p", "--db", str(db), "--quality", "latent_mse")       # has a reference: HV shown
    assert table.exit_code == 0 and "hypervolume 9.5" in table.output
    other = _run("front", "p", "--db", str(db), "--quality", "ssim")
    assert other.exit_code == 0 and "0 members" in other.output               # nobody reports ssim; no error
    assert "no hypervolume: no hypervolume reference for ssim" in other.output
    rows = [ln.split("│")[1] for ln in table.output.splitlines() if ln.startswith("│")]
    assert [int(r) for r in rows] == [ids[n] for n in "GCBAE"]                # the id column: evaluation ids
    wrong = _run("front", "p", "--db", str(db), "--quality", "mac_speedup")
    assert wrong.exit_code == 2 and "'mac_speedup' is a cost" in wrong.output


def test_piped_tables_are_not_cut(points_db):
    """CliRunner's stdout is not a terminal: the long study name and the cost headers stay whole."""
    db, _ = points_db
    listing = _run("studies", "--db", str(db))
    assert "a-study-with-a-rather-long-name-that-a-narrow-table-would-cut" in listing.output
    front = _run("front", "p", "--db", str(db))
    assert "modelled latency speedup" in front.output and "…" not in front.output
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("COLUMNS", None)
    piped = subprocess.run([sys.executable, "-m", "search.cli", "studies", "--db", str(db)], capture_output=True,
                           text=True, env=env, timeout=120)
    assert "a-study-with-a-rather-long-name-that-a-narrow-table-would-cut" in piped.stdout and "…" not in piped.stdout


def test_export_says_which_evaluation_it_wrote(points_db, tmp_path):
    db, ids = points_db
    out = _run("export", "p", "--pick", "fastest-with psnr>=26", "-o", str(tmp_path / "f.json"), "--db", str(db))
    assert out.exit_code == 0, out.output
    line = out.output.strip()
    assert line.startswith(f"wrote {tmp_path / 'f.json'}: evaluation {ids['A']} (")
    assert "psnr 30" in line and "MAC speedup 1.5x" in line and "found by" in line


def test_version_and_the_database_from_the_environment(points_db, monkeypatch, tmp_path):
    from importlib import metadata
    assert _run("--version").output.strip() == f"cachesearch {metadata.version('cachesearch')}"
    db, ids = points_db
    monkeypatch.setenv("CACHESEARCH_DB", str(db))
    assert "a-study-with" in _run("studies").output
    assert json.loads(_run("front", "p", "--json").output)["members"][0]["id"] == ids["G"]
    assert _run("export", "p", "-o", str(tmp_path / "e.json")).exit_code == 0
    cfg = _write(tmp_path / "syn.yaml", {"study": "from-env", "synthetic": {}, "searcher": {"name": "random"},
                                         "budget": {"evaluations": 3}})
    assert _run("search", str(cfg), "-q").exit_code == 0           # no --db, no db: in the config
    assert "from-env" in _run("studies").output
    assert _run("delete", "from-env", "--yes").exit_code == 0
    assert "from-env" not in _run("studies").output


def test_delete_asks_refuses_scripts_without_yes_and_live_runs(points_db):
    from store import Store
    db, _ = points_db
    url = f"sqlite:///{db}"
    no = runner.invoke(app, ["delete", "p", "--db", str(db)], input="n\n")
    assert no.exit_code == 1 and "nothing deleted" in no.output
    closed = runner.invoke(app, ["delete", "p", "--db", str(db)])                 # stdin closed: a script
    assert closed.exit_code == 2 and "pass --yes in scripts" in closed.output
    with Store(url) as s:
        s.claim_run("p", "other-host:1", interval_s=3600.0)
    busy = runner.invoke(app, ["delete", "p", "--db", str(db), "--yes"])
    assert busy.exit_code == 2 and "is being run by other-host:1" in busy.output
    with Store(url) as s:
        s.release_run("p", "other-host:1")
        s.set_study_status("p", "interrupted")
    yes = runner.invoke(app, ["delete", "p", "--db", str(db)], input="y\n")
    assert yes.exit_code == 0 and "deleted study 'p' (7 finished evaluations, 0 pending)" in yes.output
    with Store(url, create=False) as s:
        assert [x.name for x in s.list_studies()] == ["a-study-with-a-rather-long-name-that-a-narrow-table-would-cut"]
    missing = runner.invoke(app, ["delete", "p", "--db", str(db), "--yes"])
    assert missing.exit_code == 2 and "no study named 'p'" in missing.output


_NO_TORCH = """
import sys
sys.argv = ["cachesearch", *sys.argv[1:]]
from search.cli import app
try:
    app()
except SystemExit as exc:
    code = exc.code
print("torch imported" if "torch" in sys.modules else "no torch", "searchers imported" if "search.ecad" in sys.modules
      else "no searchers", "exit", code, file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["studies"], ["studies", "--json"], ["front", "p", "--json"], ["front", "nope"],
                                  ["export", "p", "-o", "{dir}/x.json"], ["delete", "nope", "--yes"],
                                  ["studies", "--db", "{dir}/no/such.db"]])
def test_store_commands_start_without_torch(points_db, args):
    """In a fresh interpreter, as a user runs them: store commands, succeeding or failing, never
    import torch or the searchers (the import time that used to dominate `cachesearch studies`)."""
    db, _ = points_db
    argv = [a.format(dir=db.parent) for a in args] + ([] if "--db" in args else ["--db", str(db)])
    done = subprocess.run([sys.executable, "-c", _NO_TORCH, *argv], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    verdict = done.stderr.strip().splitlines()[-1]
    assert verdict.startswith("no torch no searchers exit"), done.stderr


def test_search_never_imports_the_dashboard_and_launches_it_as_a_program():
    """Dependencies flow search -> store and dashboard -> store: no module of search/ imports
    dashboard; `cachesearch dashboard` runs `python -m dashboard`."""
    import ast

    from search.cli import dashboard_command
    for path in sorted((ROOT / "search").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "dashboard" or n.startswith("dashboard.") for n in names), path.name
    command = dashboard_command("sqlite:////tmp/x.db", "127.0.0.1", 8600, False)
    assert command == [sys.executable, "-m", "dashboard", "--db", "sqlite:////tmp/x.db", "--host", "127.0.0.1",
                       "--port", "8600"]
    helped = subprocess.run([sys.executable, "-m", "dashboard", "--help"], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert helped.returncode == 0 and "--db" in helped.stdout


def test_the_study_records_model_name_units_and_thumbnail_captions():
    """What the dashboard shows without importing the evaluators comes with the study: the model's name,
    the units of the evaluation's metrics, the (prompt, seed) of each thumbnail in thumbnail order."""
    from evaluators.prompts import load_prompts
    from search.config import load_config
    from search.study import study_document
    cfg = load_config(ROOT / "configs" / "embedded_quick.yaml")
    doc = study_document(cfg)
    prompts, seeds = load_prompts(cfg.evaluation), cfg.evaluation.seeds
    assert doc["model_name"] == "embedded" and doc["metric_units"]["psnr"] == "dB"
    assert doc["thumbnails"] == [{"prompt": p, "seed": seeds[0]}
                                 for p in prompts[:min(cfg.evaluation.n_thumbnails, len(prompts))]]
    objectives = cfg.resolved_objectives()
    assert (objectives.quality.name, objectives.quality.unit, objectives.cost.name) == ("psnr", "dB", "mac_speedup")


def test_a_configs_db_wins_over_cachesearch_db(tmp_path, monkeypatch):
    """Precedence: --db, then the config's db:, then $CACHESEARCH_DB (the team's default)."""
    team, own = tmp_path / "team.db", tmp_path / "own.db"
    monkeypatch.setenv("CACHESEARCH_DB", str(team))
    cfg = _write(tmp_path / "o.yaml", {"study": "own-db", "synthetic": {}, "searcher": {"name": "random"},
                                       "budget": {"evaluations": 3}, "db": str(own)})
    assert _run("search", str(cfg), "-q").exit_code == 0
    assert "own-db" in _run("studies", "--db", str(own)).output
    assert not team.exists()                                   # the team store was not even created
