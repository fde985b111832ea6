"""Hypervolume against evaluations for every searcher on the embedded model, at equal budget.

    python bench/search_hypervolume.py                      # defaults below, ~1 h on 2 busy cores
    python bench/search_hypervolume.py --budget 32 --seeds 0 --prompts 4   # a smoke run

Same prompts, image seeds and evaluation settings for every searcher; stochastic searchers (ecad,
bayes, random) run with several searcher seeds, dp and heuristics are deterministic. One model load
serves every study, and identical schedules are scored once (a memo by content hash: scoring is
deterministic on CPU), so a heuristic that ECAD re-proposes costs nothing twice; each study still
counts it as one of its evaluations. Hypervolumes come from the store (moocore) against the study's
fixed reference point. `dp+ecad` is ECAD seeded with the dp study's front, its budget reduced by the
dp study's evaluations (the curve continues dp's). Also checked: which heuristic schedules each
searcher's final front dominates (>= quality at >= MAC speedup).

Writes bench/results/search_hypervolume.{json,md,png}.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from search_plot import add_study_arguments, run_meta, write_results  # noqa: E402

import numpy as np  # noqa: E402

from search.config import validate_config  # noqa: E402
from schedules.objectives import hypervolume_history, nondominated  # noqa: E402
from search.study import run_study  # noqa: E402

SETTINGS = {"ecad": {"population": 16}, "dp": {"max_heuristics": 12, "candidates": 12, "refine_rounds": 2},
            "bayes": {}, "random": {}, "heuristics": {}, "dp+ecad": {"population": 16}}
DETERMINISTIC = ("dp", "heuristics")


class MemoPool:
    """Wraps an evaluator pool: a schedule already scored (same hash) is answered from memory with the
    asking schedule's own provenance; profiles likewise by target."""

    def __init__(self, pool):
        self.pool, self.memo, self.profiles, self.hits, self.misses = pool, {}, {}, 0, 0

    def __getattr__(self, name):
        return getattr(self.pool, name)

    def evaluate(self, schedules):
        for s in schedules:
            if s.hash in self.memo:
                self.hits += 1
                yield dataclasses.replace(self.memo[s.hash], schedule=s)
                continue
            self.misses += 1
            for r in self.pool.evaluate([s]):
                self.memo[s.hash] = r
                yield r

    def profile(self, schedule=None):
        key = schedule.hash if schedule is not None else None
        if key not in self.profiles:
            self.profiles[key] = self.pool.profile(schedule)
        return self.profiles[key]


def _url(db: str) -> str:
    return db if "://" in db else f"sqlite:///{db}"


