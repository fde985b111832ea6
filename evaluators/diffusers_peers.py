"""diffusers' own caches as peers (`evaluators.baselines` registry entries), each applied with what it
needs on our families -- the knowledge a user would not have:

- PixArt, SD3 and DiT transformers have no `enable_cache` in diffusers 0.42 (no `CacheMixin`): the
  `apply_*` functions are used on every family.
- The PixArt pipeline (and the embedded one) never opens a `cache_context`; the diffusers caches
  need one, so a pre-hook opens one around each denoiser call where the pipeline does not
  (`baselines.apply_baseline`).
- TaylorSeer's default module patterns (`^transformer_blocks.*attn`) fullmatch nothing on PixArt
  (`transformer_blocks.0.attn1`): the patterns are built from the adapter table's components.
- MagCache needs per-checkpoint magnitude ratios: a calibration run on the study's own prompts.
- FasterCache splits the batched CFG input in half and rebuilds the unconditional output: it must be
  told how the pipeline runs guidance (the evaluator has seen it; `none` runs it guidance-distilled);
  its default attention patterns are replaced by the adapter table's self-attention components.
- SeaCache runs full compute (it only logs a warning) without a `cache_context` carrying the step
  index, sigma and step count, and without latents of shape C x T x H x W: `_SchedulerPosition` reads
  them from the pipeline's scheduler at every denoiser call (on a VP scheduler sigma is mapped to its
  flow-matching equivalent sqrt(1-a)/(sqrt(a)+sqrt(1-a))), and the latents come from the denoiser input.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import torch
from diffusers.hooks.hooks import CacheContext, _set_cache_context

from schedules.adapters import adapter_for

from .baselines import (BaselineError, BaselineHandle, NothingHooked, PeerContext, _close_context, _hooked,
                        _open_context, _pipeline_opens_cache_context, register)


@register("first_block_cache", "diffusers FirstBlockCache: skip the rest of the stack when the first "
          "block's residual changed less than `threshold`", probe={"threshold": 100.0}, threshold=0.05)
def _first_block_cache(pipe: Any, denoiser: torch.nn.Module, s: dict[str, Any], ctx: PeerContext) -> BaselineHandle:
    from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache
    from diffusers.hooks.first_block_cache import _FBC_BLOCK_HOOK, _FBC_LEADER_BLOCK_HOOK

    apply_first_block_cache(denoiser, FirstBlockCacheConfig(threshold=float(s["threshold"])))
    names = (_FBC_LEADER_BLOCK_HOOK, _FBC_BLOCK_HOOK)
    return BaselineHandle("first_block_cache", s, denoiser, _hooked(denoiser, names), names)


def _component_patterns(denoiser: torch.nn.Module,
                        keep: Callable[[torch.nn.Module], bool] = lambda module: True) -> list[str]:
    """Anchored regexes for the adapter table's components whose module (in a group's first block)
    `keep` accepts: TaylorSeer takes them all, FasterCache only self-attentions."""
    out = []
    for layout in adapter_for(denoiser).groups:
        blocks = getattr(denoiser, layout.attribute, None)
        if not isinstance(blocks, torch.nn.ModuleList) or not len(blocks):
            continue
        out += [rf"^{re.escape(layout.attribute)}\.\d+\.{re.escape(c)}$" for c in layout.components
                if isinstance(getattr(blocks[0], c, None), torch.nn.Module) and keep(getattr(blocks[0], c))]
    return out


@register("taylorseer", "diffusers TaylorSeer: compute every `cache_interval` steps, Taylor-forecast the "
          "components in between (`lite`: forecast only the output projection, blocks skipped)",
          probe={"cache_interval": 3}, cache_interval=2, max_order=1, disable_cache_before_step=2, lite=False)
def _taylorseer(pipe: Any, denoiser: torch.nn.Module, s: dict[str, Any], ctx: PeerContext) -> BaselineHandle:
    from diffusers.hooks import TaylorSeerCacheConfig, apply_taylorseer_cache
    from diffusers.hooks.taylorseer_cache import _TAYLORSEER_CACHE_HOOK

    config = TaylorSeerCacheConfig(cache_interval=int(s["cache_interval"]), max_order=int(s["max_order"]),
                                   disable_cache_before_step=int(s["disable_cache_before_step"]),
                                   taylor_factors_dtype=torch.float32, use_lite_mode=bool(s["lite"]),
                                   cache_identifiers=None if s["lite"] else _component_patterns(denoiser))
    apply_taylorseer_cache(denoiser, config)
    names = (_TAYLORSEER_CACHE_HOOK,)
    return BaselineHandle("taylorseer", s, denoiser, _hooked(denoiser, names), names)


class _TimestepProbe:
    """The denoiser's current timestep, read by a forward pre-hook (what PAB's callback needs; the
    pipelines' `current_timestep` exists only on some of them). On the 0-1000 scale PAB's ranges use:
    FLUX feeds sigma (0-1), so its value is scaled back. `outside_first`: during a run's first
    denoiser call (since `reset`) report a timestep outside every range (FasterCache, see there)."""

    def __init__(self, denoiser: torch.nn.Module, outside_first: bool = False) -> None:
        self.value = 1000.0
        self.calls = 0
        self.outside_first = outside_first
        self.scale = 1000.0 if adapter_for(denoiser).family == "flux" else 1.0
        self.handle = denoiser.register_forward_pre_hook(self._grab, with_kwargs=True)

    def _grab(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        self.calls += 1
        t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        if t is not None:
            self.value = float(torch.as_tensor(t).flatten()[0]) * self.scale

    def reset(self) -> None:
        self.calls = 0

    def __call__(self) -> float:
        return float("inf") if self.outside_first and self.calls <= 1 else self.value


@register("pab", "diffusers Pyramid Attention Broadcast: inside `timestep_range`, self-attention computes every "
          "`spatial_skip` calls and cross-attention every `cross_skip` calls, reusing its output in between",
          probe={"spatial_skip": 3, "cross_skip": 3, "timestep_range": [0, 1000]},
          spatial_skip=2, cross_skip=None, timestep_range=[100, 800])
def _pab(pipe: Any, denoiser: torch.nn.Module, s: dict[str, Any], ctx: PeerContext) -> BaselineHandle:
    from diffusers.hooks import PyramidAttentionBroadcastConfig, apply_pyramid_attention_broadcast
    from diffusers.hooks.pyramid_attention_broadcast import _PYRAMID_ATTENTION_BROADCAST_HOOK

    probe = _TimestepProbe(denoiser)
    low, high = (int(v) for v in s["timestep_range"])
    config = PyramidAttentionBroadcastConfig(
        spatial_attention_block_skip_range=s["spatial_skip"], cross_attention_block_skip_range=s["cross_skip"],
        spatial_attention_timestep_skip_range=(low, high), cross_attention_timestep_skip_range=(low, high),
        current_timestep_callback=probe)
    apply_pyramid_attention_broadcast(denoiser, config)
    names = (_PYRAMID_ATTENTION_BROADCAST_HOOK,)
    handle = BaselineHandle("pab", s, denoiser, _hooked(denoiser, names), names)
    handle._extra.append(probe.handle)
    return handle


@register("mag_cache", "diffusers MagCache: skip the stack while the accumulated residual-magnitude error "
          "stays under `threshold` (ratios calibrated on the study's prompts)",
          probe={"threshold": 100.0, "max_skip_steps": 100}, threshold=0.06, max_skip_steps=3, retention_ratio=0.2,
          num_inference_steps=20, mag_ratios=None)
def _mag_cache(pipe: Any, denoiser: torch.nn.Module, s: dict[str, Any], ctx: PeerContext) -> BaselineHandle:
    from diffusers.hooks import MagCacheConfig, apply_mag_cache
    from diffusers.hooks.mag_cache import _MAG_CACHE_BLOCK_HOOK, _MAG_CACHE_LEADER_BLOCK_HOOK

    names = (_MAG_CACHE_LEADER_BLOCK_HOOK, _MAG_CACHE_BLOCK_HOOK)
    ratios = s["mag_ratios"]
    if ratios is None:
        if ctx.calibrate is None:
            raise BaselineError("mag_cache needs mag_ratios or a calibration run (its ratios are per checkpoint)")
        ratios = _mag_ratios(pipe, denoiser, int(s["num_inference_steps"]), ctx.calibrate, names)
    apply_mag_cache(denoiser, MagCacheConfig(threshold=float(s["threshold"]), max_skip_steps=int(s["max_skip_steps"]),
                                             retention_ratio=float(s["retention_ratio"]),
                                             num_inference_steps=int(s["num_inference_steps"]), mag_ratios=ratios))
    return BaselineHandle("mag_cache", {**s, "mag_ratios": [float(r) for r in ratios]}, denoiser,
                          _hooked(denoiser, names), names)


def _mag_ratios(pipe: Any, denoiser: torch.nn.Module, steps: int, calibrate: Callable[[], Any],
                names: tuple[str, ...]) -> list[float]:
    """MagCache's calibration mode on our calibration run; the ratios are read from its state (it
    only prints them) and averaged over the run's denoiser contexts."""
    from diffusers.hooks import MagCacheConfig, apply_mag_cache
    from diffusers.hooks.mag_cache import _MAG_CACHE_LEADER_BLOCK_HOOK

    apply_mag_cache(denoiser, MagCacheConfig(calibrate=True, num_inference_steps=steps))
    probe = BaselineHandle("mag_cache_calibration", {}, denoiser, _hooked(denoiser, names), names)
    if not probe.hooked:
        raise NothingHooked(f"MagCache found no transformer blocks in {type(denoiser).__name__}")
    head = next(m for _, m in denoiser.named_modules()
                if getattr(m, "_diffusers_hook", None) is not None and _MAG_CACHE_LEADER_BLOCK_HOOK in m._diffusers_hook.hooks)
    manager = head._diffusers_hook.get_hook(_MAG_CACHE_LEADER_BLOCK_HOOK).state_manager
    seen: dict[int, list[float]] = {}   # each run's list, kept alive (MagCache drops it at the end)

    def grab(module: torch.nn.Module, args: tuple) -> None:
        for state in manager._state_cache.values():
            seen.setdefault(id(state.calibration_ratios), state.calibration_ratios)
    hook = denoiser.register_forward_pre_hook(grab)
    if not _pipeline_opens_cache_context(pipe):
        probe._extra += [denoiser.register_forward_pre_hook(_open_context),
                         denoiser.register_forward_hook(_close_context)]
    try:
        probe.reset()
        calibrate()
    finally:
        hook.remove()
        probe.remove()
    runs = [r for r in seen.values() if len(r) == steps]
    if not runs:
        raise BaselineError(f"MagCache calibration saw no complete {steps}-step run")
    return [sum(r[i] for r in runs) / len(runs) for i in range(steps)]


