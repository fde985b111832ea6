"""The embedded default model: a small PixArt-class text-to-image denoiser and its judge, offline on CPU.

Everything needed ships as package data (safetensors weights, JSON configs, prompt files), so the whole
product can be exercised on a machine with no GPU and no model hub.  See TRAINING.md for how the
weights were made and DESIGN.md ("The embedded default model") for why.
"""

from __future__ import annotations

import json
from pathlib import Path

from .data import ATTRIBUTES, parse_prompt
from .judge import Judge, frechet_distance, load_judge
from .pipeline import EmbeddedPipeline, EmbeddedPipelineOutput, load_embedded_pipeline

PROMPTS_DIR = Path(__file__).parent / "prompts"
PROMPT_SETS = ("calibration", "heldout")


def prompt_set(name: str) -> list[str]:
    """A built-in prompt set ("calibration" or "heldout"), one prompt per line of prompts/<name>.txt."""
    if name not in PROMPT_SETS:
        raise ValueError(f"unknown embedded prompt set {name!r}; choose one of {', '.join(PROMPT_SETS)}")
    return [line.strip() for line in (PROMPTS_DIR / f"{name}.txt").read_text().splitlines() if line.strip()]


def default_seeds() -> list[int]:
    """The fixed seeds that go with the built-in prompt sets (prompts/seeds.json)."""
    return [int(s) for s in json.loads((PROMPTS_DIR / "seeds.json").read_text())["seeds"]]


__all__ = [
    "ATTRIBUTES",
    "EmbeddedPipeline",
    "EmbeddedPipelineOutput",
    "Judge",
    "default_seeds",
    "frechet_distance",
    "load_embedded_pipeline",
    "load_judge",
    "parse_prompt",
    "prompt_set",
]
