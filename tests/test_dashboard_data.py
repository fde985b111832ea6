"""Dashboard data layer, frames, figures and launcher, against a real SQLite store filled through the
Store API with real `EvaluationResult`s of real schedules of tiny diffusers models.

`fill_store` is shared with the AppTest and browser tests (imported from this module)."""

from __future__ import annotations

import io
import json
import random
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from schedules import COMPUTE, REUSE, EvaluationResult, Schedule, SamplingSpec, describe
from store import DONE, Objective, Store

STEPS = 8
PROMPTS = ["a red square on blue", "a green circle", "the digit three in yellow"]


def png(seed: int, size: int = 32) -> bytes:
    """A small deterministic PNG (what evaluators store as thumbnails)."""
    rng = np.random.default_rng(seed)
    arr = (rng.random((size, size, 3)) * 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="PNG")
    return out.getvalue()


def model_specs():
    """Block layouts of two real tiny diffusers models (one block group; two block groups)."""
    from tiny_models import tiny_flux, tiny_pixart
    return describe(tiny_pixart()[0], model_id="tiny/pixart"), describe(tiny_flux()[0], model_id="tiny/flux")


def fora(spec, every: int) -> Schedule:
    """Recompute everything every `every` steps, reuse in between (whole steps: fits cache-dit)."""
    masks = {(g.name, c): [[COMPUTE if s % every == 0 else REUSE] * g.num_blocks for s in range(STEPS)]
             for g in spec.block_groups for c in g.components}
    return Schedule.from_masks(spec, SamplingSpec(STEPS), masks)


def dbcache(spec, every: int) -> Schedule:
    """Like `fora`, but the first and last block always compute: what cache-dit's static mask expresses."""
    def row(g, s: int) -> list[str]:
        if s % every == 0:
            return [COMPUTE] * g.num_blocks
        return [COMPUTE if b in (0, g.num_blocks - 1) else REUSE for b in range(g.num_blocks)]
    masks = {(g.name, c): [row(g, s) for s in range(STEPS)] for g in spec.block_groups for c in g.components}
    return Schedule.from_masks(spec, SamplingSpec(STEPS), masks)


def random_plan(spec, rng: random.Random, p: float) -> Schedule:
    masks = {(g.name, c): [[True] * g.num_blocks] + [[rng.random() < p for _ in range(g.num_blocks)]
                                                    for _ in range(STEPS - 1)]
             for g in spec.block_groups for c in g.components}
    return Schedule.from_masks(spec, SamplingSpec(STEPS), masks)


def result_for(schedule: Schedule, rng: random.Random, thumbs: int = 0, fail: bool = False) -> EvaluationResult:
    frac = schedule.compute_fraction()
    if fail:
        return EvaluationResult.failed(schedule, "worker died (test)")
    psnr = 18 + 22 * frac + rng.uniform(-2, 2)
    n = len(PROMPTS) * 2
    return EvaluationResult(
        schedule=schedule, status=DONE, metrics={"psnr": psnr, "ssim": min(1.0, 0.5 + frac / 2)},
        per_prompt={"psnr": [psnr + rng.uniform(-1, 1) for _ in range(n)],
                    "ssim": [min(1.0, 0.5 + frac / 2) for _ in range(n)]},
        macs=int(1e9 * frac), mac_speedup=1 / max(frac, 0.05), latency_s=0.1 * frac + 0.02,
        latency_speedup=0.12 / (0.1 * frac + 0.02), worker="test-worker", started_at=1.7e9, finished_at=1.7e9 + 1,
        thumbnails=[png(hash(schedule.hash) % 1000 + i) for i in range(thumbs)], prompt_set_hash="ps-test")


