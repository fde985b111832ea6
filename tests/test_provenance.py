"""Who found a schedule, on every stored result and everywhere it is shown: ECAD's heuristic seeds
stay heuristics (not "ecad generation 0"), bred children name their parents and operators, Bayes'
warm start names its heuristics, seeds name where they came from; `front`, exported files and the
dashboard's table say the same thing (`schedules.provenance`)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from schedules import load_schedule
from schedules.provenance import HEURISTIC, IMPORTED, SEARCH, SEED, describe, heuristic_name, origin
from search.cli import app
from search.config import validate_config
from search.study import run_study
from search.synthetic import SyntheticPool
from store import Store


def test_origin_and_one_line_description() -> None:
    fora = {"searcher": "ecad", "generation": 0, "heuristic": "fora", "heuristic_params": {"interval": 2}}
    assert origin(fora) == HEURISTIC and heuristic_name(fora) == "fora(interval=2)"
    assert describe(fora) == "fora(interval=2) (as ecad generation 0)"
    child = {"searcher": "ecad", "generation": 3, "parents": ["3fa9c0d1" + "0" * 56, "77ab12cd" + "0" * 56],
             "operators": ["crossover", "mutation"]}
    assert origin(child) == SEARCH
    assert describe(child) == "ecad generation 3: crossover, mutation of 3fa9c0d1 x 77ab12cd"
    assert describe({"searcher": "dp", "round": 1, "granularity": "step+forecast"}) == "dp round 1, step+forecast"
    assert origin({"searcher": "ecad", "seed_from": "study dp-x"}) == SEED
    assert origin({"searcher": "dp", "imported_from": "dp-x", "round": 0}) == IMPORTED
    assert describe({}) == "unknown" and origin(None) == "unknown"


def _study(tmp_path, name: str, searcher: dict, n: int, **extra) -> str:
    db = str(tmp_path / "p.db")
    cfg = validate_config({"study": name, "synthetic": {"num_blocks": 3, "num_steps": 6}, "searcher": searcher,
                           "budget": {"evaluations": n}, **extra})
    run_study(cfg, db=db, show_progress=False, pool=SyntheticPool(num_blocks=3, num_steps=6), log=lambda m: None)
    return db


def test_ecad_keeps_heuristic_seeds_and_names_parents(tmp_path) -> None:
    db = _study(tmp_path, "e", {"name": "ecad", "settings": {"population": 8, "max_seeds": 8}}, 40)
    with Store(f"sqlite:///{db}", create=False) as store:
        records = store.evaluations("e")
    evaluated = {r.schedule_hash for r in records}
    seeds = [r for r in records if r.provenance.get("generation") == 0]
    assert seeds and all(origin(r.provenance) == HEURISTIC for r in seeds[:8])      # the 8 seats: heuristics
    assert any(describe(r.provenance).startswith("fora(interval=2) (as ecad generation 0)") for r in seeds)
    bred = [r for r in records if (r.provenance.get("generation") or 0) >= 1]
    assert bred, "no offspring in 40 evaluations"
    for r in bred:
        prov = r.provenance
        assert origin(prov) == SEARCH and prov["operators"] and 1 <= len(prov["parents"]) <= 2
        assert set(prov["parents"]) <= evaluated, "parents are schedules this study evaluated"
    assert any("crossover" in r.provenance["operators"] for r in bred)


def test_bayes_warm_start_names_its_heuristics(tmp_path) -> None:
    db = _study(tmp_path, "b", {"name": "bayes", "settings": {"n_startup_trials": 4}}, 12)
    with Store(f"sqlite:///{db}", create=False) as store:
        records = store.evaluations("b")
    named = [heuristic_name(r.provenance) for r in records if origin(r.provenance) == HEURISTIC]
    assert "fora(interval=2)" in named and all(r.provenance.get("trial") is not None for r in records)


def test_seeds_say_where_they_came_from(tmp_path) -> None:
    db = _study(tmp_path, "dp-src", {"name": "dp", "settings": {"candidates": 6, "max_heuristics": 4}}, 16)
    _study(tmp_path, "seeded", {"name": "ecad", "settings": {"population": 8, "include_heuristics": False}}, 12,
           seed_studies=["dp-src"])
    with Store(f"sqlite:///{db}", create=False) as store:
        records = store.evaluations("seeded")
    kinds = {origin(r.provenance) for r in records}
    assert IMPORTED in kinds                                         # the DP front, copied with its results
    imported = [r for r in records if origin(r.provenance) == IMPORTED]
    assert all(describe(r.provenance).endswith("imported from study dp-src") for r in imported)


def test_provenance_round_trips_to_the_exported_file_and_the_front(tmp_path) -> None:
    """Every key of a result's stored provenance is in its exported file, with `origin` and `found_by`;
    through `export --all-front` (the CLI) and the dashboard's download path, for a heuristic seed and
    a bred child alike; `front` shows the same one-line description."""
    from store.export import annotated_schedule, write_schedule
    db = _study(tmp_path, "e", {"name": "ecad", "settings": {"population": 8}}, 40)
    out = CliRunner().invoke(app, ["export", "e", "--all-front", str(tmp_path / "front"), "--db", db])
    assert out.exit_code == 0, out.output
    with Store(f"sqlite:///{db}", create=False) as store:
        by_id = {r.id: r for r in store.evaluations("e")}
        fora = next(r for r in by_id.values() if heuristic_name(r.provenance) == "fora(interval=2)")
        child = next(r for r in by_id.values() if r.provenance.get("parents"))
        info = store.get_study("e")
        downloads = [write_schedule(annotated_schedule(store, info, r), tmp_path / f"dl{r.id}.json")
                     for r in (fora, child)]
    files = sorted((tmp_path / "front").glob("*.json")) + downloads
    assert len(files) >= 3
    for path in files:
        prov = load_schedule(path).provenance
        stored = by_id[prov["evaluation_id"]].provenance
        assert {k: prov[k] for k in stored} == stored, path.name
        assert prov["origin"] == origin(stored) and prov["found_by"] == describe(stored)
    assert load_schedule(downloads[0]).provenance["found_by"] == "fora(interval=2) (as ecad generation 0)"
    assert load_schedule(downloads[1]).provenance["parents"] == child.provenance["parents"]
    shown = json.loads(CliRunner().invoke(app, ["front", "e", "--db", db, "--json"]).output)
    table = CliRunner().invoke(app, ["front", "e", "--db", db]).output
    for m in shown["members"]:
        assert m["found_by"] == describe(by_id[m["id"]].provenance) and m["found_by"] in table
