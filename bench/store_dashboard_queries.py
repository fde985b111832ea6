"""How long the dashboard's store queries take on a large study.

Fills a fresh SQLite store with N evaluations (default 10,000) of PixArt-alpha-sized schedules
(28 blocks x {attn1, attn2, ff} x 20 steps), each with 3 metrics, per-prompt values for 100 prompts,
and two ~1 kB thumbnails, written in generations of 72 (one transaction each, as an ECAD loop would),
plus a second small study. Then times, on a freshly opened store, the calls the dashboard makes.
Each query is run 5 times; the median and the slowest are reported.

    python bench/store_dashboard_queries.py                      # 10,000 evaluations
    python bench/store_dashboard_queries.py --n 2000 --out -     # quick look, print only
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schedules import BlockGroup, EvaluationResult, ModelSpec, SamplingSpec, Schedule  # noqa: E402
from store import Objective, Store  # noqa: E402

SPEC = ModelSpec("pixart", "PixArtTransformer2DModel",
                 (BlockGroup("transformer_blocks", 28, ("attn1", "attn2", "ff")),), model_id="PixArt-alpha/PixArt-XL-2-256x256")
SAMPLING = SamplingSpec(20, scheduler="DPMSolverMultistepScheduler", cfg="batched", guidance_scale=4.5)
GENERATION = 72
PROMPTS = 100


def make_result(rng: random.Random, i: int) -> EvaluationResult:
    keep = rng.uniform(0.15, 1.0)                      # fraction of slots computed
    bits = [1 if rng.random() < keep else 0 for _ in range(28 * 3 * 19)]
    schedule = Schedule.from_bits(SPEC, SAMPLING, bits)
    speedup = 1.0 / schedule.compute_fraction()
    psnr = 45.0 - 9.0 * math.log(speedup) * rng.uniform(0.8, 1.6)
    per = [psnr + rng.gauss(0, 1.5) for _ in range(PROMPTS)]
    ssim = min(1.0, 1 - 0.05 * speedup + rng.gauss(0, 0.03))
    if i % 97 == 0:
        return EvaluationResult.failed(schedule, "CUDA out of memory", worker="gpu0")
    return EvaluationResult(
        schedule, "done", metrics={"psnr": psnr, "ssim": ssim, "latent_mse": 0.01 * speedup},
        per_prompt={"psnr": per, "ssim": [ssim] * PROMPTS, "latent_mse": [0.01 * speedup] * PROMPTS},
        macs=int(2.1e12 / speedup), mac_speedup=speedup, latency_s=1.9 / (0.8 * speedup),
        latency_speedup=0.8 * speedup * rng.uniform(0.9, 1.1), worker="gpu0", started_at=time.time(), finished_at=time.time(),
        thumbnails=[rng.randbytes(1024), rng.randbytes(1024)], prompt_set_hash="bench-prompts")


def timed(fn: Callable[[], Any], repeats: int = 5) -> tuple[float, float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), max(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "store_queries.txt"),
                    help="results file ('-' to only print)")
    args = ap.parse_args()

    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        url = f"sqlite:///{db}"
        say(f"# store dashboard queries, {time.strftime('%Y-%m-%d %H:%M')}, python {platform.python_version()}, "
            f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start, "
            f"command: python bench/store_dashboard_queries.py --n {args.n}")
        t0 = time.perf_counter()
        results = [make_result(rng, i) for i in range(args.n)]
        say(f"built {args.n} results (28x3x20 plans, {PROMPTS} prompts each) in {time.perf_counter() - t0:.1f} s")

        with Store(url) as s:
            s.create_study("big", {"seeds": [0, 1]}, "pixart-alpha-256", "ecad", {"population": GENERATION},
                           [Objective("psnr"), Objective("mac_speedup")], {"psnr": 20.0})
            s.create_study("small", {}, "pixart-alpha-256", "random", {},
                           [Objective("psnr"), Objective("mac_speedup")], {"psnr": 20.0})
            t0 = time.perf_counter()
            for k in range(0, args.n, GENERATION):
                s.record_evaluations("big", results[k:k + GENERATION], step=k // GENERATION)
            fill = time.perf_counter() - t0
            say(f"filled 'big' in {fill:.1f} s: {args.n / fill:.0f} results/s in transactions of {GENERATION}")
            t0 = time.perf_counter()
            for r in results[:100]:
                s.record_evaluation("small", r)
            one = (time.perf_counter() - t0) / 100
            say(f"one result per transaction ('small', 100 results): {one * 1000:.1f} ms each")
        say(f"database size: {db.stat().st_size / 1e6:.1f} MB (+ WAL {Path(str(db) + '-wal').stat().st_size / 1e6 if Path(str(db) + '-wal').exists() else 0:.1f} MB)")

        t0 = time.perf_counter()
        s = Store(url, create=False)
        say(f"open store (schema check): {(time.perf_counter() - t0) * 1000:.0f} ms")
        say(f"{'query':58s} {'median':>9s} {'slowest':>9s}  result")
        first = s.evaluations("big", "done", per_prompt=False)[0]
        queries: list[tuple[str, Callable[[], Any], Callable[[Any], str]]] = [
            ("list_studies()", s.list_studies, lambda r: f"{len(r)} studies, big front {r[0].front_size}"),
            ("front('big')  [psnr vs mac_speedup]", lambda: s.front("big"), lambda r: f"{len(r)} members"),
            ("front('big', 'ssim', 'latency_speedup')", lambda: s.front("big", "ssim", "latency_speedup"),
             lambda r: f"{len(r)} members"),
            ("evaluations('big', per_prompt=False)", lambda: s.evaluations("big", per_prompt=False),
             lambda r: f"{len(r)} records"),
            ("evaluations('big')  [with 3x100 per-prompt values]", lambda: s.evaluations("big"),
             lambda r: f"{len(r)} records"),
            ("hypervolume_history('big')", lambda: s.hypervolume_history("big"),
             lambda r: f"{len(r)} points, final {r[-1].hypervolume:.3f}"),
            ("hypervolume('big')", lambda: s.hypervolume("big"), lambda r: f"{r:.3f}"),
            ("schedule(hash)", lambda: s.schedule(first.schedule_hash), lambda r: repr(r)),
            ("thumbnails(evaluation_id)", lambda: s.thumbnails(first.id), lambda r: f"{len(r)} images"),
            ("evaluation(evaluation_id)", lambda: s.evaluation(first.id), lambda r: f"id {r.id}"),
        ]
        for name, fn, show in queries:
            med, worst, out = timed(fn)
            say(f"{name:58s} {med * 1000:7.0f} ms {worst * 1000:7.0f} ms  {show(out)}")
        s.close()
    say("note: the dashboard lists with per_prompt=False; per-prompt values are for one evaluation's detail view")

    if args.out != "-":
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
