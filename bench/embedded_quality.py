"""Quality of the embedded default model, all-compute and under hand-made cache schedules.

    python bench/embedded_quality.py            # writes bench/results/embedded_quality.txt + docs/embedded_grid.png

Reports, measured side by side in one run (machines here are noisy):
- judge accuracy per attribute on fresh generator images;
- all-compute, 20 steps, CFG 4: adherence on the held-out and calibration prompt sets (x default seeds),
  per-attribute accuracy, Frechet distance (judge features) to real generator images;
- sampling time for 32 images x 20 steps with CFG;
- caching matters: PSNR vs all-compute, adherence and MAC speedup of schedules from mild to aggressive;
- a captioned sample grid of held-out prompts.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluators.embedded import data, default_seeds, frechet_distance, load_embedded_pipeline, load_judge, prompt_set  # noqa: E402
from evaluators.embedded.caching import REFERENCE_RULES, reference_schedule  # noqa: E402
from schedules import apply_schedule, mac_speedup, measure_cost_table  # noqa: E402

STEPS, CFG = 20, 4.0


def generate(pipe, prompts: list[str], seed: int) -> torch.Tensor:
    """One image per prompt, every prompt with its own generator seeded ``seed`` (prompt x seed grid)."""
    gens = [torch.Generator().manual_seed(seed) for _ in prompts]
    return pipe(prompts, num_inference_steps=STEPS, guidance_scale=CFG, generator=gens, output_type="pt").images


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for images in [0, 1]."""
    mse = (a - b).pow(2).flatten(1).mean(1).clamp(min=1e-10)
    return 10 * torch.log10(1 / mse)


def real_like(prompts: list[str], rng: np.random.Generator) -> torch.Tensor:
    """Real generator images with the prompts' stated attributes (unstated ones drawn at random)."""
    stated = [data.parse_prompt(p) for p in prompts]
    attrs = {k: np.array([s.get(k, int(rng.integers(len(v)))) for s in stated]) for k, v in data.ATTRIBUTES.items()}
    return data.render(attrs, rng)