# FasterCache's CFG cache splits every batch-concatenated input of the denoiser in half; diffusers'
# default list misses SD3's pooled projections and DiT's class labels.
_CFG_BATCHED_INPUTS = ("hidden_states", "encoder_hidden_states", "timestep", "attention_mask",
                       "encoder_attention_mask", "pooled_projections", "class_labels")


@register("faster_cache", "diffusers FasterCache: inside `timestep_range` self-attention computes every "
          "`spatial_skip` steps and is extrapolated in between; the unconditional CFG half computes every "
          "`uncond_skip` steps (inside `uncond_timestep_range`) and is rebuilt from the conditional half's "
          "frequency bands", probe={"spatial_skip": 3, "timestep_range": [-1, 1001], "uncond_skip": 3,
                                    "uncond_timestep_range": [-1, 1001]},
          spatial_skip=2, timestep_range=[-1, 681], uncond_skip=5, uncond_timestep_range=[-1, 641],
          attention_weight=0.5)
def _faster_cache(pipe: Any, denoiser: torch.nn.Module, s: dict[str, Any], ctx: PeerContext) -> BaselineHandle:
    from diffusers.hooks import FasterCacheConfig, apply_faster_cache
    from diffusers.hooks.faster_cache import _FASTER_CACHE_BLOCK_HOOK, _FASTER_CACHE_DENOISER_HOOK

    if ctx.cfg is None:
        raise BaselineError("faster_cache needs to know how the pipeline runs classifier-free guidance "
                            "(cfg='batched', 'sequential' or 'none')")
    if ctx.cfg == "sequential":
        raise BaselineError("faster_cache needs the unconditional and conditional halves in one batch; this "
                            "pipeline calls the denoiser once per half")
    from diffusers.hooks._common import _ATTENTION_CLASSES

    patterns = _component_patterns(denoiser, lambda m: isinstance(m, _ATTENTION_CLASSES)
                                   and not getattr(m, "is_cross_attention", False))
    if not patterns:
        raise BaselineError(f"faster_cache: {type(denoiser).__name__} has no self-attention component in the "
                            "adapter table")
    # guidance-distilled, diffusers' block hook reuses its still empty cache when a run's first call
    # falls inside `timestep_range` (a crash): that call is reported outside every range
    probe = _TimestepProbe(denoiser, outside_first=ctx.cfg == "none")
    weight = float(s["attention_weight"])
    config = FasterCacheConfig(
        spatial_attention_block_skip_range=int(s["spatial_skip"]),
        spatial_attention_timestep_skip_range=tuple(s["timestep_range"]),
        unconditional_batch_skip_range=int(s["uncond_skip"]),
        unconditional_batch_timestep_skip_range=tuple(s["uncond_timestep_range"]),
        spatial_attention_block_identifiers=tuple(patterns), attention_weight_callback=lambda _: weight,
        current_timestep_callback=probe, tensor_format="BCHW", is_guidance_distilled=ctx.cfg == "none",
        _unconditional_conditional_input_kwargs_identifiers=list(_CFG_BATCHED_INPUTS))
    apply_faster_cache(denoiser, config)
    names = (_FASTER_CACHE_DENOISER_HOOK, _FASTER_CACHE_BLOCK_HOOK)
    handle = BaselineHandle("faster_cache", s, denoiser, _hooked(denoiser, names), names)
    handle._extra.append(probe.handle)
    handle._resets.append(probe.reset)
    if handle.hooked == ["<root>"] and ctx.cfg == "none":   # guidance-distilled: only the attentions skip
        handle.hooked = []
    return handle


