"""Calibration prompts and seeds: which (prompt, seed) pairs every schedule is scored on.

Built-in sets: `calibration` and `heldout` (the embedded model's captions) and `generic` (16 everyday
scenes for real text-to-image models). Any other value is a file: a JSON list of strings, or one
prompt per line (blank lines and lines starting with '#' ignored).

Pairs are in prompt-major order, `(prompt i, seed j)` at index `i * len(seeds) + j`: that is the
"request order" of `EvaluationResult.per_prompt`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import EvaluationConfig

_HERE = Path(__file__).parent
_EMBEDDED_PROMPTS = _HERE / "embedded" / "prompts"
BUILTIN_SETS: dict[str, Path] = {
    "calibration": _EMBEDDED_PROMPTS / "calibration.txt",
    "heldout": _EMBEDDED_PROMPTS / "heldout.txt",
    "generic": _HERE / "prompt_sets" / "generic.txt",
}


def read_prompt_file(path: str | Path) -> list[str]:
    """One prompt per line, or a JSON list of strings; a clear error for anything else."""
    path = Path(path).expanduser()
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not all(isinstance(p, str) and p.strip() for p in doc):
            raise ValueError(f"{path}: a JSON prompt file must be a list of non-empty strings")
        prompts = [p.strip() for p in doc]
    else:
        prompts = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return prompts


def _builtin(name: str) -> list[str]:
    if name in ("calibration", "heldout"):
        try:  # the embedded package is the owner of its prompt sets when it provides them
            from .embedded import prompt_set
            return list(prompt_set(name))
        except ImportError:
            pass
    return read_prompt_file(BUILTIN_SETS[name])


def load_prompts(config: "EvaluationConfig") -> list[str]:
    prompts = _builtin(config.prompts) if config.prompts in BUILTIN_SETS else read_prompt_file(config.prompts)
    return prompts[: config.num_prompts] if config.num_prompts else prompts


def pairs(config: "EvaluationConfig") -> list[tuple[str, int]]:
    """(prompt, seed) in request order (prompt-major)."""
    return [(p, s) for p in load_prompts(config) for s in (config.seeds or [])]


def thumbnail_positions(config: "EvaluationConfig", n_pairs: int) -> list[int]:
    """Positions in `pairs(config)` (of length `n_pairs`) of the images kept as thumbnails: the first
    seed of each of the first `n_thumbnails` prompts."""
    seeds = len(config.seeds or [])
    n_prompts = n_pairs // max(seeds, 1)
    return [i * seeds for i in range(min(config.n_thumbnails, n_prompts))]


def thumbnail_pairs(config: "EvaluationConfig") -> list[tuple[str, int]]:
    """The (prompt, seed) of each thumbnail, in thumbnail order (what pages caption images with)."""
    every = pairs(config)
    return [every[i] for i in thumbnail_positions(config, len(every))]
