"""torch.compile with schedules attached, on the embedded model (CPU, inductor): what it gains here.

Eager vs `torch.compile(transformer, dynamic=False)` for the all-compute pipeline and FORA-2/3/6,
timed in interleaved rounds (one torch thread) after every configuration has compiled its graphs.
Reports compile time, graphs built, wall speedup of compiled over eager per configuration, and the
MAC-relative speedups in both modes.

    OMP_NUM_THREADS=1 python bench/compile_speed.py [--rounds 5] [--batch 1] [--out bench/results/compile_speed.txt]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch._dynamo  # noqa: E402
from _common import header, report  # noqa: E402

from evaluators.embedded import load_embedded_pipeline, prompt_set  # noqa: E402
from schedules import SamplingSpec, Schedule, apply_schedule, describe, mac_speedup, measure_cost_table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch._dynamo.config.cache_size_limit = 64
    pipe = load_embedded_pipeline()
    spec = describe(pipe)
    prompts = prompt_set("heldout")[: args.batch]
    steps = 20
    table = measure_cost_table(pipe, lambda: pipe(prompts, num_inference_steps=2, output_type="pt"))
    eager_model = pipe.transformer
    compiled_model = torch.compile(eager_model, dynamic=False)
    schedules: dict[str, Schedule | None] = {"all-compute (no schedule)": None,
                                             **{f"FORA-{n}": Schedule.periodic(spec, SamplingSpec(steps), n) for n in (2, 3, 6)}}

    def run(model: torch.nn.Module, schedule: Schedule | None) -> tuple[float, torch.Tensor]:
        pipe.transformer = model
        handle = apply_schedule(pipe, schedule) if schedule is not None else None
        gens = [torch.Generator().manual_seed(0) for _ in prompts]
        try:
            t0 = time.perf_counter()
            images = pipe(prompts, num_inference_steps=steps, generator=gens, output_type="pt").images
            return time.perf_counter() - t0, images
        finally:
            if handle is not None:
                handle.remove()
            pipe.transformer = eager_model

    # apply_schedule finds the denoiser through pipe.transformer; the compiled wrapper shares the
    # eager module's submodules, so hooks attach to the same blocks either way
    compile_s, max_diff = {}, {}
    torch._dynamo.utils.counters.clear()
    for name, s in schedules.items():
        _, eager_images = run(eager_model, s)
        t0 = time.perf_counter()
        _, compiled_images = run(compiled_model, s)
        compile_s[name] = time.perf_counter() - t0
        max_diff[name] = float((compiled_images - eager_images).abs().max())
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    times = {(name, mode): [] for name in schedules for mode in ("eager", "compiled")}
    for _ in range(args.rounds):
        for name, s in schedules.items():
            times[(name, "eager")].append(run(eager_model, s)[0])
            times[(name, "compiled")].append(run(compiled_model, s)[0])
    med = {k: statistics.median(v) for k, v in times.items()}
    base = "all-compute (no schedule)"
    lines = [header("compile_speed.py", "inductor on CPU"),
             f"# embedded model, batch {args.batch} (x2 CFG), 20 steps; {graphs} graphs compiled in all; median of "
             f"{args.rounds} interleaved rounds",
             f"{'configuration':26s} {'MAC x':>6s} {'eager ms':>9s} {'compiled ms':>11s} {'compiled/eager':>14s} "
             f"{'wall x eager':>12s} {'wall x compiled':>15s} {'first call s':>12s} {'max |diff|':>10s}"]
    for name, s in schedules.items():
        e, c = med[(name, "eager")], med[(name, "compiled")]
        lines.append(f"{name:26s} {mac_speedup(s, table) if s else 1.0:6.2f} {e * 1e3:9.1f} {c * 1e3:11.1f} "
                     f"{e / c:14.2f} {med[(base, 'eager')] / e:12.2f} {med[(base, 'compiled')] / c:15.2f} "
                     f"{compile_s[name]:12.1f} {max_diff[name]:10.2e}")
    lines.append(f"# command: OMP_NUM_THREADS=1 python bench/compile_speed.py --rounds {args.rounds} --batch {args.batch}")
    report(lines, args.out)


if __name__ == "__main__":
    main()