class _SchedulerPosition:
    """Where the denoising loop is, for SeaCache: a forward pre-hook on the denoiser sets a cache
    context with the step index (the current timestep's place in `scheduler.timesteps`), the step
    count and sigma on the flow-matching scale SeaCache's filter assumes; the forward hook restores
    the context the pipeline had set (or none)."""

    def __init__(self, pipe: Any, denoiser: torch.nn.Module, state_holder: Any) -> None:
        scheduler = getattr(pipe, "scheduler", None)
        if scheduler is None or not hasattr(scheduler, "timesteps"):
            raise BaselineError("sea_cache needs the pipeline's scheduler (the step index and sigma come from it)")
        self.scheduler = scheduler
        self.timestep = _TimestepProbe(denoiser)
        self.holder = state_holder
        self.saved: list[Any] = []
        self.handles = [self.timestep.handle, denoiser.register_forward_pre_hook(self._enter),
                        denoiser.register_forward_hook(self._leave)]

    def _sigma(self, t: float, index: int) -> float:
        alphas = getattr(self.scheduler, "alphas_cumprod", None)
        if alphas is not None:        # VP: x_t/(sqrt(a)+sqrt(1-a)) is a flow-matching point at this sigma
            a = float(alphas[min(max(int(round(t)), 0), len(alphas) - 1)])
            return (1 - a) ** 0.5 / (a ** 0.5 + (1 - a) ** 0.5)
        sigmas = getattr(self.scheduler, "sigmas", None)
        return float(sigmas[index]) if sigmas is not None else t / 1000.0

    def _enter(self, module: torch.nn.Module, args: tuple) -> None:
        timesteps = torch.as_tensor(self.scheduler.timesteps, dtype=torch.float64).flatten()
        t = self.timestep()
        index = int(torch.argmin((timesteps - t).abs()))
        previous = self.holder()
        self.saved.append(previous)
        _set_cache_context(module, CacheContext(previous.name if previous is not None else "cond", step_index=index,
                                                num_inference_steps=len(timesteps), timestep=t,
                                                sigma=min(max(self._sigma(t, index), 0.0), 1.0)))

    def _leave(self, module: torch.nn.Module, args: tuple, output: Any) -> None:
        _set_cache_context(module, self.saved.pop() if self.saved else None)