def fill_store(path: Path) -> str:
    """Three studies: two searchers on the tiny PixArt (one still running), one on the tiny FLUX."""
    url = f"sqlite:///{path}"
    pixart, flux = model_specs()
    rng = random.Random(0)
    objectives = [Objective("psnr", unit="dB"), Objective("mac_speedup")]
    with Store(url) as store:
        for name, searcher, spec, n, status in (("tiny-ecad", "ecad", pixart, 40, "running"),
                                                ("tiny-random", "random", pixart, 25, "finished"),
                                                ("tiny-flux-dp", "dp", flux, 12, "finished")):
            config = {"prompts": PROMPTS, "seeds": [0, 1], "model_name": f"tiny {spec.family}",
                      "thumbnails": [{"prompt": p, "seed": 0} for p in PROMPTS]}
            store.create_study(name, config, f"{spec.transformer_class}:{spec.model_id}",
                               searcher, {"population": 8}, objectives, {"psnr": 15.0, "mac_speedup": 1.0})
            heuristic = [{}, {"heuristic": "fora", "heuristic_params": {"interval": 2}},
                         {"heuristic": "fora", "heuristic_params": {"interval": 3}},
                         {"heuristic": "cache-dit-mask", "heuristic_params": {"Fn": 1, "Bn": 1, "interval": 2}}]
            schedules = [s.with_info(provenance={"searcher": searcher, **h}) for s, h in zip(
                [Schedule.all_compute(spec, SamplingSpec(STEPS)), fora(spec, 2), fora(spec, 3), dbcache(spec, 2)],
                heuristic)]
            schedules += [random_plan(spec, rng, rng.uniform(0.1, 0.9)).with_info(
                provenance={"searcher": searcher, "generation": 1 + k // 10}) for k in range(n - 4)]
            results = [result_for(s, rng, thumbs=len(PROMPTS) if i < 6 else 0, fail=(i == 7))
                       for i, s in enumerate(schedules)]
            for start in range(0, len(results), 10):
                store.record_evaluations(name, results[start:start + 10], step=start // 10)
            store.set_reference_thumbnails(name, [png(900 + i) for i in range(len(PROMPTS))])
            if status == "running":   # a live run: its heartbeat is fresh for the next 3 hours
                store.claim_run(name, "fixture-run", interval_s=3600.0)
            else:
                store.set_study_status(name, status)
        store.mark_queued("tiny-ecad", [random_plan(pixart, rng, 0.5)], step=9)
    return url


def set_schema_version(path: Path, version: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE cachesearch_schema SET value=? WHERE key='version'", (version,))


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> str:
    return fill_store(tmp_path_factory.mktemp("dash") / "results.db")


# ----------------------------------------------------------------------------------------- data layer
def test_load_evaluations_and_points(filled: str) -> None:
    from dashboard import data
    store = data.open_store(filled)
    table = data.load_evaluations(store, "tiny-ecad")
    assert len(table.frame) == 41 and set(table.metrics) == {"psnr", "ssim"}
    assert (table.frame["status"] == "queued").sum() == 1 and (table.frame["status"] == "failed").sum() == 1
    pts = table.points("psnr", "mac_speedup")
    assert len(pts) == 39 and pts["metric:psnr"].notna().all()

def test_front_and_knee_agree_with_the_store(filled: str) -> None:
    """The dashboard computes fronts from the table it holds; they must be the store's fronts."""
    from dashboard import data
    from dashboard.frames import front_ids, knee_id
    from store import choose
    store = data.open_store(filled)
    summaries, infos = data.load_studies(store)
    for s in summaries:
        table = data.load_evaluations(store, s.name)
        for cost in ("mac_speedup", "latency_speedup"):
            for quality in ("psnr", "ssim"):
                expected = [r.id for r in store.front(s.name, quality, cost)]
                assert front_ids(table, infos[s.name], quality, cost) == expected and expected
            assert knee_id(table, infos[s.name], "psnr", cost) == choose(store, s.name, "knee", cost=cost).id


def test_open_store_problems(tmp_path: Path) -> None:
    from dashboard import data
    with pytest.raises(data.DashboardError) as missing:
        data.open_store(f"sqlite:///{tmp_path / 'nope.db'}")
    assert missing.value.kind == "missing" and "nope.db" in missing.value.message
    assert not (tmp_path / "nope.db").exists()          # read-only: never creates a file
    (tmp_path / "empty.db").write_bytes(b"")
    with pytest.raises(data.DashboardError) as empty:
        data.open_store(f"sqlite:///{tmp_path / 'empty.db'}")
    assert empty.value.kind == "not_store"
    Store(f"sqlite:///{tmp_path / 'old.db'}").close()
    set_schema_version(tmp_path / "old.db", "999")
    with pytest.raises(data.DashboardError) as old:
        data.open_store(f"sqlite:///{tmp_path / 'old.db'}")
    assert old.value.kind == "version" and "999" in old.value.message


def test_export_bytes_json_and_cache_dit(filled: str) -> None:
    from dashboard import data
    store = data.open_store(filled)
    info = store.get_study("tiny-ecad")
    table = data.load_evaluations(store, "tiny-ecad")
    fits = dbcache(model_specs()[0], 2).hash
    record = store.evaluation(int(table.frame.loc[table.frame["schedule_hash"] == fits, "id"].iloc[0]))
    body, name = data.export_bytes(store, info, record, "cachesearch")
    loaded = Schedule.from_json(body.decode())
    assert loaded.hash == fits and name.endswith(".json")
    assert loaded.metrics["psnr"] == pytest.approx(record.metrics["psnr"])
    assert loaded.provenance["study"] == "tiny-ecad" and loaded.provenance["evaluation_id"] == record.id
    yaml_body, yaml_name = data.export_bytes(store, info, record, "cache-dit")
    assert yaml_name.endswith(".yaml") and b"steps_computation_mask" in yaml_body
    random_id = int(table.done()["id"].iloc[-1])
    from store import ExportError
    with pytest.raises(ExportError, match="does not fit cache-dit"):
        data.export_bytes(store, info, store.evaluation(random_id), "cache-dit")


# ----------------------------------------------------------------------------------------- frames
def test_studies_frame_best_speedup_at_bar(filled: str) -> None:
    from dashboard import data
    from dashboard.frames import best_cost_at, studies_frame
    store = data.open_store(filled)
    summaries, infos = data.load_studies(store)
    tables = {s.name: data.load_evaluations(store, s.name) for s in summaries}
    frame = studies_frame(summaries, infos, tables, "psnr", "mac_speedup", 30.0)
    assert list(frame["study"]) == ["tiny-ecad", "tiny-random", "tiny-flux-dp"]
    pts = tables["tiny-ecad"].points("psnr", "mac_speedup")
    expected = pts.loc[pts["metric:psnr"] >= 30.0, "mac_speedup"].max()
    assert frame.loc[0, "best mac_speedup at psnr bar"] == pytest.approx(expected)
    assert best_cost_at(tables["tiny-ecad"], infos["tiny-ecad"], "psnr", "mac_speedup", 1e9) is None
    assert frame.loc[0, "status"] == "running" and frame.loc[0, "pending"] == 1


# ----------------------------------------------------------------------------------------- figures
def test_frontier_figure_marks_front_and_selection(filled: str) -> None:
    from dashboard import data
    from dashboard.figures import FrontierSeries, frontier_figure
    store = data.open_store(filled)
    series = []
    for name in ("tiny-ecad", "tiny-random"):
        table = data.load_evaluations(store, name)
        series.append(FrontierSeries(name, table.points("psnr", "mac_speedup"),
                                     [r.id for r in store.front(name, "psnr", "mac_speedup")]))
    chosen = series[0].front_ids[0]
    fig = frontier_figure(series, "psnr", "mac_speedup", selected=chosen)
    names = [t.name for t in fig.data]
    assert len(fig.data) == 5 and names[-1] == f"selected #{chosen}"
    all_pts, front = fig.data[0], fig.data[1]
    assert len(all_pts.x) == len(series[0].points) and all_pts.type == "scattergl"
    assert sorted(int(c[0]) for c in front.customdata) == sorted(series[0].front_ids)
    assert list(front.x) == sorted(front.x)                  # the front is drawn left to right
    doc = json.loads(fig.to_json())
    assert isinstance(doc["data"][1]["customdata"][0][0], int)


def test_plan_heatmap_matches_plan() -> None:
    from dashboard.figures import MODE_CODE, plan_heatmap
    pixart, flux = model_specs()
    s = fora(flux, 3)
    fig = plan_heatmap(s)
    heatmaps = [t for t in fig.data if t.type == "heatmap"]
    assert len(heatmaps) == len(s.components())
    for trace, (g, c) in zip(heatmaps, s.components()):
        z = np.asarray(trace.z)
        assert z.shape == (STEPS, flux.group(g).num_blocks)
        assert (z == np.array([[MODE_CODE[ch] for ch in row] for row in s.rows(g, c)])).all()
    assert {t.name for t in fig.data if t.type == "scatter"} == {"compute", "reuse"}, "legend: the modes used"
    forecast = Schedule.periodic(flux, SamplingSpec(STEPS), 3, mode="F", warmup=2)
    legend = {t.name for t in plan_heatmap(forecast).data if t.type == "scatter"}
    assert legend == {"compute", "forecast"}


def test_mode_fractions_cover_every_mode_of_the_table() -> None:
    from dashboard.figures import mode_fractions
    from schedules import MODE_TABLE
    pixart, _ = model_specs()
    s = Schedule.periodic(pixart, SamplingSpec(STEPS), 3, mode="D", warmup=2)
    table = mode_fractions(s)
    assert list(table.columns) == [m.label for m in MODE_TABLE.values()]
    assert np.allclose(table.sum(axis=1), 1.0)
    assert (table["damped forecast"] > 0).all() and (table["reuse"] == 0).all()


def timestep_schedule(spec, steps: int = 5) -> Schedule:
    """FORA-2 on `steps` explicit timesteps of a 10-point grid (fewer steps than the study's STEPS)."""
    values = tuple(float(t) for t in (999, 799, 599, 399, 199, 99, 49)[:steps])
    masks = {(g.name, c): [[COMPUTE if s % 2 == 0 else REUSE] * g.num_blocks for s in range(steps)]
             for g in spec.block_groups for c in g.components}
    return Schedule.from_masks(spec, SamplingSpec(steps, timesteps=values), masks,
                               provenance={"reference_steps": STEPS})


def test_timestep_strip_and_one_heatmap_row_per_step_run() -> None:
    from dashboard.figures import plan_heatmap, timesteps_strip
    pixart, _ = model_specs()
    s = timestep_schedule(pixart)
    strip = timesteps_strip(s)
    assert list(strip.data[0].x) == list(s.sampling.timesteps) and list(strip.data[0].text) == list("01234")
    fig = plan_heatmap(s)
    z = np.asarray(next(t for t in fig.data if t.type == "heatmap").z)
    assert z.shape == (5, pixart.group("transformer_blocks").num_blocks)
    assert list(fig.layout.yaxis.ticktext) == ["0 · t=999", "1 · t=799", "2 · t=599", "3 · t=399", "4 · t=199"]
    assert timesteps_strip(fora(pixart, 2)) is None and fig.layout.yaxis.ticktext is not None
    assert plan_heatmap(fora(pixart, 2)).layout.yaxis.ticktext is None


def test_plan_diff_and_fractions() -> None:
    from dashboard.figures import block_fractions, diff_heatmap, plan_diff, step_fractions
    pixart, flux = model_specs()
    a, b = fora(pixart, 2), fora(pixart, 3)
    codes = plan_diff(a, b)
    differ = {k: int((v >= 2).sum()) for k, v in codes.items()}
    expected = sum(1 for s in range(STEPS) if (s % 2 == 0) != (s % 3 == 0)) * pixart.block_groups[0].num_blocks
    assert set(differ.values()) == {expected}
    assert plan_diff(a, a)[("transformer_blocks", "attn1")].max() <= 1
    assert len(diff_heatmap(a, b).data) > 0
    with pytest.raises(ValueError, match="cannot diff"):
        plan_diff(a, fora(flux, 2))
    steps = step_fractions(a)
    assert list(steps.iloc[:, 0]) == [1.0 if s % 2 == 0 else 0.0 for s in range(STEPS)]
    assert all(np.allclose(v, 0.5) for v in block_fractions(a).values())


# ----------------------------------------------------------------------------------------- launcher
def test_launcher_command(tmp_path: Path) -> None:
    import dashboard
    assert dashboard.app_path().is_file() and dashboard.app_path().name == "app.py"
    cmd = dashboard.streamlit_command("results.db", port=8600)
    assert cmd[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.port") + 1] == "8600"
    assert cmd[cmd.index("--server.headless") + 1] == "true"
    assert cmd[-2:] == ["--db", f"sqlite:///{Path('results.db').resolve()}"]
    assert dashboard.normalize_url("postgresql://u@h/db") == "postgresql://u@h/db"
