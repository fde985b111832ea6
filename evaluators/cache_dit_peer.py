"""cache-dit's DBCache (with its TaylorSeer calibrator as an option) as a peer: optional extra
`cache-dit` (`pip install 'cachesearch[cache-dit]'`); without it the entry is refused with that line.

What it needs on our families:
- cache-dit's automatic adapter knows pipelines by class name (`PixArt...`, `StableDiffusion3...`)
  and refuses any other (the embedded pipeline, a user's subclass): where it has no adapter, an
  explicit `BlockAdapter` is built from the adapter table's block groups with the forward pattern
  the family's blocks have (`FORWARD_PATTERNS`; cache-dit checks it against the block's signature).
- DBCache computes the first `Fn` blocks (and the last `Bn`) at every step and skips the middle while
  the first blocks' residual changed less than `threshold`; thresholds do not transfer between
  models, so a study sweeps them.
- It patches the pipeline *class*'s `__call__` (a fresh cache context per call) and the denoiser's
  forward; `disable_cache` on the same adapter undoes both.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from schedules.adapters import adapter_for

from .baselines import BaselineError, BaselineHandle, PeerContext, install_line, register

# cache-dit's ForwardPattern per block group, for families whose pipelines it has no adapter for:
# PixArt/DiT blocks take and return hidden states only; FLUX and SD3 blocks return
# (encoder_hidden_states, hidden_states)
FORWARD_PATTERNS: dict[str, tuple[str, ...]] = {
    "pixart": ("Pattern_3",), "dit": ("Pattern_3",), "sd3": ("Pattern_1",), "flux": ("Pattern_1", "Pattern_1"),
}
EXTRA = "cache-dit"


def import_cache_dit() -> Any:
    """cache-dit, quiet unless the user set CACHE_DIT_LOG_LEVEL; `BaselineError` if not installed."""
    os.environ.setdefault("CACHE_DIT_LOG_LEVEL", "error")
    try:
        import cache_dit
    except ImportError as exc:
        raise BaselineError(f"dbcache needs cache-dit, which is not installed ({exc.name} not found): "
                            f"{install_line(EXTRA)}") from None
    return cache_dit


def _block_adapter(cache_dit: Any, pipe: Any, denoiser: torch.nn.Module, separate_cfg: bool | None) -> Any:
    from cache_dit.caching.block_adapters import BlockAdapterRegister

    extra = {} if separate_cfg is None else {"has_separate_cfg": separate_cfg}
    if getattr(pipe, "transformer", None) is denoiser and BlockAdapterRegister.is_supported(pipe):
        return cache_dit.get_adapter(pipe)
    family = adapter_for(denoiser).family
    if family not in FORWARD_PATTERNS:
        raise BaselineError(f"dbcache: cache-dit has no adapter for {type(pipe).__name__} and the forward pattern "
                            f"of {family} blocks is not known here")
    groups = adapter_for(denoiser).groups
    blocks = [getattr(denoiser, g.attribute) for g in groups]
    patterns = [getattr(cache_dit.ForwardPattern, p) for p in FORWARD_PATTERNS[family]]
    one = len(blocks) == 1
    return cache_dit.BlockAdapter(pipe=pipe, transformer=denoiser, blocks=blocks[0] if one else blocks,
                                  blocks_name=[g.attribute for g in groups][0] if one else [g.attribute for g in groups],
                                  forward_pattern=patterns[0] if one else patterns, check_forward_pattern=True,
                                  **extra)


class _Disable:
    """`remove()` for the handle: cache-dit's own undo on the adapter it was enabled with."""

    def __init__(self, cache_dit: Any, adapter: Any) -> None:
        self.cache_dit, self.adapter = cache_dit, adapter

    def remove(self) -> None:
        if self.adapter is not None:
            self.cache_dit.disable_cache(self.adapter)
            self.adapter = None


@register("dbcache", "cache-dit DBCache (optional extra `cache-dit`): compute the first `Fn` and last `Bn` "
          "blocks every step, skip the others while the first blocks' residual changed less than `threshold` "
          "(after `max_warmup_steps`); `taylorseer`: forecast the skipped output with cache-dit's TaylorSeer "
          "calibrator of order `taylorseer_order`",
          probe={"threshold": 100.0, "max_warmup_steps": 1, "taylorseer": True}, own_context=True, requires="cache_dit", extra=EXTRA,
          Fn=1, Bn=0, threshold=0.08, max_warmup_steps=8, max_cached_steps=-1, max_continuous_cached_steps=-1,
          taylorseer=False, taylorseer_order=1)
def _dbcache(pipe: Any, denoiser: torch.nn.Module, s: dict[str, Any], ctx: PeerContext) -> BaselineHandle:
    cache_dit = import_cache_dit()
    if isinstance(pipe, torch.nn.Module):
        raise BaselineError("dbcache needs the pipeline, not only its denoiser (cache-dit resets its cache per "
                            "pipeline call)")
    separate = None if ctx.cfg is None else ctx.cfg == "sequential"
    adapter = _block_adapter(cache_dit, pipe, denoiser, separate)
    config = cache_dit.DBCacheConfig(
        Fn_compute_blocks=int(s["Fn"]), Bn_compute_blocks=int(s["Bn"]), residual_diff_threshold=float(s["threshold"]),
        max_warmup_steps=int(s["max_warmup_steps"]), max_cached_steps=int(s["max_cached_steps"]),
        max_continuous_cached_steps=int(s["max_continuous_cached_steps"]), enable_separate_cfg=separate)
    calibrator = cache_dit.TaylorSeerCalibratorConfig(taylorseer_order=int(s["taylorseer_order"])) if s["taylorseer"] \
        else None
    undo = _Disable(cache_dit, adapter)
    try:
        cache_dit.enable_cache(adapter, cache_config=config, calibrator_config=calibrator)
    except Exception as exc:
        undo.remove()
        raise BaselineError(f"dbcache: cache-dit refused {type(denoiser).__name__}: {type(exc).__name__}: {exc}") from exc
    wrapped = [f"{name} (cache-dit {type(adapter).__name__})" for name in _names(adapter.blocks_name)] \
        if getattr(denoiser, "_is_cached", False) else []
    handle = BaselineHandle("dbcache", s, denoiser, wrapped, ())
    handle._extra.append(undo)
    return handle


def _names(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    out: list[str] = []
    for v in value or []:
        out.extend(_names(v))
    return out
