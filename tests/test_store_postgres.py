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
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

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
    from sqlalchemy import create_engine, text
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("CREATE DATABASE cli"))
    admin.dispose()
    pg_url = pg_url.replace("/postgres?", "/cli?")
    with Store(pg_url) as s:
        s.create_study("pg-cli", {}, "sig", "random", {}, [ObjectiveSpec("psnr"), ObjectiveSpec("mac_speedup")],
                       {"psnr": 20.0})
    listing = CliRunner().invoke(app, ["studies", "--db", pg_url])
    assert listing.exit_code == 0 and "pg-cli" in listing.output, listing.output
    dead = pg_url.rsplit("port=", 1)[0] + f"port={_free_port()}"
    failed = CliRunner().invoke(app, ["studies", "--db", dead])
    assert failed.exit_code == 2 and failed.output.startswith("error: cannot connect to the database postgresql://")
    assert len(failed.output.strip().splitlines()) == 1, failed.output
