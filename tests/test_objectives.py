"""The one objectives module (`schedules.objectives`): the knee is one function, used by the search,
the store, export and the dashboard, and agrees with a brute-force reading of its definition on random
fronts; roles are explicit and a reversed role is refused; the value rule never invents a value; the
third cost figure (`latency_speedup_model`) is a cost everywhere costs are handled, and older stores
gain its column without losing anything."""

from __future__ import annotations

import json
import math
import random
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from schedules import EvaluationResult
from schedules import objectives as obj
from schedules.objectives import COST, COST_NAMES, QUALITY, Objective, ObjectiveError, Objectives
from store import Store, choose
from test_store import make_schedule

# ------------------------------------------------------------------------------------------ the knee


def brute_force_knee(points: list[tuple[float, float]], maximise: tuple[bool, bool]) -> int:
    """The knee as the module docstring defines it, written out the slow, obvious way: pairwise
    dominance for the front, per-point loops for the scaling, the chord and the distances."""
    def at_least_as_good(a: float, b: float, up: bool) -> bool:
        return a >= b if up else a <= b

    def dominates(p, q) -> bool:
        return all(at_least_as_good(p[k], q[k], maximise[k]) for k in range(2)) and p != q

    front = [i for i, p in enumerate(points) if not any(dominates(q, p) for q in points)]
    scaled = {}
    for i in front:
        z = []
        for k in range(2):
            column = [points[j][k] for j in front]
            best, worst = (max(column), min(column)) if maximise[k] else (min(column), max(column))
            z.append(0.0 if best == worst else (best - points[i][k]) / (best - worst))
        scaled[i] = z
    best_quality = min(front, key=lambda i: (scaled[i][0], scaled[i][1]))
    fastest = min(front, key=lambda i: (scaled[i][1], scaled[i][0]))
    (ax, ay), (bx, by) = scaled[best_quality], scaled[fastest]
    length = math.hypot(bx - ax, by - ay)
    if length > 0 and len(front) > 2:
        def signed(x: float, y: float) -> float:
            return ((bx - ax) * (y - ay) - (by - ay) * (x - ax)) / length
        side = 1.0 if signed(0.0, 0.0) > 0 else -1.0
        toward = {i: side * signed(*scaled[i]) for i in front}
        best = max(front, key=lambda i: (toward[i], -scaled[i][0]))
        if toward[best] > 1e-12:
            return best
    return min(front, key=lambda i: (math.hypot(*scaled[i]), scaled[i][0]))     # ties: the better quality


def random_fronts(n: int, seed: int = 7) -> list[tuple[list[tuple[float, float]], tuple[bool, bool]]]:
    """Random point clouds (dominated points included), quality maximised or minimised."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randint(3, 12)
        up = rng.random() < 0.7
        pts = [(rng.uniform(10, 40) if up else rng.uniform(0.001, 0.1), rng.uniform(1.0, 5.0)) for _ in range(k)]
        out.append((pts, (up, True)))
    return out


def test_knee_agrees_with_the_brute_force_definition_on_random_fronts() -> None:
    """300 random clouds: the module's knee (on the front it computes itself) is the brute-force one."""
    for pts, maximise in random_fronts(300):
        objectives = Objectives([Objective("psnr" if maximise[0] else "latent_mse", maximise[0], reference=0.0),
                                 Objective("mac_speedup")])
        expected = brute_force_knee(pts, maximise)
        assert objectives.knee(pts) == expected
        assert objectives.pick(pts, "knee") == expected          # what the DP refines along
        front = np.flatnonzero(obj.nondominated(np.array(pts), maximise))
        assert front[obj.knee_index(np.array(pts)[front], maximise)] == expected


def test_knee_on_a_hand_checked_convex_front() -> None:
    """psnr 40/39/37/30/20 at 1/2/3/4/5x: scaled (quality loss, speed loss) A (0,1) B (.05,.75)
    C (.15,.5) D (.5,.25) E (1,0); the chord is x + y = 1, so 1 - x - y is B .20, C .35, D .25: C."""
    pts = [(40.0, 1.0), (39.0, 2.0), (37.0, 3.0), (30.0, 4.0), (20.0, 5.0)]
    assert obj.knee_index(np.array(pts), (True, True)) == 2 == brute_force_knee(pts, (True, True))
    assert obj.knee_index(np.array(pts[:2]), (True, True)) == 0              # two members tie: the better quality


