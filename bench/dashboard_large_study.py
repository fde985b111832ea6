"""How fast the dashboard opens a large study (issue: 10,000 evaluations should open in a couple of seconds).

Fills a SQLite store through the Store API with a PixArt-alpha-sized study (28 blocks x {attn1, attn2,
ff}, 20 steps; 10,000 real `EvaluationResult`s of distinct random schedules) plus a 2,000-evaluation
study of another searcher to overlay, then times, per page:
  - the data layer + figure building + JSON serialisation from a cold start (fresh Store, no cache),
    broken down by step;
  - the whole page through Streamlit's AppTest, first run (cold cache) and a rerun (warm cache: what
    every click and every live refresh costs within `data.LIVE_TTL`).

    python bench/dashboard_large_study.py [--n 10000] [--out bench/results/dashboard_large_study.txt]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from schedules import BlockGroup, EvaluationResult, ModelSpec, SamplingSpec, Schedule  # noqa: E402
from store import DONE, Objective, Store  # noqa: E402

STEPS, BLOCKS, COMPONENTS = 20, 28, ("attn1", "attn2", "ff")
SPEC = ModelSpec("pixart", "PixArtTransformer2DModel",
                 (BlockGroup("transformer_blocks", BLOCKS, COMPONENTS),), "bench/pixart-alpha-like")
PAIRS = 16          # (prompt, seed) pairs per evaluation: per-prompt values stored for every one
LINES: list[str] = []


def say(line: str = "") -> None:
    print(line, flush=True)
    LINES.append(line)


def png(seed: int, size: int = 128) -> bytes:
    arr = (np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="PNG")
    return out.getvalue()


def random_schedule(rng: random.Random) -> Schedule:
    p = rng.uniform(0.05, 0.95)
    masks = {("transformer_blocks", c): [[True] * BLOCKS] + [[rng.random() < p for _ in range(BLOCKS)]
                                                           for _ in range(STEPS - 1)] for c in COMPONENTS}
    return Schedule.from_masks(SPEC, SamplingSpec(STEPS), masks)


def result(schedule: Schedule, rng: random.Random, thumbs: int) -> EvaluationResult:
    frac = schedule.compute_fraction()
    psnr = 16 + 26 * frac ** 0.7 + rng.gauss(0, 1.5)
    return EvaluationResult(
        schedule=schedule, status=DONE, metrics={"psnr": psnr, "ssim": min(1.0, 0.4 + 0.6 * frac)},
        per_prompt={"psnr": [psnr + rng.gauss(0, 1) for _ in range(PAIRS)],
                    "ssim": [min(1.0, 0.4 + 0.6 * frac) for _ in range(PAIRS)]},
        macs=int(4e11 * frac), mac_speedup=1 / max(frac, 0.04), latency_s=0.5 * frac + 0.1,
        latency_speedup=0.6 / (0.5 * frac + 0.1), worker="bench", started_at=time.time(), finished_at=time.time(),
        thumbnails=[png(rng.randrange(10 ** 6)) for _ in range(thumbs)], prompt_set_hash="bench")


def fill(url: str, n: int) -> None:
    rng = random.Random(0)
    objectives = [Objective("psnr"), Objective("mac_speedup")]
    with Store(url) as store:
        for name, searcher, count in (("large-ecad", "ecad", n), ("large-random", "random", n // 5)):
            t0 = time.perf_counter()
            store.create_study(name, {"prompts": [f"prompt {i}" for i in range(8)], "seeds": [0, 1]},
                               "PixArtTransformer2DModel:bench", searcher, {}, objectives,
                               {"psnr": 15.0, "mac_speedup": 1.0})
            seen: set[str] = set()
            batch: list[EvaluationResult] = []
            while len(seen) < count:
                s = random_schedule(rng)
                if s.hash in seen:
                    continue
                seen.add(s.hash)
                batch.append(result(s, rng, thumbs=4 if len(seen) % 250 == 0 else 0))
                if len(batch) == 500:
                    store.record_evaluations(name, batch, step=len(seen) // 500)
                    batch = []
            if batch:
                store.record_evaluations(name, batch)
            store.set_reference_thumbnails(name, [png(10 ** 7 + i) for i in range(4)])
            store.set_study_status(name, "finished")
            say(f"filled {name}: {count} evaluations in {time.perf_counter() - t0:.1f} s")


@contextmanager
def timed(into: dict[str, float], key: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    into[key] = into.get(key, 0.0) + time.perf_counter() - t0


def breakdown(url: str) -> None:
    """Cold data layer + figures per page, step by step (a fresh Store each page, nothing cached)."""
    from dashboard import data, figures, frames
    from dashboard.views.images import difference

    def page(name: str, work: Callable[[dict[str, float]], None]) -> None:
        steps: dict[str, float] = {}
        t0 = time.perf_counter()
        work(steps)
        total = time.perf_counter() - t0
        say(f"  {name:<9} {total:6.2f} s   " + ", ".join(f"{k} {v:.2f}" for k, v in steps.items()))

    def studies(t: dict[str, float]) -> None:
        with timed(t, "open"):
            store = data.open_store(url)
        with timed(t, "list_studies"):
            summaries, infos = data.load_studies(store)
        with timed(t, "evaluations(all studies)"):
            tables = {s.name: data.load_evaluations(store, s.name) for s in summaries}
        with timed(t, "table"):
            frames.studies_frame(summaries, infos, tables, "psnr", "mac_speedup", 30.0)

    def frontier(t: dict[str, float]) -> None:
        store = data.open_store(url)
        with timed(t, "list_studies"):
            infos = data.load_studies(store)[1]
        series, knee = [], None
        for name in ("large-ecad", "large-random"):
            with timed(t, "evaluations"):
                table = data.load_evaluations(store, name)
            with timed(t, "front"):
                front = frames.front_ids(table, infos[name], "psnr", "mac_speedup")
            series.append(figures.FrontierSeries(name, table.points("psnr", "mac_speedup"), front))
            if name == "large-ecad":
                with timed(t, "knee"):
                    knee = frames.knee_id(table, infos[name], "psnr", "mac_speedup")
        with timed(t, "figure"):
            fig = figures.frontier_figure(series, "psnr", "mac_speedup", selected=knee)
        with timed(t, "to_json"):
            size = len(fig.to_json())
        t["json MB"] = size / 1e6

    def schedule(t: dict[str, float]) -> None:
        store = data.open_store(url)
        with timed(t, "list_studies"):
            info = data.load_studies(store)[1]["large-ecad"]
        with timed(t, "evaluations"):
            table = data.load_evaluations(store, "large-ecad")
        with timed(t, "front+knee"):
            front = frames.front_ids(table, info, "psnr", "mac_speedup")
            knee = frames.knee_id(table, info, "psnr", "mac_speedup")
        with timed(t, "record+schedule"):
            record = store.evaluation(int(knee or front[0]))
            a, b = store.schedule(record.schedule_hash), store.schedule(store.evaluation(front[0]).schedule_hash)
        with timed(t, "figures"):
            figs = [figures.plan_heatmap(a), figures.fractions_figure(a), figures.diff_heatmap(a, b),
                    figures.per_prompt_figure(record.per_prompt["psnr"], "psnr")]
        with timed(t, "to_json"):
            for f in figs:
                f.to_json()

    def images(t: dict[str, float]) -> None:
        store = data.open_store(url)
        table = data.load_evaluations(store, "large-ecad")
        eid = int(table.frame.query("n_thumbnails > 0")["id"].iloc[0])
        with timed(t, "thumbnails"):
            ref, img = store.reference_thumbnails("large-ecad"), store.thumbnails(eid)
        with timed(t, "differences"):
            for a, b in zip(ref, img):
                difference(a, b)

    def progress(t: dict[str, float]) -> None:
        store = data.open_store(url)
        histories = []
        for name in ("large-ecad", "large-random"):
            with timed(t, "hypervolume_history"):
                h = data.load_hypervolume(store, name, "psnr", "mac_speedup")
            assert not isinstance(h, str), h
            histories.append((name, [(p.n_evaluations, p.hypervolume) for p in h]))
        with timed(t, "figure+json"):
            figures.hypervolume_figure(histories, "psnr", "mac_speedup").to_json()

    def export(t: dict[str, float]) -> None:
        store = data.open_store(url)
        info = store.get_study("large-ecad")
        record = store.evaluation(int(data.load_pick(store, "large-ecad", "fastest-with psnr>=30", "psnr",
                                                     "mac_speedup")))
        with timed(t, "json"):
            data.export_bytes(store, info, record, "cachesearch")
        with timed(t, "cache-dit"):
            try:
                data.export_bytes(store, info, record, "cache-dit")
            except Exception:
                pass        # a random plan rarely fits; the reason is what the page shows

    for name, work in (("studies", studies), ("frontier", frontier), ("schedule", schedule),
                       ("images", images), ("progress", progress), ("export", export)):
        page(name, work)


def apptest(url: str, repeats: int) -> None:
    """Whole pages through Streamlit: first run with an empty cache, then reruns (cache warm)."""
    from streamlit.testing.v1 import AppTest

    import dashboard
    from dashboard import data
    os.environ[dashboard.DB_ENV] = url
    for page in ("studies", "frontier", "schedule", "images", "progress", "export"):
        data.clear()
        at = AppTest.from_file(str(dashboard.app_path()), default_timeout=300)
        at.query_params["page"] = page
        at.query_params["study"] = "large-ecad"
        t0 = time.perf_counter()
        at.run()
        cold = time.perf_counter() - t0
        assert not at.exception, [e.value for e in at.exception]
        warm = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            at.run()
            warm.append(time.perf_counter() - t0)
        say(f"  {page:<9} first open {cold:6.2f} s   rerun (warm cache) median {statistics.median(warm):5.2f} s "
            f"of {repeats}")


def browser(url_large: str, tmp: str, repeats: int) -> None:
    """Navigation to the frontier page until the plot and its selection ring are drawn, in headless
    Chromium, for a 60-evaluation store and the large one side by side (alternating, same browser):
    the ratio is what the study size costs on top of Streamlit's own page load."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_dashboard_browser import CHROMIUM, free_port, load_frontier, start_chromium, start_dashboard, stop
    if CHROMIUM is None:
        say("  skipped: Debian's chromium is not installed (apt-get install -y chromium)")
        return
    url_small = f"sqlite:///{Path(tmp) / 'small.db'}"
    fill(url_small, 50)
    servers, ports = [], {}
    with open(Path(tmp) / "servers.log", "w") as log:
        try:
            for label, url in (("small", url_small), ("large", url_large)):
                ports[label] = free_port()
                servers.append(start_dashboard(url, ports[label], log))
            proc, tools = start_chromium(str(Path(tmp) / "chromium"))
            try:
                tools.call("Page.enable")
                for label in ("small", "large"):          # first loads: server imports, cold caches
                    say(f"  first load, {label:<5} {load_frontier(tools, ports[label], 'large-ecad'):5.2f} s")
                warm: dict[str, list[float]] = {"small": [], "large": []}
                changed: dict[str, list[float]] = {"small": [], "large": []}
                rng = random.Random(7)
                for _ in range(repeats):
                    for label in ("small", "large"):      # nothing written since: cached table
                        warm[label].append(load_frontier(tools, ports[label], "large-ecad"))
                    for label, url in (("small", url_small), ("large", url_large)):
                        with Store(url) as writer:        # a search writes one result: the study is re-read
                            writer.record_evaluation("large-ecad", result(random_schedule(rng), rng, 0))
                        time.sleep(data_ttl() + 0.5)
                        changed[label].append(load_frontier(tools, ports[label], "large-ecad"))
                for name, runs in (("reload, nothing written", warm), ("reload after a write", changed)):
                    small, large = statistics.median(runs["small"]), statistics.median(runs["large"])
                    say(f"  {name}, median of {repeats}: small {small:.2f} s, large {large:.2f} s, "
                        f"ratio {large / small:.2f}")
                tools.close()
            finally:
                stop(proc, 20)
        finally:
            for server in servers:
                stop(server)


