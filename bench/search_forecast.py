"""Reuse-only vs reuse + forecast schedules on the embedded model at equal budget, against diffusers'
TaylorSeer, on prompts the studies did not calibrate on.

    python bench/search_forecast.py                          # 128 evaluations x searcher seeds 0 1 2
    python bench/search_forecast.py --budget 8 --seeds 0 --prompts 2 --image-seeds 0 --heldout 4 --rounds 1 --out /tmp/f
                                                             # a smoke run

Part 1 (bench/search_timesteps.py's space runner): for the spaces `cache` (modes 1/0) and
`cache+forecast` (1/0/F/D) a study per searcher and seed at the same budget on the calibration
prompts; hypervolume (PSNR x MAC speedup) against evaluations. Part 2: each space's pooled front
(every run) at >= 2x / 3x / 4x / 5x MAC speedup is re-scored on held-out prompts, next to diffusers'
`TaylorSeerCacheConfig` (every component, and lite) at intervals 2..6, all measured the same way
(PSNR vs all-compute, judge adherence, MACs by FlopCounterMode, wall speedup in interleaved rounds,
batch 1, one thread). Part 3: where the forecast cells of the forecast front sit (step phase, block,
component, mode) and the wall/MAC ratio of forecast plans next to reuse plans.

Writes bench/results/search_forecast.{json,md,png}.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from heldout import HeldOut  # noqa: E402
from search_hypervolume import _url  # noqa: E402
from search_plot import add_study_arguments, run_meta, write_results  # noqa: E402
from search_timesteps import SETTINGS, best_at, memo_pool, run_spaces, study_setup  # noqa: E402


SPACES = ("cache", "cache+forecast")
SPEEDUPS = (2.0, 3.0, 4.0, 5.0)
TAYLORSEER = [{"cache_interval": n, "disable_cache_before_step": 2} for n in (2, 3, 4, 5, 6)] + \
             [{"cache_interval": n, "lite": True} for n in (2, 3, 4)]


def pooled_front_picks(db: str, runs: dict, space: str) -> dict[float, tuple[dict, object]]:
    """The best-PSNR evaluation at >= each speedup over every run of `space`, with its schedule."""
    from store import Store
    points = [p for rs in runs.values() for r in rs if r["space"] == space for p in r["points"]]
    out = {}
    with Store(_url(db)) as store:
        for s in SPEEDUPS:
            p = best_at(points, s)
            if p is not None:
                out[s] = (p, store.schedule(p["hash"]))
    return out


def placement(schedules: list) -> dict[str, Counter]:
    """Where the forecast cells are: by step phase (quarters), block, component and mode."""
    where = {"phase": Counter(), "block": Counter(), "component": Counter(), "mode": Counter()}
    for s in schedules:
        n = s.num_steps
        for g, c in s.components():
            for step, row in enumerate(s.rows(g, c)):
                for b, ch in enumerate(row):
                    if ch in ("F", "D"):
                        where["phase"][f"steps {4 * step // n * n // 4}-{(4 * step // n + 1) * n // 4 - 1}"] += 1
                        where["block"][b] += 1
                        where["component"][f"{g}.{c}"] += 1
                        where["mode"][ch] += 1
    return where


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=int, default=128)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--searchers", nargs="+", default=["dp", "ecad", "dp+ecad"], choices=sorted(SETTINGS))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--heldout", type=int, default=16, help="held-out prompts for part 2")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds in part 2")
    add_study_arguments(ap, ROOT)
    args = ap.parse_args()
    args.spaces, args.min_steps = list(SPACES), args.steps

    evaluation, objectives, db = study_setup(args)
    load0, t0 = os.getloadavg(), time.time()
    pool = memo_pool(evaluation, objectives)
    runs = run_spaces(args, pool, evaluation, objectives, db)
    meta = run_meta("search_forecast.py", t0, load0, pool, budget=args.budget, evaluation=evaluation,
                    settings=SETTINGS)
    pool.close()

    torch.set_num_threads(1)
    bench = HeldOut(args.heldout, args.steps)
    picks = {space: pooled_front_picks(db, runs, space) for space in SPACES}
    configs = []
    for space, by_speed in picks.items():
        for s, (_, schedule) in by_speed.items():
            configs.append(bench.ours(f"{space} front >= {s:g}x", schedule))
    configs += [bench.peer("taylorseer", st) for st in TAYLORSEER]
    for c in configs:
        bench.score(c)
    bench.time(configs, args.rounds, batches=(1,))
    text = report(args, runs, configs, bench, meta)
    doc = {"meta": meta, "runs": runs,
           "heldout": [{"name": c.name, "kind": c.kind, "macs": c.macs, "psnr": c.psnr, "adherence": c.adherence,
                        "wall": bench.wall(c, 1)} for c in configs]}
    write_results(args.out, "search_forecast", doc, text,
                  f"embedded model: hypervolume (PSNR >= {args.reference} dB x MAC speedup) vs evaluations, "
                  "reuse-only vs reuse+forecast")
    print(text)


def report(args, runs: dict, configs: list, bench: HeldOut, meta: dict) -> list[str] | str:
    marks = [m for m in (16, 32, 64, 96, 128) if m <= args.budget] or [args.budget]

    def at(curve, n):
        return curve[min(n, len(curve)) - 1] if curve else 0.0

    def hv(rs, m):
        vals = [at(r["curve"], m) for r in rs]
        return f"{statistics.mean(vals):.1f} ± {statistics.stdev(vals):.1f}" if len(vals) > 1 else f"{vals[0]:.1f}"

    md = [f"# Reuse-only vs reuse + forecast on the embedded model ({meta['date']})", "",
          f"`{meta['command']}` — studies on {args.prompts} calibration prompts x {len(args.image_seeds)} seeds, "
          f"budget {args.budget}; held-out re-scoring on {len(bench.prompts)} other prompts (seed 0), wall speedup "
          f"at batch 1 (x2 CFG) from {args.rounds} interleaved rounds, one thread.", "", "## Hypervolume (calibration prompts)", "",
          "| searcher · space | runs | " + " | ".join(f"HV@{m}" for m in marks) + " |", "|---|---|" + "---|" * len(marks)]
    md += [f"| {label} | {len(rs)} | " + " | ".join(hv(rs, m) for m in marks) + " |" for label, rs in runs.items()]
    finals = {sp: [r["curve"][-1] for rs in runs.values() for r in rs if r["space"] == sp and r["curve"]]
              for sp in SPACES}
    md += ["", f"Mean final HV: cache {statistics.mean(finals['cache']):.2f}, cache+forecast "
               f"{statistics.mean(finals['cache+forecast']):.2f}."]
    md += ["", "## Held-out prompts: pooled fronts vs diffusers TaylorSeer", "",
           "| configuration | MAC x | PSNR dB | adherence | wall x | wall/MAC |", "|---|---|---|---|---|---|"]
    for c in configs:
        w = bench.wall(c, 1)
        md.append(f"| {c.name} | {c.macs:.2f} | {c.psnr:.2f} | {c.adherence:.3f} | {w:.2f} | {w / c.macs:.2f} |")
    peers = [c for c in configs if c.kind == "peer"]
    md += ["", "At >= 3x and >= 4x MAC speedup, best held-out PSNR of each side (goal: forecast front >= every "
               "TaylorSeer setting + 3 dB):", ""]
    for s in (3.0, 4.0):
        for space in SPACES:
            ours = [c for c in configs if c.name == f"{space} front >= {s:g}x"]
            if not ours:
                continue
            best_peer = max((p for p in peers if p.macs >= s), key=lambda p: p.psnr, default=None)
            peer_txt = f"{best_peer.name} {best_peer.psnr:.2f} dB at {best_peer.macs:.2f}x" if best_peer else "none that fast"
            md.append(f"- >= {s:g}x: {space} {ours[0].psnr:.2f} dB at {ours[0].macs:.2f}x; best TaylorSeer {peer_txt}")
    forecast_plans = [c.schedule for c in configs if c.kind == "ours" and c.name.startswith("cache+forecast")]
    where = placement(forecast_plans)
    md += ["", "## Where the forecast cells of the forecast front sit", ""]
    for key, counts in where.items():
        md.append(f"- by {key}: " + (", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"))
    md += ["", f"Distinct schedules scored: {meta['memo_misses']} (memo hits {meta['memo_hits']}); study wall "
               f"{meta['total_s'] / 60:.0f} min; load average {meta['load_avg_start'][0]:.1f} -> "
               f"{meta['load_avg_end'][0]:.1f}.", ""]
    return "\n".join(md)


if __name__ == "__main__":
    main()