def _latents_for_sea_cache(module: torch.nn.Module, args: tuple, kwargs: dict) -> list[torch.Tensor] | None:
    """The denoiser's latent input as SeaCache's C x T x H x W list (T = 1 for images): image latents
    B x C x H x W directly, FLUX's packed tokens B x L x C unpacked on the grid its `img_ids` give."""
    x = kwargs.get("hidden_states", args[0] if args else None)
    if not isinstance(x, torch.Tensor):
        return None
    if x.ndim == 4:
        return [sample.unsqueeze(1) for sample in x.unbind(0)]
    ids = kwargs.get("img_ids")
    if x.ndim == 3 and isinstance(ids, torch.Tensor) and ids.ndim == 2 and ids.shape[0] == x.shape[1]:
        rows, cols = int(ids[:, 1].max()) + 1, int(ids[:, 2].max()) + 1
        if rows * cols == x.shape[1]:
            grid = x.reshape(x.shape[0], rows, cols, x.shape[2]).permute(0, 3, 1, 2)
            return [sample.unsqueeze(1) for sample in grid.unbind(0)]
    return None


@register("sea_cache", "diffusers SeaCache: skip the block stack while the accumulated change of a "
          "spectrally filtered latent stays under `threshold` (at most `max_consecutive_cached` steps in a row)",
          probe={"threshold": 100.0, "max_consecutive_cached": 0}, own_context=True,
          threshold=0.25, residual_order=1, retention_steps=1, cache_end_steps=1, max_consecutive_cached=2,
          power_exp=3.0)
