"""TRAINING.md and the loss-curve PNGs, rebuilt from the records that `train` saves next to the weights.

Kept apart from the training loop so the record can be regenerated (and read) without importing the
optimiser code, and so rewording it never touches what decides the weights.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .model import DENOISER_CONFIG, WEIGHTS_DIR

PACKAGE_DIR = Path(__file__).parent
TRAINING_MD = PACKAGE_DIR / "TRAINING.md"


def plot_curve(points: list[tuple[float, float]], path: Path, title: str, xlabel: str) -> None:
    """A minimal line plot with PIL (matplotlib is not a dependency)."""
    from PIL import Image, ImageDraw

    w, h, m = 640, 360, 50
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    xs = [p[0] for p in points]
    ys = [math.log10(max(p[1], 1e-6)) for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    px = lambda x: m + (x - x0) / (x1 - x0) * (w - 2 * m)  # noqa: E731
    py = lambda y: h - m - (y - y0) / (y1 - y0) * (h - 2 * m)  # noqa: E731
    d.rectangle([m, m, w - m, h - m], outline="black")
    d.line([(px(x), py(y)) for x, y in zip(xs, ys)], fill=(30, 90, 200), width=2)
    d.text((m, 15), title, fill="black")
    d.text((w // 2 - 40, h - 30), xlabel, fill="black")
    for frac in (0.0, 0.5, 1.0):
        yv = y0 + frac * (y1 - y0)
        d.text((5, py(yv) - 6), f"{10 ** yv:.3g}", fill="black")
        xv = x0 + frac * (x1 - x0)
        d.text((px(xv) - 15, h - m + 5), f"{xv:.0f}", fill="black")
    img.save(path)


def _denoiser_section(r: dict[str, Any], title: str, figure: str) -> str:
    weighting = "" if r.get("min_snr") is None else f" with min-SNR-{r['min_snr']:g} weighting"
    plot_curve([(c[0], c[1]) for c in r["curve"]], PACKAGE_DIR / figure, f"{title} loss (running mean, log)", "step")
    return (
        f"\n### {title}\n\n"
        f"- objective {r.get('prediction_type', 'epsilon')}"
        f"{weighting}; {r['steps_done']} of {r['steps_planned']} planned steps, "
        f"batch {r['batch_size']}, peak lr {r['lr']}, seed {r['seed']}"
        f"{' (stopped early by the time budget or by hand; --steps with the count above reproduces it)' if r['stopped_early'] else ''}\n"
        f"- wall-clock {r['train_seconds'] / 60:.1f} min; final running loss {r['final_loss_ema']:.4f}\n"
        f"- caption bank: {r['bank_size']} captions ({r['unique_captions']} unique), 10% caption dropout\n"
        f"- machine: {json.dumps(r['machine'])}\n\n![{title} loss]({figure})\n"
    )


def write_training_md() -> None:
    """Regenerate TRAINING.md and the loss-curve PNGs from the saved records."""
    parts = ["# Embedded model: training record\n\nCI never retrains; the weights are committed.\n"]
    den_path, judge_path = WEIGHTS_DIR / "denoiser_record.json", WEIGHTS_DIR / "judge_record.json"
    p1_path = WEIGHTS_DIR / "denoiser_record_phase1.json"
    if den_path.exists():
        r = json.loads(den_path.read_text())
        r1 = json.loads(p1_path.read_text()) if p1_path.exists() else None
        eps = r1["steps_done"] if r1 else 0
        threads = r["machine"]["torch_threads"]
        layers = json.loads(DENOISER_CONFIG.read_text()).get("text_layers", [-1]) if DENOISER_CONFIG.exists() else [-1]
        minutes = (r["train_seconds"] + (r1["train_seconds"] if r1 else 0)) / 60
        parts.append(
            "\n## Denoiser\n\n"
            f"PixArtTransformer2DModel, {r['params']:,} parameters (config in `weights/denoiser_config.json`); "
            f"the shipped weights are the EMA of the last phase.  Total training wall-clock {minutes:.0f} min on a "
            f"2-core CPU ({threads} torch threads).  Reproduce (same machine, torch, thread count -> same weights):\n\n"
            f"    python -m evaluators.embedded.train --only denoiser --threads {threads} "
            f"--eps-steps {eps} --steps {r['steps_done']}\n\n"
            "One phase of v-prediction from scratch with plain (unweighted) v-loss, conditioned on MiniLM's "
            f"hidden-state layers {layers} concatenated per token.  Why (measured on the "
            "previous recipe, which fine-tuned an epsilon warm start with min-SNR-5-weighted v-loss on the last "
            "MiniLM layer only): that model ignored position words entirely -- its x0 prediction at t=999 moved "
            "0.5 for \"top left\" -> \"bottom right\" against 12.7 for a colour change -- and held-out adherence "
            "stalled at 0.645 with shape and position at chance after 63 min.  Two causes: the last layer of a "
            "sentence-embedding model nearly erases antonyms (see `text.py`), and min-SNR weighting gives ~0 "
            "weight to the very-high-noise steps where a 24 px image's layout is decided.  With both changed, "
            "position was rendered right after ~2,500 steps.\n"
        )
        if r1:
            parts.append(_denoiser_section(r1, "Phase 1 (epsilon)", "denoiser_loss_phase1.png"))
        parts.append(_denoiser_section(r, "v-prediction (shipped)" if r1 else "Training run (shipped)", "denoiser_loss.png"))
    if judge_path.exists():
        r = json.loads(judge_path.read_text())
        plot_curve([(c[0], c[1]) for c in r["curve"]], PACKAGE_DIR / "judge_loss.png", "judge loss (sum over heads, log)", "step")
        acc = ", ".join(f"{k} {v:.3f}" for k, v in r["heldout_accuracy"].items())
        parts.append(
            "\n## Judge\n\n"
            f"- CNN, {r['params']:,} parameters, {r['steps']} steps x batch {r['batch_size']}, seed {r['seed']}, "
            f"{r['train_seconds'] / 60:.1f} min; reproduce with `python -m evaluators.embedded.train --only judge "
            f"--threads {r['machine']['torch_threads']} --judge-steps {r['steps']}`\n"
            f"- accuracy on 4000 fresh generator images (all valid combinations, never trained on): {acc}\n"
            f"- machine: {json.dumps(r['machine'])}\n\n![judge loss](judge_loss.png)\n"
        )
    parts.append(
        "\n## Quality\n\nMeasured by `python bench/embedded_quality.py`, recorded in "
        "`bench/results/embedded_quality.txt` (adherence per attribute, Frechet distance, sampling time, and "
        "how PSNR/adherence respond to cache schedules).\n"
    )
    TRAINING_MD.write_text("".join(parts))
