"""Runtime overhead and realized vs MAC speedup, measured side by side in one run.

A random-weight PixArt-shaped transformer of realistic proportions for a 2-core CPU (12 blocks, hidden
384, 32x32 latents, batched CFG = batch 2) runs a 20-step trajectory. Configurations are interleaved
round-robin and each figure is the median over rounds, so machine noise hits all of them alike.

    OMP_NUM_THREADS=1 python bench/runtime_overhead.py [--rounds 5] [--steps 20] [--out bench/results/runtime_overhead.txt]

Goals: plain vs all-compute overhead <= 1.02; realized/MAC speedup >= 0.95 with the block fast paths
(rows "no fast paths" keep every block's own forward, for comparison).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, report  # noqa: E402
from diffusers import PixArtTransformer2DModel  # noqa: E402

from schedules import (  # noqa: E402
    SamplingSpec, Schedule, apply_schedule, describe, mac_speedup, measure_cost_table,
)


def build(blocks: int, hidden: int, latent: int, text_tokens: int):
    torch.manual_seed(0)
    heads = hidden // 64
    model = PixArtTransformer2DModel(
        sample_size=latent, num_layers=blocks, attention_head_dim=64, num_attention_heads=heads,
        in_channels=4, out_channels=8, caption_channels=384, cross_attention_dim=hidden,
        norm_type="ada_norm_single").eval()
    x = torch.randn(2, 4, latent, latent)
    text = torch.randn(2, text_tokens, 384)
    cond = {"resolution": None, "aspect_ratio": None}
    timesteps = torch.linspace(999, 0, 50).long()

    def trajectory(steps: int) -> torch.Tensor:
        h = x
        with torch.no_grad():
            for i in range(steps):
                t = timesteps[i * len(timesteps) // steps].repeat(2)
                out = model(h, encoder_hidden_states=text, timestep=t, added_cond_kwargs=cond).sample
                h = h - 0.01 * out[:, :4]
        return h

    def one_call() -> None:
        model(x, encoder_hidden_states=text, timestep=timesteps[:1].repeat(2), added_cond_kwargs=cond)
    return model, trajectory, one_call


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--latent", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    model, trajectory, one_call = build(args.blocks, args.hidden, args.latent, text_tokens=32)
    spec = describe(model)
    steps = args.steps
    table = measure_cost_table(model, one_call)
    every_step_but_last = {(g.name, c): ["1" * g.num_blocks] * (steps - 1) + ["0" * g.num_blocks]
                           for g in spec.block_groups for c in g.components}
    fast, slow = True, False
    configs: dict[str, tuple[Schedule | None, bool]] = {
        "plain": (None, fast),
        "all-compute schedule": (Schedule.all_compute(spec, SamplingSpec(steps)), fast),
        "hooked, reuse last step only": (Schedule.from_masks(spec, SamplingSpec(steps), every_step_but_last), fast),
        "FORA every-2": (Schedule.periodic(spec, SamplingSpec(steps), 2), fast),
        "FORA every-3": (Schedule.periodic(spec, SamplingSpec(steps), 3), fast),
        "FORA every-6": (Schedule.periodic(spec, SamplingSpec(steps), 6), fast),
        "FORA every-2, no fast paths": (Schedule.periodic(spec, SamplingSpec(steps), 2), slow),
        "FORA every-3, no fast paths": (Schedule.periodic(spec, SamplingSpec(steps), 3), slow),
        "FORA every-6, no fast paths": (Schedule.periodic(spec, SamplingSpec(steps), 6), slow),
        "cross-attention only every-4": (Schedule.periodic(spec, SamplingSpec(steps), 4, only=[("transformer_blocks", "attn2")]), fast),
    }
    times: dict[str, list[float]] = {k: [] for k in configs}
    trajectory(2)  # warm-up
    for _ in range(args.rounds):
        for name, (schedule, fast_paths) in configs.items():
            if schedule is None:
                times[name].append(timed(lambda: trajectory(steps)))
            else:
                with apply_schedule(model, schedule, fast_paths=fast_paths):
                    times[name].append(timed(lambda: trajectory(steps)))

    med = {k: statistics.median(v) for k, v in times.items()}
    lines = [
        header("runtime_overhead.py"),
        f"# model: PixArtTransformer2DModel blocks={args.blocks} hidden={args.hidden} latent={args.latent}x"
        f"{args.latent} batch=2 (CFG) steps={steps}; median of {args.rounds} interleaved rounds",
        f"{'configuration':34s} {'seconds':>8s} {'MAC speedup':>12s} {'wall speedup':>13s} {'realized/MAC':>13s}",
    ]
    ratios = {}
    for name, (schedule, _) in configs.items():
        wall = med["plain"] / med[name]
        macs = mac_speedup(schedule, table) if schedule is not None else 1.0
        ratios[name] = wall / macs
        lines.append(f"{name:34s} {med[name]:8.3f} {macs:12.3f} {wall:13.3f} {wall / macs:13.3f}")
    overhead = med["all-compute schedule"] / med["plain"]
    hooked = med["hooked, reuse last step only"] / med["plain"]
    hooked_ideal = 1 / mac_speedup(configs["hooked, reuse last step only"][0], table)
    lines.append(f"overhead ratio all-compute/plain = {overhead:.3f}  (goal <= 1.02)")
    lines.append(f"fully hooked schedule time / plain = {hooked:.3f}  (MAC-ideal {hooked_ideal:.3f})")
    fora = [ratios[k] for k in ratios if k.startswith("FORA") and "no fast" not in k]
    lines.append(f"realized/MAC of the FORA schedules with fast paths: min {min(fora):.3f}  (goal >= 0.95)")
    report(lines, args.out)


if __name__ == "__main__":
    main()