def _fill_random_studies(url: str, clouds) -> list[str]:
    names = []
    with Store(url) as store:
        for n, (pts, maximise) in enumerate(clouds):
            quality = "psnr" if maximise[0] else "latent_mse"
            name = f"r{n}"
            store.create_study(name, {}, "sig", "random", {},
                               [Objective(quality, maximise[0], reference=0.0 if maximise[0] else 1.0),
                                Objective("latency_speedup_model")])
            store.record_evaluations(name, [EvaluationResult(
                make_schedule(i), "done", metrics={quality: q}, latency_speedup_model=c, mac_speedup=1.0)
                for i, (q, c) in enumerate(pts)])
            names.append(name)
    return names


def test_search_store_export_and_dashboard_use_the_one_knee(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On 40 random studies the store's knee, `export --pick knee`'s choice and the dashboard's knee are
    the brute-force knee; and each of them, like the DP's refinement pick, calls
    `schedules.objectives.knee_index` (spied on): one function, no second definition anywhere."""
    from dashboard import data
    from dashboard.frames import knee_id
    clouds = random_fronts(40, seed=11)
    url = f"sqlite:///{tmp_path / 'knees.db'}"
    names = _fill_random_studies(url, clouds)
    calls: list[str] = []
    real = obj.knee_index

    def spy(points, maximise):
        calls.append("knee_index")
        return real(points, maximise)
    monkeypatch.setattr(obj, "knee_index", spy)

    def used(work):
        calls.clear()
        value = work()
        assert calls, "did not go through schedules.objectives.knee_index"
        return value

    with Store(url, create=False) as store:
        for name, (pts, maximise) in zip(names, clouds):
            expected = pts[brute_force_knee(pts, maximise)]
            info = store.get_study(name)
            quality = info.quality

            def figures(record):
                return (record.objective(quality), record.objective("latency_speedup_model"))
            assert figures(used(lambda: store.knee(name))) == expected
            assert figures(used(lambda: choose(store, name, "knee"))) == expected
            table = data.load_evaluations(store, name)
            kid = used(lambda: knee_id(table, info, quality, "latency_speedup_model"))
            assert figures(store.evaluation(kid)) == expected
    objectives = Objectives([Objective("quality", reference=0.0), Objective("mac_speedup")])
    used(lambda: objectives.pick([(3.0, 1.0), (2.5, 2.0), (1.0, 3.0)], "knee"))   # the DP's refine pick


def test_the_dp_refines_along_the_knee(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A DP study with a refinement round picks its next profile target through the one knee."""
    from search.config import validate_config
    from search.study import run_study
    from search.synthetic import SyntheticPool
    calls = []
    real = obj.knee_index
    monkeypatch.setattr(obj, "knee_index", lambda p, m: calls.append(len(p)) or real(p, m))
    cfg = validate_config({"study": "dp-knee", "synthetic": {"num_blocks": 3, "num_steps": 6},
                           "searcher": {"name": "dp", "settings": {"candidates": 6, "refine_rounds": 1,
                                                                   "max_heuristics": 4}},
                           "budget": {"evaluations": 20}})
    run_study(cfg, db=str(tmp_path / "dp.db"), show_progress=False, pool=SyntheticPool(num_blocks=3, num_steps=6),
              log=lambda m: None)
    assert calls, "the DP's refinement never asked for the knee"


# ------------------------------------------------------------------------------------------ roles
def test_roles_follow_names_and_a_reversed_role_is_refused() -> None:
    assert Objective("psnr").role == QUALITY and Objective("latency_speedup_model").role == COST
    assert Objective("mac_speedup").reference == 1.0 and Objective("mac_speedup").unit == "x"
    with pytest.raises(ObjectiveError, match="'mac_speedup' is a cost .* listed with role quality"):
        Objective("mac_speedup", role=QUALITY)
    with pytest.raises(ObjectiveError, match="'psnr' is listed with role cost"):
        Objective("psnr", role=COST)
    with pytest.raises(ObjectiveError, match="larger is better"):
        Objective("latency_speedup", maximize=False)
    with pytest.raises(ObjectiveError, match="list a cost objective"):
        Objectives([Objective("psnr", reference=15.0), Objective("ssim", reference=0.5)])
    both = Objectives([Objective("mac_speedup"), Objective("psnr", reference=15.0)])   # cost listed first
    assert (both.quality.name, both.cost.name) == ("psnr", "mac_speedup")
    import pickle                                    # Streamlit's caches and Ray pickle them; an older
    legacy = Objectives([Objective("psnr")], require_roles=False)     # store's may lack a role: kept as is
    assert pickle.loads(pickle.dumps(legacy)) == legacy and pickle.loads(pickle.dumps(both)) == both


def test_config_rejects_reversed_roles_naming_both() -> None:
    from search.config import ConfigError, validate_config
    doc = {"synthetic": {}, "searcher": {"name": "random"},
           "objectives": [{"name": "mac_speedup", "role": "quality", "reference": 1},
                          {"name": "quality", "role": "cost", "reference": 0}]}
    with pytest.raises(ConfigError) as err:
        validate_config(doc)
    text = str(err.value)
    assert "objectives[0]: objective 'mac_speedup' is a cost" in text and "role quality" in text
    assert "objectives[1]: objective 'quality' is listed with role cost" in text
    with pytest.raises(ConfigError, match="objectives: quality listed more than once"):
        validate_config({**doc, "objectives": [{"name": "quality", "reference": 0},
                                                {"name": "quality", "reference": 1}]})
    with pytest.raises(ConfigError, match="objectives: list a cost objective"):
        validate_config({"searcher": {"name": "random"}, "evaluation": {"metrics": ["psnr", "ssim"]},
                         "objectives": [{"name": "psnr", "reference": 15}, {"name": "ssim", "reference": 0.5}]})
    with pytest.raises(ConfigError, match="objectives\\[0\\].reference: the quality objective 'quality' needs"):
        validate_config({**doc, "objectives": [{"name": "quality"}, {"name": "mac_speedup"}]})


def test_a_study_listing_the_cost_first_still_treats_psnr_as_its_quality(tmp_path: Path) -> None:
    """`[mac_speedup, quality]` used to make the DP, the loop and the CLI treat the speedup as the
    quality (by list position): now every part asks for the role."""
    from typer.testing import CliRunner

    from search.cli import app
    import yaml
    cfg = tmp_path / "swapped.yaml"
    cfg.write_text(yaml.safe_dump({
        "study": "swapped", "synthetic": {"num_blocks": 3, "num_steps": 6},
        "objectives": [{"name": "mac_speedup"}, {"name": "quality", "reference": 0}],
        "searcher": {"name": "dp", "settings": {"candidates": 6, "max_heuristics": 4, "refine_rounds": 1}},
        "budget": {"evaluations": 16}}))
    db = str(tmp_path / "s.db")
    run = CliRunner().invoke(app, ["search", str(cfg), "--db", db, "-q"])
    assert run.exit_code == 0, run.output
    with Store(f"sqlite:///{db}", create=False) as store:
        info = store.get_study("swapped")
        assert (info.quality, info.cost) == ("quality", "mac_speedup")
        front = store.front("swapped")
    assert front and all(r.objective("quality") is not None for r in front)
    shown = json.loads(CliRunner().invoke(app, ["front", "swapped", "--db", db, "--json"]).output)
    assert shown["quality"] == "quality" and shown["cost"] == "mac_speedup"


def test_store_refuses_a_new_study_without_a_cost_and_compares_roles_on_resume(tmp_path: Path) -> None:
    from store import StudyExists
    with Store(f"sqlite:///{tmp_path / 'r.db'}") as store:
        with pytest.raises(ObjectiveError, match="list a cost objective"):
            store.create_study("q-only", {}, "sig", "random", {}, [Objective("psnr", reference=10.0)])
        store.create_study("s", {}, "sig", "random", {}, [Objective("psnr", reference=10.0), Objective("mac_speedup")])
        with pytest.raises(StudyExists, match="objectives: stored \\[psnr \\(quality, max, ref 10.0\\)"):
            store.create_study("s", {}, "sig", "random", {}, [Objective("psnr", reference=12.0),
                                                              Objective("mac_speedup")], exist_ok=True)
        again = store.create_study("s", {}, "sig", "random", {},
                                   [Objective("psnr", reference=10.0, unit="dB"), Objective("mac_speedup")],
                                   exist_ok=True)   # a unit is display only: the same study
        assert again.objectives.quality.name == "psnr"


# ------------------------------------------------------------------------------------------ the value rule
def test_value_rule_never_invents_a_value() -> None:
    r = EvaluationResult(make_schedule(1), "done", metrics={"psnr": math.inf, "ssim": float("nan"), "adherence": 0.7},
                         mac_speedup=2.0)
    assert r.objective("psnr") is None and r.objective("ssim") is None and r.objective("judge_fd") is None
    assert r.objective("adherence") == 0.7 and r.objective("mac_speedup") == 2.0
    assert r.objective("latency_speedup_model") is None and r.latency_speedup_model is None
    both = Objectives([Objective("adherence", reference=0.0), Objective("latency_speedup_model")])
    assert both.values(r) is None                      # lacking one figure: not on any front
    assert "latency_speedup_model" in r.summary()


# ------------------------------------------------------------------------------------------ the third cost
def _modelled(i: int, q: float, mac: float, model: float | None) -> EvaluationResult:
    return EvaluationResult(make_schedule(i), "done", metrics={"psnr": q}, mac_speedup=mac, latency_speedup=None,
                            latency_speedup_model=model, prompt_set_hash="ps")


def test_latency_speedup_model_is_a_cost_everywhere(tmp_path: Path) -> None:
    """Stored and read back (None stays None), a front and a hypervolume by it, export picks on it,
    the CLI's `front --cost` and `export --cost`, and the exported file's metrics."""
    from typer.testing import CliRunner

    from search.cli import app
    from store import export_pick
    db = tmp_path / "m.db"
    url = f"sqlite:///{db}"
    with Store(url) as store:
        store.create_study("lm", {}, "sig", "random", {}, [Objective("psnr", reference=20.0), Objective("mac_speedup")])
        ids = store.record_evaluations("lm", [_modelled(0, 35.0, 1.5, 1.2), _modelled(1, 30.0, 3.0, 2.5),
                                              _modelled(2, 28.0, 4.0, 1.1), _modelled(3, 40.0, 2.0, None)])
        assert [r.latency_speedup_model for r in store.evaluations("lm")] == [1.2, 2.5, 1.1, None]
        by_model = store.front("lm", cost="latency_speedup_model")
        assert [r.id for r in by_model] == [ids[0], ids[1]]             # #3 has no modelled figure: left out
        assert [r.id for r in store.front("lm")] == [ids[3], ids[1], ids[2]]
        assert store.hypervolume("lm", cost="latency_speedup_model") == pytest.approx(
            (1.2 - 1.0) * (35 - 20) + (2.5 - 1.2) * (30 - 20))
        assert choose(store, "lm", "fastest-with psnr>=29", cost="latency_speedup_model").id == ids[1]
        assert choose(store, "lm", "best-with latency_speedup_model>=1.15").id == ids[0]   # a bound on it
        assert choose(store, "lm", "best-with speedup>=1.15", cost="latency_speedup_model").id == ids[0]
        path = export_pick(store, "lm", "fastest-with psnr>=29", tmp_path / "m.json", cost="latency_speedup_model")
    doc = json.loads(path.read_text())
    assert doc["metrics"]["latency_speedup_model"] == 2.5 and "latency_speedup" not in doc["metrics"]
    assert doc["provenance"]["objectives"] == {"quality": "psnr", "cost": "latency_speedup_model"}
    runner = CliRunner()
    shown = json.loads(runner.invoke(app, ["front", "lm", "--db", str(db), "--cost", "latency_speedup_model",
                                           "--json"]).output)
    assert [m["id"] for m in shown["members"]] == [ids[1], ids[0]]       # fastest first
    assert shown["members"][0]["latency_speedup_model"] == 2.5 and shown["hypervolume"] == pytest.approx(16.0)
    out = runner.invoke(app, ["export", "lm", "--pick", "fastest-with psnr>=29", "--cost", "latency_speedup_model",
                              "-o", str(tmp_path / "cli.json"), "--db", str(db), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["written"][0]["id"] == ids[1]
    assert set(COST_NAMES) == {"mac_speedup", "latency_speedup", "latency_speedup_model"}


def _drop_added_columns(db: Path) -> None:
    """Make `db` look like a version-1 store written before the added columns."""
    with sqlite3.connect(db) as con:
        con.execute("ALTER TABLE evaluations DROP COLUMN latency_speedup_model")
        con.execute("ALTER TABLE evaluations DROP COLUMN kind")


def test_an_older_store_gains_the_added_columns_and_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    url = f"sqlite:///{db}"
    with Store(url) as store:
        store.create_study("old", {}, "sig", "random", {},
                           [Objective("psnr", reference=20.0), Objective("mac_speedup")])
        store.record_evaluations("old", [_modelled(0, 35.0, 1.5, 1.2), _modelled(1, 30.0, 3.0, 2.5)])
    _drop_added_columns(db)
    with Store(url, create=False) as reader:                 # read-only: nothing is added, values read as None
        records = reader.evaluations("old")
        assert [r.latency_speedup_model for r in records] == [None, None]
        assert [r.kind for r in records] == ["search", "search"] and len(reader.front("old")) == 2
        assert reader.front("old", cost="latency_speedup_model") == []
        assert reader.list_studies()[0].n_done == 2
    with sqlite3.connect(db) as con:
        assert "latency_speedup_model" not in {r[1] for r in con.execute("PRAGMA table_info(evaluations)")}
    with Store(url) as writer:                               # a writer adds the columns, rows intact
        assert [(r.metrics["psnr"], r.mac_speedup) for r in writer.evaluations("old")] == [(35.0, 1.5), (30.0, 3.0)]
        writer.record_evaluation("old", _modelled(2, 28.0, 4.0, 3.5))
        assert [r.latency_speedup_model for r in writer.evaluations("old")] == [None, None, 3.5]
        assert [r.kind for r in writer.evaluations("old")] == ["search"] * 3


def test_results_of_other_kinds_stay_out_of_fronts_counts_and_resume(tmp_path: Path) -> None:
    """Design room for baselines and held-out validation: stored beside the study, never in it."""
    from store import BASELINE, StoreError
    with Store(f"sqlite:///{tmp_path / 'k.db'}") as store:
        store.create_study("k", {}, "sig", "random", {}, [Objective("psnr", reference=20.0), Objective("mac_speedup")])
        own = store.record_evaluation("k", _modelled(0, 30.0, 2.0, None))
        peer = store.record_evaluation("k", _modelled(1, 45.0, 5.0, None), kind=BASELINE)
        assert [r.id for r in store.front("k")] == [own] and store.knee("k").id == own
        assert store.hypervolume("k") == pytest.approx(10.0)
        assert {r.id: r.kind for r in store.evaluations("k")} == {own: "search", peer: "baseline"}
        assert [r.id for r in store.evaluations("k", kind=BASELINE)] == [peer]
        assert store.list_studies()[0].n_evaluations == 1
        assert store.finished_hashes("k") == {make_schedule(0).hash}
        assert [r.schedule.hash for r in store.results("k")] == [make_schedule(0).hash]
        with pytest.raises(StoreError, match="unknown result kind 'peer'"):
            store.record_evaluation("k", _modelled(2, 1.0, 1.0, None), kind="peer")