def dominated(heuristics, front):
    """Heuristic points weakly dominated by a front: (quality, speedup) both >=."""
    return sum(any(q >= hq and s >= hs for q, s in front) for hq, hs in heuristics)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=int, default=64)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--searchers", nargs="+", default=["heuristics", "dp", "ecad", "bayes", "random", "dp+ecad"])
    add_study_arguments(ap, ROOT)
    args = ap.parse_args()

    evaluation = {"model": "embedded", "num_prompts": args.prompts, "seeds": args.image_seeds,
                  "n_thumbnails": 0, "metrics": ["psnr", "ssim", "latent_mse"],
                  "latency": {"warmup": 0, "repeats": 1}}
    db = args.db or str(Path(tempfile.mkdtemp()) / "bench.db")
    objectives = [{"name": "psnr", "reference": args.reference}, {"name": "mac_speedup", "reference": 1.0}]
    load0 = os.getloadavg()
    t0 = time.time()
    from search.study import make_pool
    base_cfg = validate_config({"evaluation": evaluation, "searcher": {"name": "random"}, "objectives": objectives})
    pool = MemoPool(make_pool(base_cfg))
    load_s = time.time() - t0

    runs: dict[str, list[dict]] = {}
    from store import Store
    for name in args.searchers:
        for seed in (args.seeds[:1] if name in DETERMINISTIC else args.seeds):
            study = f"bench-{name}-s{seed}"
            searcher, budget, seeds_from, prior = name, args.budget, [], []
            if name == "dp+ecad":      # ECAD seeded with the dp study's front; dp's evaluations count
                searcher, seeds_from = "ecad", ["bench-dp-s0"]
                with Store(_url(db)) as store:
                    prior = [(r.objective("psnr"), r.mac_speedup, r.status) for r in store.evaluations("bench-dp-s0")]
                budget = args.budget - len(prior)
            cfg = validate_config({"study": study, "evaluation": evaluation, "objectives": objectives,
                                   "searcher": {"name": searcher, "seed": seed, "settings": SETTINGS[name]},
                                   "budget": {"evaluations": max(1, budget)}, "seed_studies": seeds_from})
            t = time.time()
            _, outcome = run_study(cfg, db=db, pool=pool, show_progress=False, log=lambda m: None)
            with Store(_url(db)) as store:
                mine = [(r.objective("psnr"), r.mac_speedup, r.status) for r in store.evaluations(study)
                        if not r.provenance.get("imported_from")]     # dp's front, already in `prior`
            points = [(q, c) for q, c, st in prior + mine if st == "done" and q is not None]
            curve = hypervolume_history([(q, c) if st == "done" and q is not None else None
                                         for q, c, st in prior + mine], [args.reference, 1.0], [True, True])
            front = [tuple(p) for p, keep in zip(points, nondominated(np.array(points), [True, True])) if keep] \
                if points else []
            runs.setdefault(name, []).append({
                "seed": seed, "study": study, "curve": curve, "front": front, "points": points,
                "evaluations": len(prior) + outcome.evaluations, "reason": outcome.reason, "seconds": time.time() - t,
                "evaluator_seconds": outcome.evaluator_seconds})
            print(f"{study}: {outcome.evaluations} evaluations, HV {curve[-1] if curve else 0:.4g}, "
                  f"{outcome.reason}, {time.time() - t:.0f} s (memo hits {pool.hits}, misses {pool.misses})",
                  flush=True)

    heur = runs.get("heuristics", [{}])[0].get("points", [])
    marks = [m for m in (8, 16, 32, 48, 64, 96, 128) if m <= args.budget] + (
        [args.budget] if args.budget not in (8, 16, 32, 48, 64, 96, 128) else [])

    def at(curve, n):
        return curve[min(n, len(curve)) - 1] if curve else 0.0

    lines = ["| searcher | runs | " + " | ".join(f"HV@{m}" for m in marks) + " | front | heuristics dominated |",
             "|---|---|" + "---|" * len(marks) + "---|---|"]
    summary = {}
    for name, rs in runs.items():
        cells = []
        for m in marks:
            vals = [at(r["curve"], m) for r in rs]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{statistics.mean(vals):.1f} ± {sd:.1f}" if len(vals) > 1 else f"{vals[0]:.1f}")
        dom = [dominated(heur, r["front"]) for r in rs]
        summary[name] = {"hv_final": [at(r["curve"], args.budget) for r in rs], "dominated": dom}
        lines.append(f"| {name} | {len(rs)} | " + " | ".join(cells) +
                     f" | {statistics.mean(len(r['front']) for r in rs):.0f} | "
                     f"{statistics.mean(dom):.0f}/{len(heur)} |")
    table = "\n".join(lines)
    meta = run_meta("search_hypervolume.py", t0, load0, pool, budget=args.budget, evaluation=evaluation,
                    objectives=objectives, settings=SETTINGS, model_load_s=load_s)
    md = [f"# Hypervolume vs evaluations, embedded model ({meta['date']})", "",
          f"`{meta['command']}` — PSNR vs all-compute (reference {args.reference} dB) x MAC speedup "
          f"(reference 1.0); {args.prompts} prompts x {len(args.image_seeds)} image seeds; budget "
          f"{args.budget} evaluations per study; mean ± sd over searcher seeds {args.seeds}.", "",
          table, "",
          f"Distinct schedules scored: {pool.misses} (memo hits {pool.hits}); wall {meta['total_s'] / 60:.0f} min; "
          f"load average {load0[0]:.1f} -> {meta['load_avg_end'][0]:.1f} on {os.cpu_count()} cores.", ""]
    write_results(args.out, "search_hypervolume", {"meta": meta, "runs": runs, "summary": summary}, "\n".join(md),
                  f"embedded model: hypervolume (PSNR >= {args.reference} dB x MAC speedup) vs evaluations")
    print(table)
    pool.close()


if __name__ == "__main__":
    main()
