"""Several processes on one SQLite store: a reader polling during writes sees no lock errors, and a
writer killed with SIGKILL mid-loop leaves a database that opens, is consistent and holds every
result it reported committed.

Child processes are forked from the test process (which has already imported torch via `schedules`)
so each starts in milliseconds instead of re-importing torch; they open their own connections after
the fork, exactly as separate programs would.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import random
import signal
import sqlite3
import time
import traceback
from pathlib import Path

import pytest

from store import Store
from test_store import OBJECTIVES, make_result, url_of

FORK = mp.get_context("fork")
pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")


def _writer(url: str, start: int, count: int, fd: int, thumb_bytes: int) -> None:
    """Record results start.. one transaction each; after each commit write its index to `fd`."""
    store = Store(url)
    for i in range(start, start + count):
        store.record_evaluation("c", make_result(i, thumb_bytes=thumb_bytes), step=i)
        os.write(fd, f"{i}\n".encode())        # < PIPE_BUF: atomic, so a kill never leaves half a line
    store.close()
    os._exit(0)


def _reader(url: str, stop: mp.synchronize.Event, report: str) -> None:
    """Poll what the dashboard reads until told to stop; record every error and the counts seen."""
    errors: list[str] = []
    counts: list[int] = []
    store = Store(url, create=False)
    while not stop.is_set():
        try:
            n = len(store.evaluations("c", per_prompt=False))
            store.list_studies()
            store.front("c")
            store.hypervolume_history("c")
            counts.append(n)
        except Exception:                        # noqa: BLE001 - any error is the finding
            errors.append(traceback.format_exc(limit=3))
    store.close()
    Path(report).write_text(json.dumps({"errors": errors, "counts": counts}))
    os._exit(0)


def _new_store(path: Path) -> None:
    with Store(url_of(path)) as s:
        s.create_study("c", {}, "sig", "random", {}, OBJECTIVES, {"psnr": 20.0})


def test_reader_in_another_process_sees_no_lock_errors(tmp_path: Path) -> None:
    db = tmp_path / "rw.db"
    _new_store(db)
    url = url_of(db)
    stop = FORK.Event()
    report = tmp_path / "reader.json"
    r_fd, w_fd = os.pipe()
    reader = FORK.Process(target=_reader, args=(url, stop, str(report)))
    writer = FORK.Process(target=_writer, args=(url, 0, 120, w_fd, 4096))
    reader.start()
    writer.start()
    writer.join(120)
    stop.set()
    reader.join(60)
    os.close(w_fd)
    os.close(r_fd)
    assert writer.exitcode == 0 and reader.exitcode == 0
    seen = json.loads(report.read_text())
    assert seen["errors"] == []
    assert len(seen["counts"]) >= 5, "the reader should have polled during the writes"
    assert seen["counts"] == sorted(seen["counts"]), "a reader never sees committed rows disappear"
    with Store(url) as s:
        assert len(s.evaluations("c")) == 120


def _read_lines(fd: int, until: int, deadline: float) -> list[int]:
    buf = b""
    while buf.count(b"\n") < until and time.monotonic() < deadline:
        buf += os.read(fd, 4096)
    return [int(x) for x in buf.split()]


def _drain(fd: int) -> list[int]:
    os.set_blocking(fd, False)
    try:
        data = os.read(fd, 1 << 16)
    except BlockingIOError:
        data = b""
    return [int(x) for x in data.split()]


def _check_consistent(db: Path, committed: set[int]) -> set[int]:
    """Integrity, references and thumbnail counts hold; every committed index is stored whole."""
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []
        bad = con.execute("""SELECT e.id FROM evaluations e LEFT JOIN thumbnails t ON t.evaluation_id = e.id
                             GROUP BY e.id HAVING COUNT(t.id) != e.n_thumbnails""").fetchall()
        assert bad == []
    with Store(url_of(db)) as s:
        stored = {r.schedule_hash: r for r in s.evaluations("c")}
        for i in committed:
            want = make_result(i)
            got = stored.get(want.schedule.hash)
            assert got is not None, f"result {i} was reported committed but is missing"
            assert got.status == want.status and got.step == i
            if want.ok:
                assert math.isinf(got.metrics["psnr"]) if math.isinf(want.metrics["psnr"]) else \
                    got.metrics["psnr"] == want.metrics["psnr"]
        return {r.step for r in stored.values() if r.step is not None}


def test_writer_killed_mid_loop_leaves_consistent_database(tmp_path: Path) -> None:
    db = tmp_path / "kill.db"
    _new_store(db)
    url = url_of(db)
    rng = random.Random(5)
    committed: set[int] = set()
    start = 0
    for _ in range(5):
        r_fd, w_fd = os.pipe()
        # ~200 kB of thumbnails per result widens each transaction, so kills land inside one
        writer = FORK.Process(target=_writer, args=(url, start, 10_000, w_fd, 200_000))
        writer.start()
        os.close(w_fd)
        got = _read_lines(r_fd, rng.randint(1, 4), time.monotonic() + 60)
        time.sleep(rng.uniform(0.0, 0.03))
        os.kill(writer.pid, signal.SIGKILL)
        writer.join(10)
        assert writer.exitcode == -signal.SIGKILL
        got += _drain(r_fd)
        os.close(r_fd)
        assert got, "the writer committed nothing before the kill"
        committed |= set(got)
        steps = _check_consistent(db, committed)
        assert committed <= steps                         # steps beyond `got`: committed, not yet reported
        start = max(steps) + 1
    with Store(url) as s:                                 # and the killed database still takes writes
        s.record_evaluation("c", make_result(start), step=start)
        assert make_result(start).schedule.hash in s.finished_hashes("c")
