"""The latency cost model against measured latency, on the embedded model.

Fits `schedules.latency` on its calibration schedules, then predicts >= 20 other schedules (FORA
intervals, component-wise and warm-up heuristics, forecasts, seeded random mixes at several
densities) and times them, interleaved round-robin with one torch thread, so load changes hit all
alike. Reports the median absolute relative error (goal <= 5% on a quiet machine).

    OMP_NUM_THREADS=1 python bench/latency_model.py [--batch 1] [--rounds 5] [--out bench/results/latency_model.txt]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluators.embedded.pipeline import load_embedded_pipeline  # noqa: E402
from schedules import SamplingSpec, Schedule, apply_schedule, describe, mac_speedup, measure_cost_table  # noqa: E402
from schedules.latency import measure_latency_table, random_schedule, validate  # noqa: E402
from _common import header, report  # noqa: E402

PROMPT = "a small blue square at the top left on a yellow background"


def validation_schedules(spec, sampling, n: int = 24) -> list[tuple[str, Schedule]]:
    steps = sampling.num_inference_steps
    pairs = [(g.name, c) for g in spec.block_groups for c in g.components]
    periodic = Schedule.periodic
    out = [(f"fora-{k}", periodic(spec, sampling, k)) for k in (4, 5, 6)]
    out += [(f"fora-{k} warm-up 4", periodic(spec, sampling, k, warmup=4)) for k in (2, 3)]
    out += [(f"{c} every-3", periodic(spec, sampling, 3, only=[(g, c)])) for g, c in pairs]
    out += [(f"forecast every-{k}", periodic(spec, sampling, k, mode="F", warmup=2)) for k in (2, 4)]
    out += [("first 4 steps only", periodic(spec, sampling, steps, warmup=4))]
    rng = random.Random(12345)
    i = 0
    while len(out) < n:
        p = [0.15, 0.35, 0.55, 0.75][i % 4]
        out.append((f"random p={p} #{i}", random_schedule(spec, sampling, rng, p, "0F" if i % 3 == 2 else "0")))
        i += 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calibration-repeats", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    pipe = load_embedded_pipeline()
    spec = describe(pipe)
    prompts = [PROMPT] * args.batch
    sampling = SamplingSpec(args.steps, type(pipe.scheduler).__name__, cfg="batched")
    table = measure_cost_table(pipe, lambda: pipe(prompts, num_inference_steps=2, output_type="pt"),
                               batch_size=args.batch)

    def time_run(schedule: Schedule) -> float:
        gens = [torch.Generator().manual_seed(i) for i in range(args.batch)]
        with apply_schedule(pipe, schedule):
            t0 = time.perf_counter()
            pipe(prompts, num_inference_steps=schedule.num_steps, generator=gens, output_type="pt")
            return time.perf_counter() - t0

    time_run(Schedule.all_compute(spec, sampling))  # warm-up
    t0 = time.perf_counter()
    model = measure_latency_table(time_run, spec, sampling, table, repeats=args.calibration_repeats,
                                  batch_size=args.batch)
    fit_seconds = time.perf_counter() - t0
    named = validation_schedules(spec, sampling)
    reference = ("all-compute (reference)", Schedule.all_compute(spec, sampling))
    times: dict[str, list[float]] = {name: [] for name, _ in [reference, *named]}
    for _ in range(args.rounds):
        for name, s in [reference, *named]:
            times[name].append(time_run(s))
    measured = [(s, statistics.median(times[name])) for name, s in named]
    errors = validate(model, measured)
    full = statistics.median(times[reference[0]])
    lines = [header("latency_model.py"),
             f"# embedded model, batch {args.batch} (x2 CFG), {args.steps} steps; calibration: "
             f"{model.calibration_runs} schedules x {args.calibration_repeats} repeats in {fit_seconds:.1f} s, "
             f"fit error (median) {model.fit_error:.2%}; validation: {len(named)} other schedules, "
             f"median of {args.rounds} interleaved rounds",
             f"{'schedule':28s} {'MAC x':>6s} {'measured s':>10s} {'predicted s':>11s} {'error':>7s} "
             f"{'wall x':>7s} {'model x':>7s}"]
    for (name, s), (_, t) in zip(named, measured):
        p = model.predict(s)
        lines.append(f"{name:28s} {mac_speedup(s, table):6.2f} {t:10.4f} {p:11.4f} {(p - t) / t:+7.1%} "
                     f"{full / t:7.2f} {model.speedup(s):7.2f}")
    lines.append(f"median |error| {errors['median_abs_error']:.2%}  p90 {errors['p90_abs_error']:.2%}  "
                 f"max {errors['max_abs_error']:.2%}  (goal: median <= 5%)")
    lines.append("fitted seconds per piece: " + ", ".join(f"{k}={v * 1e3:.3f}ms" for k, v in model.seconds.items()))
    lines.append(f"# command: OMP_NUM_THREADS=1 python bench/latency_model.py --batch {args.batch} "
                 f"--rounds {args.rounds}")
    report(lines, args.out)


if __name__ == "__main__":
    main()
