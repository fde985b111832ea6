"""Search cost on the embedded model: a plain ECAD-style search against ours with its levers on.

    python bench/search_cost.py                  # plain ECAD to 1500 evaluations; ours and each lever alone
    python bench/search_cost.py --plain-budget 60 --budget 40 --lever-budget 40 --out /tmp/c   # a smoke run

Plain ECAD configuration: NSGA-II with ECAD's operators (population 72, 4-point crossover, bit-flip
mutation, heuristic seeds), every candidate on the full (prompt, seed) set, no prefix sharing, no
racing, no surrogate. Ours: the DP searcher, then ECAD seeded with its front (`dp+ecad`), with prefix
sharing (evaluators.trajectory), racing (evaluators.racing) and the surrogate screening ECAD's
offspring (search.surrogate) — stopped once it reaches the plain run's final hypervolume or its
budget. Each lever is also run alone on plain ECAD.

All studies share one model load, one evaluation setting (8 calibration prompts x 2 seeds, batches
of 4 pairs so racing can stop between them, PSNR vs all-compute, 20 steps) and the on-disk
references; the prefix cache is emptied between studies. Per evaluation we record what was really
generated: image-equivalents (denoising steps run / 20, summed over pairs: a prefix-resumed or raced
candidate counts only what it ran) and evaluator-seconds (its start to finish on the worker).
Reported: hypervolume (PSNR >= 15 dB x MAC speedup, full results only) against evaluations, images
and evaluator-seconds; the images and seconds each run needed to reach the plain run's final
hypervolume (and milestones of it), and their ratio to the plain run's; the surrogate's rank
correlation with the measured PSNR; and the GPU-hours estimate for a PixArt-alpha search (README).

Writes bench/results/search_cost.{json,md,png}.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from search_plot import run_meta, write_results  # noqa: E402

from evaluators.trajectory import PrefixCache  # noqa: E402
from schedules.objectives import hypervolume_history  # noqa: E402
from search.config import validate_config  # noqa: E402
from search.study import make_pool, run_study  # noqa: E402
from search.surrogate import rank_correlation  # noqa: E402

STEPS = 20
EVALUATION = {"model": "embedded", "num_prompts": 8, "seeds": [0, 1], "batch_size": 4, "n_thumbnails": 0,
              "num_inference_steps": STEPS, "metrics": ["psnr"],
              "latency": {"warmup": 0, "repeats": 1, "reference_every": 0}}
OBJECTIVES = [{"name": "psnr", "reference": 15.0}, {"name": "mac_speedup", "reference": 1.0}]
PLAIN_ECAD = {"population": 72, "step_mutation_prob": 0.0}
#          name            searcher   settings                                  sharing racing
RUNS = {"plain ECAD":      ("ecad", PLAIN_ECAD, False, False),
        "ours (all levers)": ("dp+ecad", {**PLAIN_ECAD, "step_mutation_prob": 0.3, "screen": 3.0}, True, True),
        "sharing only":    ("ecad", PLAIN_ECAD, True, False),
        "racing only":     ("ecad", PLAIN_ECAD, False, True),
        "surrogate only":  ("ecad", {**PLAIN_ECAD, "screen": 3.0}, False, False)}
DP_SETTINGS = {"max_heuristics": 16, "candidates": 12, "refine_rounds": 2}


class CountingPool:
    """The shared pool, recording every result in order (nothing memoised: costs are what they are)."""

    def __init__(self, pool: Any) -> None:
        self.pool, self.log = pool, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pool, name)

    def evaluate(self, schedules, races=None):
        for r in (self.pool.evaluate(schedules, races=races) if races else self.pool.evaluate(schedules)):
            self.log.append(r)
            yield r


def study(name: str, label: str, searcher: str, settings: dict, sharing: bool, racing: bool, budget: int,
          pool: CountingPool, db: str, seeds_from: list[str] = ()) -> dict:
    evaluator = pool.pool.evaluator
    evaluator.prefixes = PrefixCache(int(512 * 2**20)) if sharing else None
    cfg = validate_config({"study": name, "evaluation": {**EVALUATION, "sharing": {"enabled": sharing}},
                           "objectives": OBJECTIVES, "budget": {"evaluations": budget},
                           "searcher": {"name": searcher, "seed": 0, "settings": settings},
                           "racing": {"enabled": racing}, "seed_studies": list(seeds_from)})
    start = len(pool.log)
    t = time.time()
    _, outcome = run_study(cfg, db=db, pool=pool, show_progress=False, log=lambda m: None)
    results = pool.log[start:]
    print(f"{label}: {len(results)} evaluations, HV {outcome.hypervolume:.3f}, {outcome.reason}, "
          f"{time.time() - t:.0f} s", flush=True)
    return {"label": label, "study": name, "results": results}


def curves(results: list) -> dict:
    """Hypervolume after each evaluation, with cumulative image-equivalents and evaluator-seconds."""
    points, images, seconds = [], [], []
    total_img = total_s = 0.0
    for r in results:
        total_img += (r.image_steps or 0) / STEPS
        total_s += (r.finished_at or 0) - (r.started_at or 0)
        points.append((r.objective("psnr"), r.mac_speedup) if r.ok and r.objective("psnr") is not None else None)
        images.append(total_img)
        seconds.append(total_s)
    hv = hypervolume_history(points, [15.0, 1.0], [True, True])
    return {"hv": hv, "images": images, "seconds": seconds}


def reach(curve: dict, target: float) -> tuple[int | None, float | None, float | None]:
    for i, v in enumerate(curve["hv"]):
        if v >= target - 1e-9:
            return i + 1, curve["images"][i], curve["seconds"][i]
    return None, None, None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--plain-budget", type=int, default=1500)
    ap.add_argument("--budget", type=int, default=400, help="ours: stops earlier at the plain run's final HV")
    ap.add_argument("--lever-budget", type=int, default=600)
    ap.add_argument("--db", default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    db = args.db or str(Path(tempfile.mkdtemp()) / "cost.db")
    load0, t0 = os.getloadavg(), time.time()
    pool = CountingPool(make_pool(validate_config({"evaluation": EVALUATION, "searcher": {"name": "random"},
                                                   "objectives": OBJECTIVES})))
    runs: dict[str, dict] = {}
    for label, (searcher, settings, sharing, racing) in RUNS.items():
        budget = args.plain_budget if label == "plain ECAD" else args.budget if label.startswith("ours") \
            else args.lever_budget
        name = "cost-" + label.split()[0]
        if searcher == "dp+ecad":
            dp = study(name + "-dp", label + " (dp)", "dp", DP_SETTINGS, sharing, racing, budget, pool, db)
            rest = study(name, label, "ecad", settings, sharing, racing, max(1, budget - len(dp["results"])),
                         pool, db, seeds_from=[name + "-dp"])
            runs[label] = {"label": label, "results": dp["results"] + rest["results"]}
        else:
            runs[label] = study(name, label, searcher, settings, sharing, racing, budget, pool, db)
    meta = run_meta("search_cost.py", t0, load0, pool.pool, evaluation=EVALUATION, runs=list(RUNS))
    pool.close()
    text, doc = report(args, runs, meta)
    write_results(args.out, "search_cost", doc, text, "embedded model: hypervolume vs evaluations (search cost)")
    print(text)


def report(args, runs: dict, meta: dict) -> tuple[str, dict]:
    c = {label: curves(r["results"]) for label, r in runs.items()}
    plain = c["plain ECAD"]
    final = plain["hv"][-1] if plain["hv"] else 0.0
    milestones = [f * final for f in (0.9, 0.95, 1.0)]
    md = [f"# Search cost on the embedded model ({meta['date']})", "",
          f"`{meta['command']}` — 8 calibration prompts x 2 seeds in batches of 4, PSNR vs all-compute, 20 steps; "
          "hypervolume of full results (PSNR >= 15 dB x MAC speedup). Images = image-equivalents generated "
          "(denoising steps run / 20).", "",
          "| run | evaluations | full / raced | images | evaluator-s | final HV |", "|---|---|---|---|---|---|"]
    for label, r in runs.items():
        res = r["results"]
        raced = sum(1 for x in res if x.status == "raced")
        cc = c[label]
        md.append(f"| {label} | {len(res)} | {len(res) - raced} / {raced} | {cc['images'][-1]:.0f} | "
                  f"{cc['seconds'][-1]:.0f} | {cc['hv'][-1]:.3f} |")
    md += ["", f"## To reach the plain run's hypervolume ({final:.3f} after {len(plain['hv'])} evaluations)", "",
           "| run | " + " | ".join(f"{m / final:.0%} of it: evals / images / s" for m in milestones)
           + " | images vs plain at 100% | seconds vs plain at 100% |", "|---|" + "---|" * (len(milestones) + 2)]
    base = reach(plain, final)
    ratios = {}
    for label in runs:
        cells = []
        for m in milestones:
            n, img, sec = reach(c[label], m)
            cells.append("not reached" if n is None else f"{n} / {img:.0f} / {sec:.0f}")
        n, img, sec = reach(c[label], final)
        ratios[label] = (img / base[1] if img is not None else None, sec / base[2] if sec is not None else None)
        r_img = f"{ratios[label][0]:.3f}" if ratios[label][0] is not None else "–"
        r_sec = f"{ratios[label][1]:.3f}" if ratios[label][1] is not None else "–"
        md.append(f"| {label} | " + " | ".join(cells) + f" | {r_img} | {r_sec} |")
    md += ["", "Goal: ours <= 1/10 of the plain run's images and evaluator-seconds.", "",
           "## Surrogate rank correlation (predicted vs measured PSNR of screened candidates)", ""]
    for label, r in runs.items():
        pairs = [(x.schedule.provenance.get("predicted_psnr"), x.objective("psnr")) for x in r["results"]
                 if x.schedule.provenance.get("predicted_psnr") is not None and x.objective("psnr") is not None]
        if pairs:
            rho = rank_correlation([p for p, _ in pairs], [q for _, q in pairs])
            md.append(f"- {label}: Spearman {rho if rho is None else round(rho, 3)} over {len(pairs)} candidates")
    md += ["", f"Wall {meta['total_s'] / 60:.0f} min; load average {meta['load_avg_start'][0]:.1f} -> "
               f"{meta['load_avg_end'][0]:.1f}.", ""]
    doc = {"meta": meta, "ratios": ratios,
           "runs": {label: [{"curve": c[label]["hv"], **{k: c[label][k] for k in ("images", "seconds")}}]
                    for label in runs}}
    return "\n".join(md), doc


if __name__ == "__main__":
    main()
