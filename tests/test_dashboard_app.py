"""Every dashboard page through Streamlit's `AppTest`, against real SQLite stores filled through the
Store API: the pages render their content, choices carry across pages, and an empty, missing,
foreign-version or concurrently written database shows a message or live data, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from store import Store
from test_dashboard_data import PROMPTS, fill_store, set_schema_version

import dashboard
from dashboard import data

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> str:
    return fill_store(tmp_path_factory.mktemp("dash_app") / "results.db")


def app(url: str, page: str, monkeypatch: pytest.MonkeyPatch, **params: str) -> AppTest:
    """A fresh session of the app on `page`, run once (the URL's query parameters pick the page)."""
    monkeypatch.setenv(dashboard.DB_ENV, url)
    data.clear()
    at = AppTest.from_file(str(dashboard.app_path()), default_timeout=120)
    at.query_params["page"] = page
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def plotly_specs(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def texts(at: AppTest, kind: str) -> str:
    return "\n".join(str(e.value) for e in getattr(at, kind))


# ------------------------------------------------------------------------------------------ pages
def test_studies_page(filled: str, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app(filled, "studies", monkeypatch)
    assert at.header[0].value == "Studies" and not at.error
    frame = at.dataframe[0].value
    assert list(frame["study"]) == ["tiny-ecad", "tiny-random", "tiny-flux-dp"]
    assert list(frame["status"]) == ["running", "finished", "finished"]
    assert frame.loc[0, "evaluations"] == 40 and frame.loc[0, "pending"] == 1
    at.number_input(key="bar_threshold").set_value(1e6).run()      # an unreachable bar: nothing qualifies
    assert at.dataframe[0].value["best mac_speedup at psnr bar"].isna().all()
    assert at.toggle(key="live").value is True                      # a study is running: live by default


def test_studies_page_shows_a_killed_run_as_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A study whose run was killed (status running, heartbeat long silent) is "stale (last seen ...)",
    not running, and does not switch live refresh on."""
    url = fill_store(tmp_path / "stale.db")
    with Store(url) as s:
        s.release_run("tiny-ecad", "fixture-run")
        s.claim_run("tiny-ecad", "killed-host:1", interval_s=30.0, now=time.time() - 3600)
    at = app(url, "studies", monkeypatch)
    assert at.dataframe[0].value.loc[0, "status"] == "stale (last seen 60 min ago)"
    assert "0 running · 1 stale" in texts(at, "caption")
    assert at.toggle(key="live").value is False


def test_frontier_page_overlays_a_study_that_has_just_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second search of the same model has started beside this one (another driver on a shared
    database) and has nothing finished yet: it is overlaid, empty, and the page still draws."""
    url = fill_store(tmp_path / "new.db")
    with Store(url) as s:
        ecad = s.get_study("tiny-ecad")
        s.create_study("tiny-new", {}, ecad.model_signature, "random", {}, list(ecad.objectives),
                       ecad.reference_point)
        s.mark_queued("tiny-new", [s.schedule(s.front("tiny-ecad")[0].schedule_hash)])
    at = app(url, "frontier", monkeypatch, study="tiny-ecad")
    assert not at.error, texts(at, "error")
    assert "tiny-new" in at.multiselect(key="compare").value
    names = [t["name"] for t in plotly_specs(at)[0]["data"]]
    assert any(n.startswith("tiny-new (random) · all (0)") for n in names), names


def test_frontier_page_overlays_studies_and_selects(filled: str, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app(filled, "frontier", monkeypatch, study="tiny-ecad")
    assert at.header[0].value == "Frontier" and not at.error
    assert at.multiselect(key="compare").value == ["tiny-ecad", "tiny-random"]   # same model overlaid
    spec = plotly_specs(at)[0]
    names = [t["name"] for t in spec["data"]]
    assert names[0].startswith("tiny-ecad (ecad) · all (39)") and "tiny-random (random) · front" in names[3]
    assert spec["layout"]["xaxis"]["title"]["text"] == "MAC speedup (x)"
    front_ids = [c[0] for c in spec["data"][1]["customdata"]]
    picker = at.selectbox[0]
    target = next(int(o.split(" ")[0].lstrip("#")) for o in picker.options if not o.startswith(f"#{picker.value} "))
    picker.select(target).run()
    chosen = int(str(at.session_state["eval_id"]))
    assert chosen == target and chosen in front_ids
    assert plotly_specs(at)[0]["data"][-1]["name"] == f"selected #{chosen}"   # the ring follows
    at.button(key="goto_frontier_Schedule").click().run()
    assert at.header[0].value == "Schedule" and int(str(at.session_state["eval_id"])) == chosen
    at.radio(key="cost").set_value("latency_speedup").run()
    assert not at.exception


def test_schedule_page_heatmap_diff_and_per_prompt(filled: str, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app(filled, "schedule", monkeypatch, study="tiny-flux-dp")
    assert at.header[0].value == "Schedule" and not at.error
    specs = plotly_specs(at)
    heatmaps = [t for t in specs[0]["data"] if t["type"] == "heatmap"]
    assert [t["name"] for t in heatmaps] == ["transformer_blocks.attn", "transformer_blocks.ff",
                                             "transformer_blocks.ff_context", "single_transformer_blocks.attn",
                                             "single_transformer_blocks.proj_mlp", "single_transformer_blocks.proj_out"]
    assert len(specs) == 3                             # plan, fractions, per-prompt metric
    at.selectbox(key="diff_with").select("all-compute (the reference)").run()
    assert "cells differ" in texts(at, "markdown")
    assert any(t.get("name") == "only the other computes" for t in plotly_specs(at)[2]["data"])
    at.selectbox(key="per_prompt_metric").select("ssim").run()
    assert at.dataframe[-1].value.shape == (len(PROMPTS) * 2, 2)


def test_schedule_page_shows_the_timesteps_a_schedule_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import random

    from store import Objective
    from test_dashboard_data import model_specs, result_for, timestep_schedule
    url = f"sqlite:///{tmp_path / 'joint.db'}"
    pixart, _ = model_specs()
    with Store(url) as store:
        store.create_study("joint", {"seeds": [0]}, "tiny", "dp", {},
                           [Objective("psnr"), Objective("mac_speedup")], {"psnr": 15.0, "mac_speedup": 1.0})
        store.record_evaluations("joint", [result_for(timestep_schedule(pixart), random.Random(0))], step=0)
    at = app(url, "schedule", monkeypatch, study="joint")
    assert "5 steps at explicit timesteps (the study runs 8)" in texts(at, "caption")
    strip, plan = plotly_specs(at)[:2]
    assert strip["data"][0]["x"] == [999.0, 799.0, 599.0, 399.0, 199.0]
    heatmap = next(t for t in plan["data"] if t["type"] == "heatmap")
    z = heatmap["z"]                                   # plotly may send arrays as typed buffers
    rows = int(z["shape"].split(",")[0]) if isinstance(z, dict) else len(z)
    assert rows == 5 and plan["layout"]["yaxis"]["ticktext"][1] == "1 · t=799"
    at.selectbox(key="diff_with").select("all-compute (the reference)").run()
    assert "cells differ" in texts(at, "markdown")


def test_images_page_shows_reference_and_scheduled(filled: str, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app(filled, "images", monkeypatch, study="tiny-ecad", eval="2")
    assert at.header[0].value == "Images" and not at.error
    assert "reference (all compute)" in texts(at, "markdown")
    assert PROMPTS[0] in texts(at, "markdown")        # captions come from the study config
    assert len(at.get("image")) == 3 * len(PROMPTS)    # reference, scheduled, difference per prompt
    at.text_input(key="jump_images").input("30").run()   # an evaluation without thumbnails
    assert "has no stored images" in texts(at, "info")


def test_progress_page(filled: str, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app(filled, "progress", monkeypatch, study="tiny-random")
    assert at.header[0].value == "Progress" and not at.error
    lines = plotly_specs(at)[0]["data"]
    assert [t["name"] for t in lines] == ["tiny-ecad (ecad)", "tiny-random (random)"]
    assert len(lines[1]["x"]) == 25 and lines[1]["y"][-1] > 0
    at.selectbox(key="progress_model").select_index(0).run()
    assert not at.exception
    at.radio(key="progress_axis").set_value("images generated").run()
    spec = plotly_specs(at)[0]
    assert spec["layout"]["xaxis"]["title"]["text"] == "images generated" and not at.exception
    # the fixture's results recorded no image counts: said, not drawn as zeros
    assert any("recorded no image count" in w.value for w in at.warning)


def test_export_page_json_and_cache_dit_reason(filled: str, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app(filled, "export", monkeypatch, study="tiny-ecad")
    assert at.header[0].value == "Export" and not at.error
    chosen = int(str(at.session_state["eval_id"]))
    with Store(filled, create=False) as store:
        record = store.evaluation(chosen)
    doc = json.loads(at.code[0].value)
    assert doc["plan"] and doc["provenance"]["evaluation_id"] == chosen
    assert at.get("download_button")[0].proto.label.endswith(".json")
    assert record.status == "done"
    at.text_input[0].input("fastest-with psnr>=1000")
    at.button[0].click().run()
    assert "no done evaluation of study 'tiny-ecad' has psnr >= 1000" in texts(at, "warning")
    at.text_input[0].input("best-with speedup>=2")
    at.button[0].click().run()
    with Store(filled, create=False) as store:
        from store import choose
        assert int(str(at.session_state["eval_id"])) == choose(store, "tiny-ecad", "best-with speedup>=2").id


def test_export_cache_dit_download_for_fitting_plan(filled: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_dashboard_data import dbcache, model_specs
    with Store(filled, create=False) as store:
        fits = dbcache(model_specs()[0], 2).hash
        eid = next(r.id for r in store.evaluations("tiny-ecad", per_prompt=False) if r.schedule_hash == fits)
    at = app(filled, "export", monkeypatch, study="tiny-ecad", eval=str(eid))
    labels = [b.proto.label for b in at.get("download_button")]
    assert any(lbl.endswith(".yaml") for lbl in labels) and "steps_computation_mask" in at.code[1].value


# ------------------------------------------------------------------------------------------ bad databases
@pytest.mark.parametrize("page", ["studies", "frontier", "schedule", "images", "progress", "export"])
def test_empty_database_says_so(tmp_path: Path, page: str, monkeypatch: pytest.MonkeyPatch) -> None:
    Store(f"sqlite:///{tmp_path / 'empty.db'}").close()
    at = app(f"sqlite:///{tmp_path / 'empty.db'}", page, monkeypatch)
    assert "holds no studies yet" in texts(at, "info") and not at.error


def test_missing_database_says_so_and_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app(f"sqlite:///{tmp_path / 'absent.db'}", "frontier", monkeypatch)
    assert "No database" in texts(at, "error") and "cachesearch search" in texts(at, "info")
    assert not (tmp_path / "absent.db").exists()


def test_other_schema_version_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Store(f"sqlite:///{tmp_path / 'old.db'}").close()
    set_schema_version(tmp_path / "old.db", "7")
    at = app(f"sqlite:///{tmp_path / 'old.db'}", "studies", monkeypatch)
    error = texts(at, "error")
    assert "another cachesearch version" in error and "schema version 7" in error


def test_not_a_store_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "notes.db").write_bytes(b"")
    at = app(f"sqlite:///{tmp_path / 'notes.db'}", "studies", monkeypatch)
    assert "Not a cachesearch database" in texts(at, "error")


_WRITER = """
import random, sys, time
sys.path[:0] = [{tests!r}, {root!r}]
from test_dashboard_data import model_specs, random_plan, result_for
from store import Store
spec = model_specs()[0]
rng = random.Random(1)
with Store({url!r}) as store:
    print("ready", flush=True)
    for i in range({n}):
        store.record_evaluation("tiny-ecad", result_for(random_plan(spec, rng, rng.uniform(0.1, 0.9)), rng), step=100 + i)
        time.sleep(0.02)
"""


@pytest.mark.e2e   # a real search writing the database while the app reads it (~20 s): the e2e step
def test_database_being_written_shows_live_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = fill_store(tmp_path / "live.db")
    writer = subprocess.Popen([sys.executable, "-c", _WRITER.format(
        tests=str(ROOT / "tests"), root=str(ROOT), url=url, n=150)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        seen = []
        for page in ["studies", "frontier", "progress", "studies", "frontier", "schedule"] * 3:
            at = app(url, page, monkeypatch, study="tiny-ecad")        # asserts no exception
            assert not at.error, texts(at, "error")
            if page == "studies":
                seen.append(int(at.dataframe[0].value.loc[0, "evaluations"]))
            if writer.poll() is not None:
                break
            time.sleep(0.2)
    finally:
        writer.wait(timeout=120)
    assert writer.returncode == 0
    at = app(url, "studies", monkeypatch)
    seen.append(int(at.dataframe[0].value.loc[0, "evaluations"]))
    assert seen == sorted(seen) and seen[-1] == 40 + 150 and len(set(seen)) > 1


# ------------------------------------------------------------------------------------------ issue 14
def test_evaluations_page_filters_downloads_and_a_row_opens_the_schedule(filled: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    at = app(filled, "evaluations", monkeypatch, study="tiny-ecad")
    assert at.header[0].value == "Evaluations" and not at.error
    frame = at.dataframe[0].value
    assert len(frame) == 41 and {"id", "status", "found", "found by", "psnr (dB)", "MAC speedup (x)",
                                 "modelled latency speedup (x)", "computed", "error", "hash"} <= set(frame.columns)
    assert sorted(frame["status"].unique()) == ["done", "failed", "queued"]
    assert "fora(interval=2)" in set(frame["found by"]) and "ecad generation 1" in set(frame["found by"])
    at.multiselect(key="ev_status").set_value(["failed"]).run()
    failed = at.dataframe[0].value
    assert len(failed) == 1 and failed.loc[0, "error"] == "worker died (test)"
    at.multiselect(key="ev_status").set_value([]).run()
    at.multiselect(key="ev_found").set_value(["heuristic"]).run()
    assert len(at.dataframe[0].value) == 3
    at.text_input(key="ev_text").input("interval=3").run()
    only = at.dataframe[0].value
    assert list(only["found by"]) == ["fora(interval=3)"]
    assert "1 of 41 evaluations" in texts(at, "caption")
    button = at.get("download_button")[0]
    assert button.proto.label == "Download CSV"
    target = int(only.loc[0, "id"])
    at.session_state["evaluations_table"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()                                                   # the row click, as the browser sends it
    assert not at.exception and at.header[0].value == "Schedule"
    assert int(str(at.session_state["eval_id"])) == target
    assert f"Evaluation #{target} · found by fora(interval=3)" in texts(at, "caption")


def test_evaluations_csv_is_the_table_shown(filled: str) -> None:
    import io

    import pandas as pd

    from dashboard.frames import evaluations_frame, filter_evaluations
    with Store(filled, create=False) as store:
        info = store.get_study("tiny-ecad")
        table = data.load_evaluations(store, "tiny-ecad")
    shown = filter_evaluations(evaluations_frame(table, info), statuses=["done"])
    back = pd.read_csv(io.StringIO(shown.to_csv(index=False)))
    assert list(back["id"]) == list(shown["id"]) and len(back) == 39 and set(back["status"]) == {"done"}


def test_frontier_marks_the_knee_and_the_quality_bar_with_units(filled: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from schedules.objectives import KNEE_HELP
    at = app(filled, "frontier", monkeypatch, study="tiny-ecad")
    spec = plotly_specs(at)[0]
    with Store(filled, create=False) as store:
        knee = store.knee("tiny-ecad").id
    assert any(t["name"] == f"knee #{knee}" and t["marker"]["symbol"] == "star" for t in spec["data"])
    bar = float(at.session_state["bar_threshold"])
    assert any(s.get("y0") == pytest.approx(bar) and s.get("line", {}).get("dash") == "dash"
               for s in spec["layout"]["shapes"])
    assert spec["layout"]["yaxis"]["title"]["text"] == "psnr (dB)"
    assert spec["layout"]["xaxis"]["title"]["text"] == "MAC speedup (x)"
    assert KNEE_HELP in texts(at, "caption")
    assert "found by %{customdata" in spec["data"][0]["hovertemplate"]
    at.radio(key="color_by").set_value("provenance").run()
    names = [t["name"] for t in plotly_specs(at)[0]["data"]]
    assert "tiny-ecad (ecad) · heuristic (3)" in names and "tiny-ecad (ecad) · found by the search (36)" in names
    at.radio(key="cost").set_value("latency_speedup_model").run()      # no study reports it: says so
    assert "No finished evaluation reports both psnr and latency_speedup_model" in texts(at, "info")


def test_frontier_overlays_only_comparable_studies_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A study of the same model scored on other prompts is not overlaid unless asked, and then flagged;
    one with nothing done yet (its prompts unknown) is."""
    import random

    from store import Objective
    from test_dashboard_data import model_specs, random_plan, result_for
    url = fill_store(tmp_path / "cmp.db")
    pixart, _ = model_specs()
    rng = random.Random(5)
    with Store(url) as store:
        store.create_study("other-prompts", {}, "PixArtTransformer2DModel:tiny/pixart", "random", {},
                           [Objective("psnr", reference=15.0), Objective("mac_speedup")])
        results = [result_for(random_plan(pixart, rng, 0.5), rng) for _ in range(5)]
        for r in results:
            r.prompt_set_hash = "held-out"
        store.record_evaluations("other-prompts", results)
        store.create_study("just-started", {}, "PixArtTransformer2DModel:tiny/pixart", "random", {},
                           [Objective("psnr", reference=15.0), Objective("mac_speedup")])   # nothing done: unknown
    at = app(url, "frontier", monkeypatch, study="tiny-ecad")
    assert at.multiselect(key="compare").value == ["tiny-ecad", "tiny-random", "just-started"]
    assert not at.error, texts(at, "error")
    at.multiselect(key="compare").set_value(["tiny-ecad", "other-prompts"]).run()
    assert "Not comparable with `tiny-ecad`" in texts(at, "warning") and "`other-prompts`" in texts(at, "warning")


def test_images_are_captioned_with_prompt_and_seed_and_enlarged_sharply(filled: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from PIL import Image

    from dashboard.views.images import enlarged, prompt_texts
    at = app(filled, "images", monkeypatch, study="tiny-ecad", eval="2")
    assert f"{PROMPTS[1]} · seed 0" in texts(at, "markdown")
    small = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 20, 30)).save(small, format="PNG")
    body, width = enlarged(small.getvalue(), 200)
    big = Image.open(io.BytesIO(body))
    assert width == big.width == 192 and big.getpixel((191, 191)) == (10, 20, 30)   # 12x, pixel for pixel
    assert prompt_texts({"evaluation": {"prompts": ["a", "b"]}}, 3) == ["a", "b", "image 2"]   # an older study
    assert prompt_texts({"thumbnails": [{"prompt": "red 3", "seed": 7}]}, 1) == ["red 3 · seed 7"]


def test_pages_name_models_not_signatures(filled: str, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app(filled, "progress", monkeypatch, study="tiny-ecad")
    assert at.selectbox(key="progress_model").options == ["tiny flux", "tiny pixart"]
    assert at.selectbox(key="progress_model").value == "tiny pixart"
    studies = app(filled, "studies", monkeypatch).dataframe[0].value
    assert list(studies["model"]) == ["tiny pixart", "tiny pixart", "tiny flux"]


def test_schedule_page_shows_who_found_it_and_its_parents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import random

    from store import Objective
    from test_dashboard_data import model_specs, random_plan, result_for
    url = f"sqlite:///{tmp_path / 'parents.db'}"
    pixart, _ = model_specs()
    rng = random.Random(2)
    a, b = random_plan(pixart, rng, 0.5), random_plan(pixart, rng, 0.4)
    child = random_plan(pixart, rng, 0.3).with_info(provenance={
        "searcher": "ecad", "generation": 1, "parents": [a.hash, b.hash], "operators": ["crossover", "mutation"]})
    with Store(url) as store:
        store.create_study("kin", {}, "tiny", "ecad", {}, [Objective("psnr", reference=15.0), Objective("mac_speedup")])
        ids = store.record_evaluations("kin", [result_for(s, rng) for s in (a, b, child)])
    at = app(url, "schedule", monkeypatch, study="kin", eval=str(ids[2]))
    captions = texts(at, "caption")
    assert f"found by ecad generation 1: crossover, mutation of {a.hash[:8]} x {b.hash[:8]}" in captions
    assert f"Parents: #{ids[0]} ({a.hash[:8]}), #{ids[1]} ({b.hash[:8]})" in captions