def save_grid(images: torch.Tensor, captions: list[str], path: Path, cols: int = 4, scale: int = 6) -> None:
    """Captioned grid (nearest-neighbour upscaled so the 24 px pixels stay honest)."""
    from PIL import Image, ImageDraw

    cell_w, img_px, text_h = 230, data.IMAGE_SIZE * scale, 52
    rows = (len(captions) + cols - 1) // cols
    grid = Image.new("RGB", (cols * cell_w, rows * (img_px + text_h + 10)), "white")
    draw = ImageDraw.Draw(grid)
    arr = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    for i, (im, cap) in enumerate(zip(arr, captions)):
        x, y = (i % cols) * cell_w, (i // cols) * (img_px + text_h + 10)
        grid.paste(Image.fromarray(im).resize((img_px, img_px), Image.NEAREST), (x + (cell_w - img_px) // 2, y + 5))
        for j, line in enumerate(textwrap.wrap(cap, 37)[:4]):
            draw.text((x + 4, y + img_px + 8 + 11 * j), line, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/embedded_quality.txt")
    p.add_argument("--grid", type=Path, default=ROOT / "docs/embedded_grid.png")
    p.add_argument("--seeds", type=int, nargs="*", default=None, help="default: the shipped default seeds")
    args = p.parse_args()
    seeds = args.seeds if args.seeds is not None else default_seeds()
    torch.manual_seed(0)
    pipe, judge = load_embedded_pipeline(), load_judge()
    lines = [
        "# python bench/embedded_quality.py",
        f"# {time.strftime('%Y-%m-%d %H:%M')}  {platform.processor() or platform.machine()}  torch {torch.__version__}  "
        f"threads {torch.get_num_threads()}",
        f"# model: {sum(p.numel() for p in pipe.transformer.parameters()):,} params, {pipe.config['image_size']} px, "
        f"trained {pipe.config['training']['steps_done']} steps; {STEPS} steps, CFG {CFG}, seeds {seeds}",
        "",
    ]

    def out(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    # judge accuracy on fresh generator images
    rng = np.random.default_rng(2024)
    attrs = data.sample_attributes(4000, rng, "any")
    pred = judge.predict(data.render(attrs, rng))
    acc = {k: float((pred[k].numpy() == attrs[k]).mean()) for k in data.ATTRIBUTES}
    out("judge accuracy, 4000 fresh generator images: " + ", ".join(f"{k} {v:.3f}" for k, v in acc.items()))

    # all-compute adherence and Frechet distance
    feats_real_ref = None
    for name in ("heldout", "calibration"):
        prompts = prompt_set(name)
        imgs = torch.cat([generate(pipe, prompts, s) for s in seeds])
        all_prompts = prompts * len(seeds)
        adh = judge.adherence(imgs, all_prompts)
        target = data.attributes_to_tensor([data.parse_prompt(q) for q in all_prompts])
        pr = judge.predict(imgs)
        per = {k: float((pr[k] == target[k])[target[k] >= 0].float().mean()) for k in data.ATTRIBUTES if (target[k] >= 0).any()}
        real = torch.cat([real_like(prompts, rng) for _ in seeds])
        real2 = torch.cat([real_like(prompts, rng) for _ in seeds])
        fd = frechet_distance(judge.features(imgs), judge.features(real))
        fd_floor = frechet_distance(judge.features(real2), judge.features(real))
        out(f"all-compute {name:11s} ({len(all_prompts)} images): adherence {adh.mean():.3f} "
            f"(all attributes right in {(adh == 1).float().mean():.0%} of images); FD to real {fd:.2f} "
            f"(real vs real {fd_floor:.2f})")
        out("    per attribute: " + ", ".join(f"{k} {v:.3f}" for k, v in per.items()))
        if name == "heldout":
            heldout_imgs, feats_real_ref = imgs, judge.features(real)
            save_grid(imgs[:16], prompts[:16], args.grid)

    # sampling time: 32 images x 20 steps with CFG
    cal = prompt_set("calibration")[:32]
    generate(pipe, cal[:4], 0)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        generate(pipe, cal, 0)
        times.append(time.perf_counter() - t0)
    out(f"sampling time, 32 images x {STEPS} steps, batched CFG (batch 64 per call): median {statistics.median(times):.2f} s "
        f"(runs {', '.join(f'{t:.2f}' for t in times)})")

    # caching matters
    out("")
    out(f"cache schedules on the held-out set (32 prompts x seed {seeds[0]}), PSNR vs all-compute with the same seed:")
    out(f"{'schedule':14s} {'MAC speedup':>11s} {'PSNR dB':>8s} {'adherence':>9s} {'FD':>7s} {'time s':>7s}  description")
    prompts = prompt_set("heldout")
    table = measure_cost_table(pipe, lambda: pipe(prompts[:1], num_inference_steps=1, guidance_scale=CFG))
    ref = heldout_imgs[: len(prompts)]
    for name, (_, desc) in REFERENCE_RULES.items():
        sched = reference_schedule(pipe, name, STEPS, CFG)
        with apply_schedule(pipe, sched):
            t0 = time.perf_counter()
            imgs = generate(pipe, prompts, seeds[0])
            dt = time.perf_counter() - t0
        q = psnr(imgs, ref)
        q_str = "inf" if torch.isinf(q).all() or (imgs == ref).all() else f"{q.mean():.1f}"
        fd = frechet_distance(judge.features(imgs), feats_real_ref[: len(prompts)])
        out(f"{name:14s} {mac_speedup(sched, table):11.2f} {q_str:>8s} {judge.adherence(imgs, prompts).mean():9.3f} "
            f"{fd:7.2f} {dt:7.2f}  {desc}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out} and {args.grid}")


if __name__ == "__main__":
    main()
