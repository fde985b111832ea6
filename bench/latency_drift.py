"""Latency speedup under a change of machine load: reference timed once vs re-timed, side by side.

    python bench/latency_drift.py                 # writes bench/results/latency_drift.txt

The all-compute schedule's true latency speedup is 1.0 by definition.  For each mode the script
builds an evaluator on the embedded model, scores the all-compute schedule a few times on the quiet
machine, then starts CPU hogs (busy-looping processes, as when other jobs start on a shared machine)
and keeps scoring it.  "start-up only" (``latency.reference_every = 0``) compares every timing with the
reference measured before the load; "re-timed" (the default, every 4th evaluation here, window 3)
re-times the reference as the search goes.  Reported: the median latency speedup of all-compute in
the quiet phase and in the loaded phase (after the first re-timing window has passed).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from evaluators import EvaluationConfig, LocalPool  # noqa: E402


def _hog(stop: Any) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


def run_mode(name: str, reference_every: int, args: argparse.Namespace, cache: str) -> dict[str, float]:
    config = EvaluationConfig(
        model="embedded", num_prompts=args.num_prompts, seeds=[0], cache_dir=cache, metrics=["psnr"],
        latency={"warmup": 1, "repeats": 3, "reference_every": reference_every, "reference_window": 3})
    with LocalPool(config) as pool:
        base = pool.all_compute_schedule()
        quiet = [next(iter(pool.evaluate([base]))).latency_speedup for _ in range(args.quiet)]
        stop = mp.Event()
        hogs = [mp.Process(target=_hog, args=(stop,), daemon=True) for _ in range(args.hogs)]
        for h in hogs:
            h.start()
        try:
            loaded = [next(iter(pool.evaluate([base]))).latency_speedup for _ in range(args.loaded)]
        finally:
            stop.set()
            for h in hogs:
                h.join()
    settled = loaded[args.settle:]
    print(f"{name:14s} quiet {[f'{v:.2f}' for v in quiet]}  loaded {[f'{v:.2f}' for v in loaded]}", flush=True)
    return {"quiet": statistics.median(quiet), "loaded": statistics.median(settled),
            "loaded_min": min(settled), "loaded_max": max(settled)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-prompts", type=int, default=8)
    p.add_argument("--quiet", type=int, default=4, help="evaluations before the load starts")
    p.add_argument("--loaded", type=int, default=16, help="evaluations under load")
    p.add_argument("--settle", type=int, default=8, help="loaded evaluations skipped in the summary "
                                                          "(time for the re-timed window to fill)")
    p.add_argument("--hogs", type=int, default=2, help="busy-looping processes started as the load")
    p.add_argument("--every", type=int, default=4, help="reference_every of the re-timed mode")
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/latency_drift.txt")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        modes = {"start-up only": run_mode("start-up only", 0, args, cache),
                 f"re-timed (/{args.every})": run_mode(f"re-timed (/{args.every})", args.every, args, cache)}
    lines = [
        "# python bench/latency_drift.py " + " ".join(sys.argv[1:]),
        f"# {time.strftime('%Y-%m-%d %H:%M')}  {platform.machine()}  torch {torch.__version__}  "
        f"{mp.cpu_count()} cores; embedded model, {args.num_prompts} prompts x 1 seed, {args.hogs} CPU hogs "
        f"start after {args.quiet} evaluations",
        "# all-compute latency speedup (truth: 1.00); loaded = median of evaluations "
        f"{args.settle + 1}-{args.loaded} under load",
        f"{'reference':18s} {'quiet':>6s} {'loaded':>7s} {'loaded range':>14s}",
    ]
    for name, r in modes.items():
        lines.append(f"{name:18s} {r['quiet']:6.2f} {r['loaded']:7.2f}   {r['loaded_min']:.2f}-{r['loaded_max']:.2f}")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
