"""Wall clock against the peers a user would pick instead, on the embedded model, side by side.

Ours: FORA-2/3/6, the quick study's knee and its schedule closest to 4x MACs, and its whole front.
Peers (diffusers' own hooks through `evaluators.baselines`): FirstBlockCache, MagCache (calibrated on
the calibration prompts), TaylorSeer and TaylorSeer-lite at several settings. For each: PSNR vs the
all-compute images and judge adherence on held-out prompts, MACs counted by FlopCounterMode on that
very run, and wall speedup at batch 1 and batch 8 from interleaved rounds (one torch thread), every
configuration timed once per round so load changes hit all alike.

    OMP_NUM_THREADS=1 python bench/wallclock_vs_peers.py [--db quick.db] [--rounds 5] [--out bench/results/wallclock_vs_peers.txt]

Without --db it first runs `configs/embedded_quick.yaml` into a temporary database.
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from _common import header, report  # noqa: E402
from heldout import Config, HeldOut  # noqa: E402
from schedules import SamplingSpec, Schedule  # noqa: E402
from store import Store  # noqa: E402
from store.export import choose  # noqa: E402

PEERS: list[tuple[str, dict[str, Any]]] = (
    [("first_block_cache", {"threshold": t}) for t in (0.1, 0.2, 0.3, 0.35, 0.5)]
    + [("mag_cache", {"threshold": t, "max_skip_steps": k}) for t, k in ((0.06, 3), (0.12, 3), (0.25, 4))]
    + [("taylorseer", {"cache_interval": n, "lite": True}) for n in (2, 3, 4)]
    + [("taylorseer", {"cache_interval": n}) for n in (2, 3)]
)


def run_quick_study(db: Path) -> None:
    print(f"running configs/embedded_quick.yaml into {db} ...", flush=True)
    subprocess.run([sys.executable, "-m", "search.cli", "search", str(ROOT / "configs/embedded_quick.yaml"),
                    "--db", f"sqlite:///{db}"], check=True, cwd=ROOT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", type=Path)
    ap.add_argument("--study", default="embedded-quick")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--prompts", type=int, default=16, help="held-out prompts for quality (seed 0)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.db is None:
        args.db = Path(tempfile.mkdtemp()) / "quick.db"
        run_quick_study(args.db)
    bench = HeldOut(args.prompts)
    spec, steps = bench.spec, bench.steps
    store = Store(f"sqlite:///{args.db}", create=False)
    front = store.front(args.study)
    knee = choose(store, args.study, "knee")
    four = min(front, key=lambda r: abs((r.mac_speedup or 0) - 4.0))
    ours: dict[str, Schedule] = {f"FORA-{n}": Schedule.periodic(spec, SamplingSpec(steps, cfg="batched"), n)
                                 for n in (2, 3, 6)}
    ours[f"knee (#{knee.id})"] = store.schedule(knee.schedule_hash)
    ours[f"~4x searched (#{four.id})"] = store.schedule(four.schedule_hash)
    for r in front:
        if r.schedule_hash not in {s.hash for s in ours.values()}:
            ours[f"front #{r.id}"] = store.schedule(r.schedule_hash)
    configs = [bench.ours(name, s) for name, s in ours.items()] + [bench.peer(m, st) for m, st in PEERS]
    for c in configs:
        bench.score(c)
    bench.time(configs, args.rounds)
    plain = {b: statistics.median(v) for b, v in bench.plain.items()}
    wall = bench.wall

    lines = [header("wallclock_vs_peers.py"),
             f"# embedded model, 20 steps DPM-Solver++, CFG 4 (batched); quality on {len(bench.prompts)} held-out prompts "
             f"(seed 0) vs all-compute; MACs by FlopCounterMode on that run; wall: median of {args.rounds} "
             f"interleaved rounds; all-compute {plain[1] * 1e3:.0f} ms (batch 1), {plain[8] * 1e3:.0f} ms (batch 8)",
             f"{'configuration':58s} {'MAC x':>6s} {'PSNR dB':>8s} {'adher.':>6s} {'wall x b1':>9s} {'w/MAC':>6s} "
             f"{'wall x b8':>9s} {'w/MAC':>6s}"]
    for c in configs:
        lines.append(f"{c.name:58s} {c.macs:6.2f} {c.psnr:8.2f} {c.adherence:6.3f} {wall(c, 1):9.2f} "
                     f"{wall(c, 1) / c.macs:6.2f} {wall(c, 8):9.2f} {wall(c, 8) / c.macs:6.2f}")
    lines += summary(configs, wall)
    lines.append(f"# command: OMP_NUM_THREADS=1 python bench/wallclock_vs_peers.py --rounds {args.rounds}")
    report(lines, args.out)


def summary(configs: list[Config], wall: Callable[[Config, int], float]) -> list[str]:
    """Our worst wall/MAC up to 4x, and at equal wall speedup our best PSNR vs each peer in 1.5x-3x."""
    out = []
    mine = [c for c in configs if c.kind == "ours"]
    for b in (1, 8):
        ratios = [wall(c, b) / c.macs for c in mine if c.macs <= 4.0 + 1e-9]
        out.append(f"batch {b}: our wall/MAC up to 4x MACs: min {min(ratios):.2f}, median "
                   f"{statistics.median(ratios):.2f} (goal >= 0.90)")
        margins = []
        for p in (c for c in configs if c.kind == "peer"):
            w = wall(p, b)
            if not 1.5 <= w <= 3.0:
                continue
            faster = [c.psnr for c in mine if wall(c, b) >= w]
            best = max(faster) if faster else float("nan")
            margins.append(best - p.psnr)
            out.append(f"  batch {b}: {p.name:52s} wall {w:4.2f}x {p.psnr:5.1f} dB; ours at >= that wall: "
                       f"{best:5.1f} dB ({best - p.psnr:+.1f})")
        finite = [m for m in margins if math.isfinite(m)]
        if finite:
            out.append(f"batch {b}: margin over peers at equal wall (1.5x-3x): min {min(finite):+.1f} dB, "
                       f"median {float(np.median(finite)):+.1f} dB (goal >= +3 dB)")
    return out


if __name__ == "__main__":
    main()
