"""Store behaviour on real SQLite files: round trip across processes, resume bookkeeping, fronts and
hypervolume on hand-checked points, schema-version gate, clear errors. No mocks.

Helpers here (`tiny_spec`, `make_schedule`, `make_result`) are also imported by the subprocess
writers of this file and of test_store_concurrency.py, so both sides build identical results.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from schedules import BlockGroup, EvaluationResult, ModelSpec, SamplingSpec, Schedule
from store import (
    HVPoint, ObjectiveError, Objective, ScheduleNotFound, SchemaVersionError, Store, StoreError, StudyExists,
    StudyNotFound,
)

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
OBJECTIVES = [Objective("psnr"), Objective("mac_speedup")]


# ----------------------------------------------------------------------------------- shared helpers
def tiny_spec(blocks: int = 4) -> ModelSpec:
    return ModelSpec("pixart", "PixArtTransformer2DModel",
                     (BlockGroup("transformer_blocks", blocks, ("attn1", "attn2", "ff")),), model_id="tiny")


def make_schedule(i: int, steps: int = 6) -> Schedule:
    """Distinct schedule per i: the bits of i (and a rotation) decide which slots reuse."""
    spec, sampling = tiny_spec(), SamplingSpec(steps, cfg="batched")
    n = 3 * 4 * (steps - 1)
    bits = [0 if ((i >> (k % 20)) & 1) ^ (k % 3 == i % 3) else 1 for k in range(n)]
    bits[i % n] = 1 - bits[i % n] if i >= 20 else bits[i % n]
    schedule = Schedule.from_bits(spec, sampling, bits)
    return schedule.with_info(provenance={"origin": f"test-{i}"})


def make_result(i: int, thumb_bytes: int = 64) -> EvaluationResult:
    """Deterministic result i; every 7th fails, every 11th has an infinite PSNR."""
    schedule = make_schedule(i)
    if i % 7 == 6:
        return EvaluationResult.failed(schedule, f"worker died on {i}", worker="w1", started_at=1000.0 + i,
                                       finished_at=1001.0 + i, prompt_set_hash="ps1")
    psnr = math.inf if i % 11 == 10 else 20.0 + (i * 37 % 17)
    return EvaluationResult(
        schedule=schedule, status="done", metrics={"psnr": psnr, "ssim": 0.5 + (i % 5) / 10},
        per_prompt={"psnr": [psnr, psnr - 1.0, psnr + 0.5], "ssim": [0.1 * (i % 9)] * 3},
        macs=10_000_000 + i, mac_speedup=1.0 / schedule.compute_fraction(), latency_s=0.01 * (i + 1),
        latency_speedup=1.0 + i / 100, worker="w1", started_at=1000.0 + i, finished_at=1001.5 + i,
        thumbnails=[bytes([i % 256]) * thumb_bytes, b"\x89PNG" + bytes([i % 256, 7])], prompt_set_hash="ps1")


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


def run_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)])}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=timeout)


def same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return a == b or (math.isnan(a) and math.isnan(b))


# ----------------------------------------------------------------------------------- round trip
def test_round_trip_across_process_restart(tmp_path: Path) -> None:
    """A separate process writes a study; this process (a restart, as far as the file knows) reads
    everything back equal: results, thumbnails, reference thumbnails, searcher state, infinities."""
    db = tmp_path / "rt.db"
    out = run_python(f"""
        import math
        from store import Store, Objective
        from test_store import make_result, OBJECTIVES
        with Store({url_of(db)!r}) as s:
            s.create_study("rt", {{"evaluation": {{"seeds": [0, 1]}}, "budget": 30}}, "sig-1", "ecad",
                           {{"population": 8}}, OBJECTIVES, {{"psnr": 20.0}})
            for i in range(30):
                s.record_evaluation("rt", make_result(i), step=i // 8)
            s.set_reference_thumbnails("rt", [b"ref0", b"ref1"])
            s.save_searcher_state("rt", {{"population": [[1, 0, 1]], "best": math.inf, "gen": 3}}, 3)
            s.set_study_status("rt", "interrupted")
        print("written")
    """)
    assert out.returncode == 0, out.stderr
    with Store(url_of(db), create=False) as s:
        info = s.get_study("rt")
        assert (info.model_signature, info.searcher, info.status) == ("sig-1", "ecad", "interrupted")
        assert info.config == {"evaluation": {"seeds": [0, 1]}, "budget": 30}
        assert info.objectives == (Objective("psnr", reference=20.0), Objective("mac_speedup"))
        assert info.reference_point == {"psnr": 20.0, "mac_speedup": 1.0}
        results = s.results("rt")
        assert len(results) == 30
        by_hash = {r.schedule.hash: r for r in results}
        records = {r.schedule_hash: r for r in s.evaluations("rt")}
        for i in range(30):
            want = make_result(i)
            got = by_hash[want.schedule.hash]
            assert got.schedule == want.schedule and got.schedule.plan == want.schedule.plan
            assert got.schedule.provenance == {"origin": f"test-{i}"}
            assert got.status == want.status and got.error == want.error
            assert got.metrics.keys() == want.metrics.keys()
            assert all(same(got.metrics[k], v) for k, v in want.metrics.items())
            assert {k: len(v) for k, v in got.per_prompt.items()} == {k: len(v) for k, v in want.per_prompt.items()}
            assert all(same(x, y) for k in want.per_prompt for x, y in zip(got.per_prompt[k], want.per_prompt[k]))
            for f in ("macs", "mac_speedup", "latency_s", "latency_speedup", "worker", "started_at",
                      "finished_at", "prompt_set_hash"):
                assert getattr(got, f) == getattr(want, f), f
            rec = records[want.schedule.hash]
            assert rec.step == i // 8
            assert rec.compute_fraction == pytest.approx(want.schedule.compute_fraction())
            assert rec.fractions == pytest.approx(want.schedule.fractions())
            assert s.thumbnails(rec.id) == want.thumbnails
            assert rec.n_thumbnails == len(want.thumbnails)
        assert s.reference_thumbnails("rt") == [b"ref0", b"ref1"]
        state, step = s.load_searcher_state("rt")
        assert step == 3 and state == {"population": [[1, 0, 1]], "best": math.inf, "gen": 3}
        assert math.isinf(s.evaluations("rt", "done")[9].metrics["psnr"])   # i = 10 (9th done, 6 failed)


# ----------------------------------------------------------------------------------- resume
def test_resume_bookkeeping_never_evaluates_twice(tmp_path: Path) -> None:
    with Store(url_of(tmp_path / "r.db")) as s:
        s.create_study("r", {}, "sig", "random", {}, OBJECTIVES, {"psnr": 20.0})
        schedules = [make_schedule(i) for i in range(6)]
        ids = s.mark_queued("r", schedules, step=0)
        assert len(set(ids)) == 6
        s.mark_running("r", schedules[0], worker="gpu0")
        s.mark_running("r", schedules[1].hash, worker="gpu1")
        assert [e.status for e in s.evaluations("r")].count("running") == 2
        first = s.record_evaluation("r", make_result(0))
        assert first == ids[0]                                  # the queued row is completed in place
        s.record_evaluation("r", make_result(6))               # i=6 fails
        assert s.finished_hashes("r") == {schedules[0].hash, make_schedule(6).hash}
        assert s.finished_hashes("r", include_failed=False) == {schedules[0].hash}
        assert {x.hash for x in s.unfinished_schedules("r")} == {x.hash for x in schedules[1:]}
        # recording a done schedule again keeps the first result
        again = make_result(0)
        again.metrics["psnr"] = -1.0
        assert s.record_evaluation("r", again) == first
        assert s.evaluation(first).metrics["psnr"] == make_result(0).metrics["psnr"]
        # a failed schedule can be queued again and then succeed
        s.mark_queued("r", [make_schedule(6)])
        assert make_schedule(6).hash not in s.finished_hashes("r")
        ok = make_result(6)
        ok.status, ok.error, ok.metrics, ok.mac_speedup = "done", None, {"psnr": 30.0}, 1.5
        s.record_evaluation("r", ok)
        assert s.evaluations("r", "failed") == []
        assert len(s.evaluations("r")) == 7
        summary = s.list_studies()[0]
        assert (summary.n_done, summary.n_failed, summary.n_pending) == (2, 0, 5)


def test_study_errors_and_exist_ok(tmp_path: Path) -> None:
    with Store(url_of(tmp_path / "s.db")) as s:
        s.create_study("a", {}, "sig", "ecad", {}, OBJECTIVES, {"psnr": 20.0})
        with pytest.raises(StudyExists, match="already exists"):
            s.create_study("a", {}, "sig", "ecad", {}, OBJECTIVES, {"psnr": 20.0})
        assert s.create_study("a", {"budget": 9}, "sig", "ecad", {}, OBJECTIVES, {"psnr": 20.0}, exist_ok=True).name == "a"
        with pytest.raises(StudyExists, match="searcher: stored 'ecad', asked 'dp'"):
            s.create_study("a", {}, "sig", "dp", {}, OBJECTIVES, {"psnr": 20.0}, exist_ok=True)
        with pytest.raises(StudyNotFound, match=r"no study named 'b' \(studies here: a\)"):
            s.get_study("b")
        with pytest.raises(StudyNotFound):
            s.record_evaluation("b", make_result(0))
        with pytest.raises(StoreError, match="not JSON.*never pickle"):
            s.save_searcher_state("a", {"rng": object()}, 1)
        with pytest.raises(StoreError, match="unknown study status"):
            s.set_study_status("a", "paused-ish")
        with pytest.raises(ScheduleNotFound):
            s.schedule("0" * 64)
        with pytest.raises(StoreError, match="unknown evaluation status 'finished'"):
            s.evaluations("a", "finished")
        s.record_evaluation("a", make_result(1))
        s.set_reference_thumbnails("a", [b"r"])
        s.save_searcher_state("a", {"g": 1}, 1)
        assert s.schedule(make_schedule(1).hash[:10]) == make_schedule(1)
        s.delete_study("a")
        assert s.list_studies() == []
        with s._engine.connect() as c:                   # cascades removed everything the study owned
            assert [c.exec_driver_sql(f"SELECT COUNT(*) FROM {t}").scalar()
                    for t in ("evaluations", "thumbnails", "searcher_states")] == [0, 0, 0]
        assert s.schedule(make_schedule(1).hash) == make_schedule(1)   # schedules are shared, kept


# ----------------------------------------------------------------------------------- fronts
# (name, psnr, mac_speedup) in recording order; "F" fails. Reference point: psnr 20, speedup 1.0.
POINTS = [("A", 30.0, 1.5), ("D", 24.0, 1.8), ("F", None, None), ("B", 25.0, 2.0), ("E", 35.0, 1.0),
          ("G", 19.0, 4.0), ("C", 22.0, 3.0)]


def fill_points(s: Store, study: str = "p") -> dict[str, int]:
    s.create_study(study, {}, "sig", "random", {},
                   [Objective("psnr"), Objective("mac_speedup"), Objective("latent_mse", maximize=False)],
                   {"psnr": 20.0, "latent_mse": 80.0})
    ids = {}
    for k, (name, q, c) in enumerate(POINTS):
        schedule = make_schedule(100 + k)
        if q is None:
            result = EvaluationResult.failed(schedule, "boom")
        else:
            result = EvaluationResult(schedule, "done", metrics={"psnr": q, "latent_mse": 100.0 - q}, mac_speedup=c)
        ids[name] = s.record_evaluation(study, result)
    return ids


def test_front_and_hypervolume_hand_checked(tmp_path: Path) -> None:
    """D is dominated by B; E (speedup 1.0) and G (psnr below the reference) are on the front but add
    no volume. Volume by speedup slices: [1,1.5] x (30-20) + [1.5,2] x (25-20) + [2,3] x (22-20)
    = 5 + 2.5 + 2 = 9.5. History: A 10x0.5=5; D adds (24-20)x(1.8-1.5)=1.2 -> 6.2; F none; B replaces D:
    5+2.5=7.5; E, G none; C adds 2 -> 9.5."""
    with Store(url_of(tmp_path / "p.db")) as s:
        ids = fill_points(s)
        front = s.front("p")
        assert [r.id for r in front] == [ids[n] for n in "EABCG"]         # sorted by speedup
        assert s.hypervolume("p") == pytest.approx(9.5)
        hist = s.hypervolume_history("p")
        assert [h.n_evaluations for h in hist] == [1, 2, 3, 4, 5, 6, 7]
        assert [h.hypervolume for h in hist] == pytest.approx([5.0, 6.2, 6.2, 7.5, 7.5, 7.5, 9.5])
        assert isinstance(hist[0], HVPoint)
        # a lower-is-better metric (latent_mse = 100 - psnr, reference 80) gives the same front and volume
        assert [r.id for r in s.front("p", "latent_mse")] == [ids[n] for n in "EABCG"]
        assert s.hypervolume("p", "latent_mse") == pytest.approx(9.5)
        # a different reference moves the volume: psnr 0 -> 35x0 (E) ... = 30x.5+25x.5+22x1+19x1 = 68.5
        assert s.hypervolume("p", reference={"psnr": 0.0}) == pytest.approx(68.5)
        summary = s.list_studies()[0]
        assert (summary.front_size, summary.best_quality, summary.best_speedup) == (5, 35.0, 4.0)
        with pytest.raises(ObjectiveError, match="no hypervolume reference for ssim: set `reference`"):
            s.hypervolume("p", "ssim")
        assert s.front("p", "ssim") == []                               # nobody reports ssim


# ----------------------------------------------------------------------------------- schema gate
def test_schema_version_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    Store(url_of(db)).close()
    with sqlite3.connect(db) as con:
        con.execute("UPDATE cachesearch_schema SET value = '99' WHERE key = 'version'")
    with pytest.raises(SchemaVersionError, match=r"schema version 99, this cachesearch reads version 1"):
        Store(url_of(db))

    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as con:
        con.execute("CREATE TABLE studies (x INTEGER)")
    with pytest.raises(SchemaVersionError, match="no schema version row"):
        Store(url_of(foreign))

    with pytest.raises(StoreError, match="no cachesearch database at"):
        Store(url_of(tmp_path / "missing.db"), create=False)
    assert not (tmp_path / "missing.db").exists()


def test_sqlite_is_configured_for_concurrency(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    with Store(url_of(db)) as s, s._engine.connect() as c:
        pragmas = [c.exec_driver_sql(f"PRAGMA {p}").scalar() for p in ("journal_mode", "foreign_keys", "busy_timeout")]
    assert pragmas == ["wal", 1, 30000]


def test_json_only_state_roundtrips_numpy_scalars(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    with Store(url_of(tmp_path / "n.db")) as s:
        s.create_study("n", {}, "sig", "bayes", {}, OBJECTIVES, {"psnr": 20.0})
        s.save_searcher_state("n", {"x": np.float64(1.5), "k": np.int64(3), "v": [np.float32(-math.inf)]}, 7)
        assert s.load_searcher_state("n") == ({"x": 1.5, "k": 3, "v": [-math.inf]}, 7)
        assert json.dumps(s.load_searcher_state("n")[0]["k"]) == "3"


def test_reader_never_recreates_a_deleted_database(tmp_path):
    """The dashboard opens with create=False: if the file goes away under it, reads fail clearly
    instead of silently creating a new empty database."""
    path = tmp_path / "gone.db"
    Store(f"sqlite:///{path}").close()
    reader = Store(f"sqlite:///{path}", create=False)
    reader._engine.dispose()
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"gone.db{suffix}").unlink(missing_ok=True)
    with pytest.raises(Exception, match="unable to open database file"):
        reader.list_studies()
    assert not path.exists()


# ----------------------------------------------------------------------------------- foreign files
def test_foreign_sqlite_database_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """Another program's database (even one with a `studies` table) is refused without switching it
    to WAL or adding tables: its bytes, header included, are unchanged and no -wal file appears."""
    from store import DatabaseUnavailable
    for name, ddl in (("with_studies.db", "CREATE TABLE studies (x INTEGER)"), ("other.db", "CREATE TABLE t (x)")):
        path = tmp_path / name
        with sqlite3.connect(path) as con:
            con.execute(ddl)
            con.execute("INSERT INTO " + ddl.split()[2] + " VALUES (1)")
        con.close()
        before = path.read_bytes()
        for create in (True, False):
            with pytest.raises((SchemaVersionError, DatabaseUnavailable), match="another program"):
                Store(url_of(path), create=create)
        assert path.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(name)) == [name]
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n")
    with pytest.raises(DatabaseUnavailable, match="is not a SQLite database"):
        Store(url_of(text))
    assert text.read_text() == "not a database\n"


# ----------------------------------------------------------------------------------- heartbeat
def test_heartbeat_stale_display_and_takeover(tmp_path: Path) -> None:
    """A run claims its study and beats; while its beat is fresh another run is refused; once the beat
    is older than 3 intervals (a killed run) the study shows as stale and a new run takes it over; a
    run that ends releases it. Times are given explicitly (`now=`), so nothing waits on the clock."""
    from store import Heartbeat, StudyBusy
    with Store(url_of(tmp_path / "h.db")) as s:
        s.create_study("r", {}, "sig", "random", {}, OBJECTIVES, {"psnr": 20.0})
        assert s.get_study("r").display_status(0.0) == "created"
        s.claim_run("r", "host:1", 10.0, now=1000.0)
        summary = s.list_studies()[0]
        assert summary.status == "running" and summary.run.owner == "host:1"
        assert summary.display_status(1025.0) == "running"
        assert s.beat("r", "host:1", now=1025.0)
        assert s.get_study("r").display_status(1050.0) == "running"       # 25 s after the last beat
        with pytest.raises(StudyBusy, match=r"being run by host:1 \(last heartbeat 25 s ago\)"):
            s.claim_run("r", "host:2", 10.0, now=1050.0)
        assert s.get_study("r").display_status(1056.0) == "stale (last seen 31 s ago)"
        assert s.get_study("r").display_status(1025.0 + 3600) == "stale (last seen 60 min ago)"
        s.claim_run("r", "host:2", 10.0, now=1056.0)                      # takeover of the stale run
        assert not s.beat("r", "host:1", now=1057.0)                      # the old owner lost it
        assert s.get_study("r").run.owner == "host:2"
        s.release_run("r", "host:2")
        assert s.get_study("r").run is None
        assert s.get_study("r").display_status(2000.0) == "stale (no heartbeat)"   # running, nobody beats
        s.set_study_status("r", "interrupted")
        assert s.list_studies()[0].display_status(2000.0) == "interrupted"

        clock = iter(range(5000, 6000, 5)).__next__
        with Heartbeat(s, "r", interval_s=3600.0, owner="host:3", clock=clock) as beat:
            beat.beat()
            assert beat.beats == 1 and not beat.lost and s.get_study("r").run.heartbeat_at == 5005
        assert s.get_study("r").run is None
        s.delete_study("r")


def test_version_1_store_without_run_table_is_upgraded_by_a_writer(tmp_path: Path) -> None:
    """`study_runs` was added without a version bump: a reader of an older version-1 file works
    without it; the first writer adds the table and keeps every row."""
    db = tmp_path / "v1.db"
    with Store(url_of(db)) as s:
        fill_points(s)
    with sqlite3.connect(db) as con:
        con.execute("DROP TABLE study_runs")
    con.close()
    with Store(url_of(db), create=False) as reader:
        assert reader.list_studies()[0].run is None and len(reader.front("p")) == 5
    with Store(url_of(db)) as writer:
        writer.claim_run("p", "host:1", 30.0)
        assert writer.get_study("p").run.owner == "host:1" and len(writer.front("p")) == 5
