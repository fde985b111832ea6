"""Architecture and noise schedule of the embedded denoiser (shared by training and the pipeline).

Why these numbers (measured on a 2-core CPU): a PixArtTransformer2DModel with 6 blocks of 4 heads x 32
at 24 px with patch 3 has 64 tokens, trains at ~0.5 s per batch of 128 and samples 32 images x 20
steps with CFG in ~2 s; patch 2 at 24 px would be 2.5x slower.  Linear betas (a cosine
schedule blew up at sampling); v-prediction after an epsilon warm start (see train.py for why), and
the x0 predictions clipped to the data range at every solver step (see SCHEDULER_CONFIG).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from diffusers import DPMSolverMultistepScheduler, PixArtTransformer2DModel

from .data import IMAGE_SIZE
from .text import TEXT_DIM

WEIGHTS_DIR = Path(__file__).parent / "weights"
DENOISER_WEIGHTS = WEIGHTS_DIR / "denoiser.safetensors"
DENOISER_CONFIG = WEIGHTS_DIR / "denoiser_config.json"

TRANSFORMER_CONFIG: dict[str, Any] = {
    "num_attention_heads": 4,
    "attention_head_dim": 32,
    "in_channels": 3,
    "out_channels": 3,
    "num_layers": 6,
    "cross_attention_dim": 128,
    "sample_size": IMAGE_SIZE,
    "patch_size": 3,
    "caption_channels": TEXT_DIM,
    "norm_type": "ada_norm_single",
    "num_embeds_ada_norm": 1000,
    "use_additional_conditions": False,
}

SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "v_prediction",
    "algorithm_type": "dpmsolver++",
    "solver_order": 2,
    # pixel space: clip each step's x0 prediction to the data range [-1, 1] (Imagen-style thresholding
    # with max 1.0).  Without it, eps errors at high noise are amplified by 1/sqrt(alpha_bar) (~150 at
    # t=999) and sampling diverged to |x| ~ 120 on this model.
    "thresholding": True,
    "dynamic_thresholding_ratio": 0.995,
    "sample_max_value": 1.0,
}


def build_transformer(config: dict[str, Any] | None = None) -> PixArtTransformer2DModel:
    """A randomly initialised denoiser with the shipped architecture (or ``config``)."""
    return PixArtTransformer2DModel(**(config or TRANSFORMER_CONFIG))


def build_scheduler(config: dict[str, Any] | None = None) -> DPMSolverMultistepScheduler:
    """DPM-Solver++ (2nd order) over the training betas."""
    return DPMSolverMultistepScheduler(**(config or SCHEDULER_CONFIG))


def read_config(path: Path = DENOISER_CONFIG) -> dict[str, Any]:
    """The shipped JSON config: {"transformer": ..., "scheduler": ..., "image_size": ..., ...}."""
    if not path.exists():
        raise FileNotFoundError(
            f"embedded model config {path} is missing; reinstall cachesearch or run "
            "`python -m evaluators.embedded.train`"
        )
    return json.loads(path.read_text())
