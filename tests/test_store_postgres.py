"""The same store against a real PostgreSQL server, started in a temporary folder for this module
(Debian's `postgresql` package; the test skips when its binaries or psycopg, the `postgres` extra's
driver, are missing). The URL is the README's plain `postgresql://` form.

Run as root (CI containers), the server runs as the `postgres` system user, since PostgreSQL refuses
to run as root. It listens on a Unix socket only.
"""

from __future__ import annotations

import glob
import math
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from store import ObjectiveSpec, SchemaVersionError, Store, StudyExists
from test_store import POINTS, fill_points, make_result

pytest.importorskip("psycopg")


def _pg_bin() -> Path | None:
    for pattern in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(pattern) / "initdb").exists():
            return Path(pattern)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="cachesearch-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        os.chown(root, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()

    def run(*args: str) -> None:
        done = subprocess.run(prefix + list(args), capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stdout}\n{done.stderr}")

    run(str(bindir / "initdb"), "-D", str(data), "-U", "cachesearch", "--auth=trust", "-E", "UTF8", "--no-sync")
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60", "-o",
        f"-p {port} -k {root} -c listen_addresses='' -c fsync=off", "start")
    try:
        yield f"postgresql://cachesearch@/postgres?host={root}&port={port}"
    finally:
        subprocess.run(prefix + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def new_database(pg_url: str, name: str) -> str:
    """A new, empty database on the module's server; its URL."""
    from sqlalchemy import create_engine, text
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return pg_url.replace("/postgres?", f"/{name}?")


def test_postgres_round_trip_fronts_and_errors(pg_url: str) -> None:
    with Store(pg_url) as s:
        s.create_study("pg", {"seeds": [1]}, "sig", "ecad", {"population": 4},
                       [ObjectiveSpec("psnr"), ObjectiveSpec("mac_speedup")], {"psnr": 20.0})
        for i in range(12):
            s.record_evaluation("pg", make_result(i), step=i)
        s.save_searcher_state("pg", {"best": math.inf, "pop": [[0, 1]]}, 2)
        with pytest.raises(StudyExists):
            s.create_study("pg", {}, "sig", "dp", {}, [ObjectiveSpec("psnr")], exist_ok=True)
        ids = fill_points(s)

    with Store(pg_url, create=False) as again:                       # a second, independent engine
        results = {r.schedule.hash: r for r in again.results("pg")}
        for i in range(12):
            want = make_result(i)
            got = results[want.schedule.hash]
            assert got.status == want.status and got.macs == want.macs
            if want.ok:
                assert (math.isinf(got.metrics["psnr"]) and math.isinf(want.metrics["psnr"])) or \
                    got.metrics["psnr"] == want.metrics["psnr"]
        rec = {r.schedule_hash: r for r in again.evaluations("pg")}[make_result(0).schedule.hash]
        assert again.thumbnails(rec.id) == make_result(0).thumbnails
        assert again.load_searcher_state("pg") == ({"best": math.inf, "pop": [[0, 1]]}, 2)
        assert [r.id for r in again.front("p")] == [ids[n] for n in "EABCG"]
        assert [h.hypervolume for h in again.hypervolume_history("p")] == pytest.approx(
            [5.0, 6.2, 6.2, 7.5, 7.5, 7.5, 9.5])
        assert len(POINTS) == 7
        with again._engine.begin() as conn:
            conn.exec_driver_sql("UPDATE cachesearch_schema SET value = '2' WHERE key = 'version'")
    with pytest.raises(SchemaVersionError, match="schema version 2"):
        Store(pg_url)


def test_cli_reads_the_readme_postgresql_url_and_reports_a_dead_server_in_one_line(pg_url: str) -> None:
    """`--db postgresql://...` (the README's form, no driver named) works with what the `postgres`
    extra installs; a server that is not there is one line, exit 2."""
    from typer.testing import CliRunner

    from search.cli import app
    assert pg_url.startswith("postgresql://")
    pg_url = new_database(pg_url, "cli")
    with Store(pg_url) as s:
        s.create_study("pg-cli", {}, "sig", "random", {}, [ObjectiveSpec("psnr"), ObjectiveSpec("mac_speedup")],
                       {"psnr": 20.0})
    listing = CliRunner().invoke(app, ["studies", "--db", pg_url])
    assert listing.exit_code == 0 and "pg-cli" in listing.output, listing.output
    dead = pg_url.rsplit("port=", 1)[0] + f"port={_free_port()}"
    failed = CliRunner().invoke(app, ["studies", "--db", dead])
    assert failed.exit_code == 2 and failed.output.startswith("error: cannot connect to the database postgresql://")
    assert len(failed.output.strip().splitlines()) == 1, failed.output


# ------------------------------------------------------------------------------------------ several drivers
def _overlapping_writer(url: str, study: str, reverse: bool, report: str) -> None:
    """Open the (maybe still empty) store, create a study, then queue and record overlapping batches
    of the same schedules as the other writer, in the opposite order when `reverse`."""
    try:
        s = Store(url)
        s.create_study(study, {}, "sig", "random", {}, [ObjectiveSpec("psnr"), ObjectiveSpec("mac_speedup")],
                       {"psnr": 20.0})
        for i in range(60):
            batch = [make_result(j) for j in range(i, i + 4)]
            s.mark_queued(study, [r.schedule for r in (batch[::-1] if reverse else batch)], step=i)
            s.record_evaluations(study, batch[::-1] if reverse else batch, step=i)
        s.close()
        Path(report).write_text("ok")
    except BaseException:
        import traceback
        Path(report).write_text(traceback.format_exc())
    os._exit(0)


def test_writers_opening_a_new_database_at_once_with_overlapping_batches(pg_url: str, tmp_path: Path) -> None:
    """Two processes open a new database at the same moment (both would create the schema) and store
    overlapping batches of the same schedules in opposite orders: without the schema lock one fails
    on PostgreSQL's catalog, without ordered upserts one fails on the schedules' key or deadlocks."""
    import multiprocessing as mp
    url = new_database(pg_url, "overlap")
    fork = mp.get_context("fork")
    reports = [tmp_path / "a.txt", tmp_path / "b.txt"]
    procs = [fork.Process(target=_overlapping_writer, args=(url, name, name == "b", str(r)))
             for name, r in zip("ab", reports)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=300)
    assert [r.read_text() for r in reports] == ["ok", "ok"]
    with Store(url, create=False) as s:
        for study in "ab":
            assert len(s.finished_hashes(study)) == 63
        with s._engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM schedules").scalar() == 63


ROOT = Path(__file__).resolve().parents[1]
DRIVER_ERRORS = ("Traceback", "error:", "deadlock", "UniqueViolation", "duplicate key", "could not serialize",
                 "locked")


def _driver(cfg: Path, url: str, log: Path, *extra: str) -> subprocess.Popen:
    """`cachesearch search CFG --db URL` in its own process, as on another machine."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    with log.open("a") as out:
        return subprocess.Popen([sys.executable, "-m", "search.cli", "search", str(cfg), "--db", url, "-q", *extra],
                                env=env, stdout=out, stderr=subprocess.STDOUT)


def _study_config(path: Path, name: str, budget: int) -> Path:
    """Every study here is the same search (ECAD, seed 0, starting from every heuristic schedule), so
    the drivers store the same schedule rows at the same moments, and one study is the
    uninterrupted reference for another's resume."""
    path.write_text(yaml.safe_dump({
        "study": name, "synthetic": {"num_blocks": 4, "num_steps": 8, "delay": 0.02},
        "searcher": {"name": "ecad", "seed": 0, "settings": {"population": 12}},
        "budget": {"evaluations": budget}, "batch_size": 4, "heartbeat_s": 0.2}))
    return path


def _finished(url: str, study: str) -> list[tuple[str, dict]]:
    """(schedule hash, metrics) of the study's finished evaluations, in the order they finished."""
    with Store(url, create=False) as s:
        return [(r.schedule_hash, r.metrics) for r in s.evaluations(study, per_prompt=False)
                if r.status in ("done", "failed")]


class DashboardReader:
    """The real dashboard app (Streamlit AppTest) on the database, rendered again and again while the
    drivers write: every exception or error message is kept, and the evaluation counts it showed."""

    def __init__(self, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        import dashboard
        monkeypatch.setenv(dashboard.DB_ENV, url)
        self.problems: list[str] = []
        self.counts: dict[str, list[int]] = {}
        self.renders = 0
        self.during_writes = 0   # renders begun while a driver was still writing

    def render(self, page: str, study: str | None = None) -> None:
        from streamlit.testing.v1 import AppTest

        import dashboard
        from dashboard import data
        data.clear()
        at = AppTest.from_file(str(dashboard.app_path()), default_timeout=120)
        at.query_params["page"] = page
        if study:
            at.query_params["study"] = study
        at.run()
        self.renders += 1
        self.problems += [str(e.value) for e in at.exception] + [str(e.value) for e in at.error]
        if page == "studies" and at.dataframe:
            frame = at.dataframe[0].value
            for name, n in zip(frame["study"], frame["evaluations"]):
                self.counts.setdefault(name, []).append(int(n))

    def watch(self, drivers: list[subprocess.Popen]) -> None:
        """Render page after page until the drivers have ended (at least once)."""
        pages = [("studies", None), ("frontier", "pg-a"), ("studies", None), ("progress", "pg-b")]
        while True:
            writing = any(d.poll() is None for d in drivers)
            self.during_writes += writing
            page, study = pages[self.renders % len(pages)]
            self.render(page, study)
            if not writing:
                break


@pytest.mark.e2e
def test_two_drivers_and_a_dashboard_share_one_database(pg_url: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two searches in two processes (as two machines would run them) start at once on a new database
    (both create the schema) and write the same schedules at the same moments, while the dashboard
    reads; one is killed mid-run and resumed while a third search starts. No write is lost, no driver
    sees a lock, deadlock or key error, the dashboard never fails and its counts only grow, and the
    resumed study ends exactly as the uninterrupted one did (same schedules, same order, same
    figures)."""
    url = new_database(pg_url, "drivers")
    budget = 60
    cfg = {name: _study_config(tmp_path / f"{name}.yaml", name, budget) for name in ("pg-a", "pg-b", "pg-c")}
    logs = {name: tmp_path / f"{name}.log" for name in cfg}
    reader = DashboardReader(url, monkeypatch)

    a = _driver(cfg["pg-a"], url, logs["pg-a"])
    b = _driver(cfg["pg-b"], url, logs["pg-b"])
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and b.poll() is None:   # kill b once it is well under way
            try:
                if len(_finished(url, "pg-b")) >= 20:
                    break
            except Exception:   # its study or the schema does not exist yet
                pass
            time.sleep(0.05)
        b.kill()
        b.wait()
        reader.watch([a])
        assert a.wait(timeout=300) == 0, logs["pg-a"].read_text()
        killed_at = len(_finished(url, "pg-b"))
        assert 20 <= killed_at < budget, f"b was killed after {killed_at} evaluations, not mid-run"
        time.sleep(1.0)   # b's heartbeat (0.2 s) goes stale after three silent intervals
        c = _driver(cfg["pg-c"], url, logs["pg-c"])
        resumed = _driver(cfg["pg-b"], url, logs["pg-b"], "--resume", "pg-b")
        reader.watch([c, resumed])
        assert resumed.wait(timeout=300) == 0, logs["pg-b"].read_text()
        assert c.wait(timeout=300) == 0, logs["pg-c"].read_text()
    finally:
        for proc in (a, b):
            if proc.poll() is None:
                proc.kill()
    for name, log in logs.items():
        text = log.read_text()
        assert not [e for e in DRIVER_ERRORS if e in text], f"{name}:\n{text}"
    reference = _finished(url, "pg-a")
    assert len(reference) == budget and len({h for h, _ in reference}) == budget
    assert _finished(url, "pg-b") == reference        # resumed after a kill: the very same evaluations
    assert _finished(url, "pg-c") == reference        # started beside a resume: the same again
    assert f"{budget} evaluations ({budget - killed_at} in this run)" in logs["pg-b"].read_text()
    with Store(url, create=False) as s:
        assert {st.name: (st.n_done + st.n_failed, st.n_pending, st.status) for st in s.list_studies()} == {
            name: (budget, 0, "finished") for name in cfg}
    reader.render("studies")
    assert reader.during_writes >= 1 and not reader.problems, reader.problems
    assert all(seen == sorted(seen) for seen in reader.counts.values()), reader.counts
    assert reader.counts["pg-a"][-1] == budget