def data_ttl() -> float:
    from dashboard import data
    return data.LIVE_TTL


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-browser", action="store_true", help="skip the headless-Chromium page loads")
    ap.add_argument("--db", help="reuse/fill this SQLite file instead of a temporary one")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "dashboard_large_study.txt"))
    args = ap.parse_args()
    say(f"dashboard large-study bench · {time.strftime('%Y-%m-%d %H:%M')} · {platform.processor() or platform.machine()}"
        f" · {os.cpu_count()} CPUs (shared) · python {platform.python_version()}")
    say(f"study: {args.n} evaluations of {STEPS} steps x {BLOCKS} blocks x {len(COMPONENTS)} components "
        f"(+ {args.n // 5} in a second study), {PAIRS} per-prompt values per metric")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.db) if args.db else Path(tmp) / "large.db"
        url = f"sqlite:///{path}"
        if not path.exists():
            fill(url, args.n)
        say(f"database: {path.stat().st_size / 1e6:.1f} MB")
        say("")
        say("data layer + figures + JSON, cold (fresh Store, nothing cached):")
        breakdown(url)
        say("")
        say("whole page through streamlit.testing AppTest:")
        apptest(url, args.repeats)
        if not args.no_browser:
            say("")
            say("frontier page in headless Chromium (navigation -> plot drawn), 50 vs %d evaluations:" % args.n)
            browser(url, tmp, args.repeats)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(LINES) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
