"""Cache-only vs cache+timesteps vs cache+timesteps+architecture on the embedded model at equal budget,
and the BOSS-style timestep DP vs uniform K-step spacing.

    python bench/search_timesteps.py                        # 128 evaluations x searcher seeds 0 1 2
    python bench/search_timesteps.py --budget 8 --seeds 0 --prompts 2 --image-seeds 0 --ks 8 10 --out /tmp/b
                                                            # a smoke run (~7 min on a busy 2-core machine)

Part 1, spaces: for every space and searcher a study at the same budget on the same prompts, image
seeds and metrics (dp is deterministic: one run; ecad and dp+ecad once per searcher seed; dp+ecad is
ECAD seeded with that space's dp front, its budget reduced by dp's evaluations). One model load, and
identical schedules scored once (`MemoPool` of bench/search_hypervolume.py). Reported: hypervolume
(PSNR >= reference x MAC speedup, moocore via the store) against evaluations; the front at 2x/3x/4x
MAC speedup (best PSNR among evaluations at least that fast, with its judge adherence, measured
latency speedup and step count); whether the joint front dominates the cache-only front past 2.5x.
Every speedup is against the study's all-compute run at its own N steps.

Part 2, BOSS vs uniform: the one-jump costs on the study's own N timesteps (one all-compute N-step
run), then for every K: the BOSS path, uniform on that grid (every N/K-th of the study's timesteps),
and the scheduler's own K-step spacing (`num_inference_steps=K`), all compute, scored like any
schedule against the N-step reference.

Writes bench/results/search_timesteps.{json,md,png}.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from search_hypervolume import MemoPool, _url  # noqa: E402
from search_plot import add_study_arguments, run_meta, write_results  # noqa: E402

from schedules import Schedule  # noqa: E402
from search.config import validate_config  # noqa: E402
from search.dp import boss_path  # noqa: E402
from search.study import make_pool, run_study  # noqa: E402
from schedules.objectives import hypervolume_history  # noqa: E402

SPACES = {"cache": {"kinds": ["cache"]}, "cache+timesteps": {"kinds": ["cache", "timesteps"]},
          "cache+timesteps+architecture": {"kinds": ["cache", "timesteps", "architecture"]},
          "cache+forecast": {"kinds": ["cache"], "modes": ["1", "0", "F", "D"]}}
SETTINGS = {"dp": {"max_heuristics": 16, "candidates": 12, "refine_rounds": 3, "boss_candidates": 8, "bases": 3},
            "ecad": {"population": 16}, "dp+ecad": {"population": 16}}
DETERMINISTIC = ("dp",)
SPEEDUPS = (2.0, 3.0, 4.0)
DOMINANCE_AT = (2.5, 3.0, 3.5, 4.0, 5.0)


def space_doc(space: dict, steps: int, min_steps: int) -> dict:
    doc: dict = dict(space)
    if "timesteps" in doc["kinds"]:  # the fine grid is the study's own steps: BOSS's fine trajectory is the reference
        doc.update(fine_steps=steps, min_steps=min_steps)
    return doc


def study_points(db: str, study: str) -> list[dict]:
    """Every evaluation of a study in order: psnr, adherence, MAC and latency speedups, steps, status."""
    from store import Store
    with Store(_url(db)) as store:
        out = []
        for r in store.evaluations(study):
            if r.provenance.get("imported_from"):
                continue
            out.append({"psnr": r.objective("psnr"), "adherence": r.metrics.get("judge_adherence"),
                        "mac": r.mac_speedup, "wall": r.latency_speedup, "ok": r.status == "done",
                        "steps": store.schedule(r.schedule_hash).num_steps, "hash": r.schedule_hash})
        return out


def best_at(points: list[dict], speedup: float) -> dict | None:
    """The best-PSNR evaluation at least `speedup` x faster in MACs."""
    ok = [p for p in points if p["ok"] and p["psnr"] is not None and p["mac"] is not None and p["mac"] >= speedup]
    return max(ok, key=lambda p: p["psnr"]) if ok else None


def run_spaces(args, pool, evaluation, objectives, db) -> dict:
    runs: dict[str, list[dict]] = {}
    for space_name in args.spaces:
        space = space_doc(SPACES[space_name], args.steps, args.min_steps)
        for name in args.searchers:
            for seed in (args.seeds[:1] if name in DETERMINISTIC else args.seeds):
                study = f"ts-{space_name}-{name}-s{seed}"
                searcher, budget, seeds_from, prior = name, args.budget, [], []
                if name == "dp+ecad":      # ECAD seeded with this space's dp front; dp's evaluations count
                    searcher, seeds_from = "ecad", [f"ts-{space_name}-dp-s{args.seeds[0]}"]
                    prior = study_points(db, seeds_from[0])
                    budget = args.budget - len(prior)
                cfg = validate_config({"study": study, "evaluation": evaluation, "objectives": objectives,
                                       "space": space, "budget": {"evaluations": max(1, budget)},
                                       "searcher": {"name": searcher, "seed": seed, "settings": SETTINGS[name]},
                                       "seed_studies": seeds_from})
                t = time.time()
                _, outcome = run_study(cfg, db=db, pool=pool, show_progress=False, log=lambda m: None)
                points = prior + study_points(db, study)
                curve = hypervolume_history([(p["psnr"], p["mac"]) if p["ok"] and p["psnr"] is not None else None
                                             for p in points], [args.reference, 1.0], [True, True])
                runs.setdefault(f"{name} · {space_name}", []).append({
                    "space": space_name, "searcher": name, "seed": seed, "study": study, "curve": curve,
                    "points": points, "reason": outcome.reason, "seconds": time.time() - t})
                print(f"{study}: {len(points)} evaluations, HV {curve[-1] if curve else 0:.4g}, {outcome.reason}, "
                      f"{time.time() - t:.0f} s (memo hits {pool.hits}, misses {pool.misses})", flush=True)
    return runs


def run_boss_vs_uniform(args, pool) -> list[dict]:
    spec, sampling = pool.model_spec(), pool.sampling_spec()
    kind, grid = pool.timestep_grid(args.steps)
    t = time.time()
    jumps = pool.timestep_costs(grid)
    jump_s = time.time() - t
    rows = []
    for k in args.ks or range(args.min_steps, args.steps):
        _, path = boss_path(jumps, k)
        on_grid = [i * len(grid) // k for i in range(k)]
        def at(indices: list[int]):
            return replace(sampling, num_inference_steps=k, **{kind: tuple(grid[i] for i in indices)})
        variants = {"boss": at(path), "uniform (grid)": at(on_grid),
                    "uniform (own K steps)": replace(sampling, num_inference_steps=k)}
        row = {"steps": k, "boss_path": path}
        for label, s in variants.items():
            schedule = Schedule.all_compute(spec, s, provenance={"bench": label})
            [r] = list(pool.evaluate([schedule]))
            row[label] = {"psnr": r.objective("psnr"), "adherence": r.metrics.get("judge_adherence"),
                          "mac": r.mac_speedup, "wall": r.latency_speedup, "error": r.error}
        rows.append(row)
        print(f"K={k}: " + ", ".join(f"{lab} {row[lab]['psnr']:.2f} dB" for lab in variants if row[lab]["psnr"]),
              flush=True)
    return [{"grid": list(grid), "kind": kind, "jump_costs_s": jump_s}] + rows


def _fmt(p: dict | None) -> str:
    if p is None:
        return "–"
    adh = f" / {p['adherence']:.3f}" if p.get("adherence") is not None else ""
    wall = f" / {p['wall']:.2f}x wall" if p.get("wall") else ""
    return f"{p['psnr']:.2f}{adh}{wall} / K={p['steps']}"


def report(args, runs: dict, boss: list[dict], meta: dict) -> str:
    marks = [m for m in (16, 32, 64, 96, 128) if m <= args.budget] or [args.budget]

    def at(curve, n):
        return curve[min(n, len(curve)) - 1] if curve else 0.0

    md = [f"# Cache, timesteps and architecture spaces on the embedded model ({meta['date']})", "",
          f"`{meta['command']}` — PSNR vs the all-compute {args.steps}-step run (HV reference {args.reference} dB) "
          f"x MAC speedup (reference 1.0, against {args.steps} steps); {args.prompts} prompts x "
          f"{len(args.image_seeds)} image seeds; budget {args.budget} evaluations per study; mean ± sd over "
          f"searcher seeds {args.seeds}. Timestep spaces: K = {args.min_steps}..{args.steps} of the study's own "
          f"{args.steps} timesteps.", "", "## Hypervolume", "",
          "| searcher · space | runs | " + " | ".join(f"HV@{m}" for m in marks) + " |",
          "|---|---|" + "---|" * len(marks)]
    def hv_cell(rs: list[dict], m: int) -> str:
        vals = [at(r["curve"], m) for r in rs]
        return f"{statistics.mean(vals):.1f} ± {statistics.stdev(vals):.1f}" if len(vals) > 1 else f"{vals[0]:.1f}"

    def front_cell(rs: list[dict], s: float) -> str:
        picks = [best_at(r["points"], s) for r in rs]
        mean = [p["psnr"] for p in picks if p is not None]
        return _fmt(picks[0]) + (f" [{statistics.mean(mean):.2f}]" if len(rs) > 1 and mean else "")

    md += [f"| {label} | {len(rs)} | " + " | ".join(hv_cell(rs, m) for m in marks) + " |" for label, rs in runs.items()]
    md += ["", "## Front at 2x / 3x / 4x MAC speedup",
           "", "Best PSNR among evaluations at least that fast: PSNR dB / judge adherence / measured latency "
               "speedup / steps sampled (first searcher seed; the mean PSNR over seeds in brackets).", "",
           "| searcher · space | " + " | ".join(f">= {s:g}x" for s in SPEEDUPS) + " |",
           "|---|" + "---|" * len(SPEEDUPS)]
    md += [f"| {label} | " + " | ".join(front_cell(rs, s) for s in SPEEDUPS) + " |" for label, rs in runs.items()]
    pooled = {sp: [p for rs in runs.values() for r in rs if r["space"] == sp for p in r["points"]]
              for sp in args.spaces}
    if "cache" in pooled and len(pooled) > 1:
        md += ["", "## Does the joint front dominate the cache-only front past 2.5x?", "",
               "Best PSNR at each MAC speedup over every run of the space (all searchers and seeds).", "",
               "| space | " + " | ".join(f">= {s:g}x" for s in DOMINANCE_AT) + " |",
               "|---|" + "---|" * len(DOMINANCE_AT)]
        best = {sp: [best_at(pts, s) for s in DOMINANCE_AT] for sp, pts in pooled.items()}
        for sp, picks in best.items():
            md.append(f"| {sp} | " + " | ".join(f"{p['psnr']:.2f}" if p else "–" for p in picks) + " |")
        for sp in pooled:
            if sp == "cache":
                continue
            pairs = [(a, b) for a, b in zip(best[sp], best["cache"]) if a is not None or b is not None]
            better = sum(1 for a, b in pairs if a is not None and (b is None or a["psnr"] > b["psnr"]))
            equal = sum(1 for a, b in pairs if a is not None and b is not None and a["psnr"] == b["psnr"])
            md.append(f"\n{sp} vs cache-only, at the {len(pairs)} speedups past 2.5x that either reaches: better at "
                      f"{better}, equal at {equal} (the same schedule), worse at {len(pairs) - better - equal}.")
    if boss:
        head, rows = boss[0], boss[1:]
        labels = ["boss", "uniform (grid)", "uniform (own K steps)"]
        md += ["", "## BOSS-style DP vs uniform K-step spacing (all compute)", "",
               f"One-jump costs on the study's {len(head['grid'])} {head['kind']} took {head['jump_costs_s']:.1f} s. "
               "PSNR dB / judge adherence per K.", "",
               "| K | MAC speedup | " + " | ".join(labels) + " | BOSS path |",
               "|---|---|" + "---|" * len(labels) + "---|"]
        wins = {lab: 0 for lab in labels[1:]}
        for row in rows:
            cells = []
            for lab in labels:
                r = row[lab]
                cells.append("failed" if r["psnr"] is None else
                             f"{r['psnr']:.2f}" + (f" / {r['adherence']:.3f}" if r["adherence"] is not None else ""))
            boss_psnr = row["boss"]["psnr"]
            for lab in labels[1:]:
                if boss_psnr is not None and (row[lab]["psnr"] is None or boss_psnr > row[lab]["psnr"]):
                    wins[lab] += 1
            md.append(f"| {row['steps']} | {row['boss']['mac']:.2f}x | " + " | ".join(cells)
                      + f" | {row['boss_path']} |")
        md.append("\nBOSS beats " + ", ".join(f"{lab} at {n} of {len(rows)} K" for lab, n in wins.items()) + ".")
    md += ["", f"Distinct schedules scored: {meta['memo_misses']} (memo hits {meta['memo_hits']}); wall "
               f"{meta['total_s'] / 60:.0f} min; load average {meta['load_avg_start'][0]:.1f} -> "
               f"{meta['load_avg_end'][0]:.1f} on {meta['cpu_count']} cores.", ""]
    return "\n".join(md)


def study_setup(args: argparse.Namespace) -> tuple[dict, list, str]:
    """The evaluation, objectives and database every search benchmark on the embedded model shares."""
    evaluation = {"model": "embedded", "num_prompts": args.prompts, "seeds": args.image_seeds, "n_thumbnails": 0,
                  "num_inference_steps": args.steps, "metrics": ["psnr", "ssim", "latent_mse", "judge_adherence"],
                  "latency": {"warmup": 0, "repeats": 1}}
    objectives = [{"name": "psnr", "reference": args.reference}, {"name": "mac_speedup", "reference": 1.0}]
    return evaluation, objectives, args.db or str(Path(tempfile.mkdtemp()) / "bench.db")


def memo_pool(evaluation: dict, objectives: list) -> MemoPool:
    """One model load for every study; identical schedules scored once."""
    return MemoPool(make_pool(validate_config({"evaluation": evaluation, "searcher": {"name": "random"},
                                               "objectives": objectives})))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=int, default=128)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--searchers", nargs="+", default=["dp", "ecad", "dp+ecad"], choices=sorted(SETTINGS))
    ap.add_argument("--spaces", nargs="+", default=[k for k in SPACES if k != "cache+forecast"], choices=list(SPACES))
    ap.add_argument("--steps", type=int, default=20, help="the study's steps N (the reference run)")
    ap.add_argument("--min-steps", type=int, default=5, help="fewest steps a timestep schedule samples")
    ap.add_argument("--ks", type=int, nargs="*", default=None, help="BOSS vs uniform at these K (default all)")
    ap.add_argument("--no-boss", action="store_true", help="skip part 2")
    add_study_arguments(ap, ROOT)
    args = ap.parse_args()

    evaluation, objectives, db = study_setup(args)
    load0, t0 = os.getloadavg(), time.time()
    pool = memo_pool(evaluation, objectives)
    runs = run_spaces(args, pool, evaluation, objectives, db)
    boss = [] if args.no_boss else run_boss_vs_uniform(args, pool)
    meta = run_meta("search_timesteps.py", t0, load0, pool, budget=args.budget, evaluation=evaluation,
                    settings=SETTINGS)
    text = report(args, runs, boss, meta)
    write_results(args.out, "search_timesteps", {"meta": meta, "runs": runs, "boss_vs_uniform": boss}, text,
                  f"embedded model: hypervolume (PSNR >= {args.reference} dB x MAC speedup) vs evaluations, by space")
    print(text)
    pool.close()


if __name__ == "__main__":
    main()