def _sea_cache(pipe: Any, denoiser: torch.nn.Module, s: dict[str, Any], ctx: PeerContext) -> BaselineHandle:
    from diffusers.hooks.sea_cache import (_SEA_CACHE_BLOCK_HOOK, _SEA_CACHE_LEADER_BLOCK_HOOK,
                                           _SEA_CACHE_ROOT_HOOK, SeaCacheConfig, apply_sea_cache)

    config = SeaCacheConfig(threshold=float(s["threshold"]), residual_order=int(s["residual_order"]),
                            retention_steps=int(s["retention_steps"]), cache_end_steps=int(s["cache_end_steps"]),
                            max_consecutive_cached=int(s["max_consecutive_cached"]), power_exp=float(s["power_exp"]),
                            raw_vision_callback=_latents_for_sea_cache)
    try:
        apply_sea_cache(denoiser, config)
    except ValueError as exc:
        raise BaselineError(f"sea_cache: {exc}") from None
    names = (_SEA_CACHE_ROOT_HOOK, _SEA_CACHE_LEADER_BLOCK_HOOK, _SEA_CACHE_BLOCK_HOOK)
    root = denoiser._diffusers_hook.get_hook(_SEA_CACHE_ROOT_HOOK)
    handle = BaselineHandle("sea_cache", s, denoiser, [n for n in _hooked(denoiser, names) if n != "<root>"], names)
    # SeaCache falls back to full compute with only a log line ("fail-open"): kept, so the result says so
    root.shared_state.mark_fail_open = lambda message: handle.failures.append(message)
    try:
        position = _SchedulerPosition(pipe, denoiser, lambda: root.state_manager._context)
    except BaselineError:
        handle.remove()
        raise
    handle._extra.extend(position.handles)
    return handle
