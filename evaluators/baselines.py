"""Peer caching methods a user could turn on instead of searching, applied the way each one needs.

A registry of `Baseline` entries (one entry + one apply function per method). Each apply function
attaches the method to a pipeline's denoiser and returns a `BaselineHandle` that names the modules
it hooked — a method that hooks nothing is an error (`NothingHooked`), never a silent full-compute
"baseline" — and detaches cleanly.

What each peer needs on our families (the knowledge a user would not have):
- PixArt, SD3 and DiT transformers have no `enable_cache` in diffusers 0.42 (no `CacheMixin`): the
  `apply_*` functions are used on every family.
- The PixArt pipeline (and the embedded one) never opens a `cache_context`; the diffusers caches
  need one, so a pre-hook opens one around each denoiser call where the pipeline does not.
- TaylorSeer's default module patterns (`^transformer_blocks.*attn`) fullmatch nothing on PixArt
  (`transformer_blocks.0.attn1`): the patterns are built from the adapter table's components.
- MagCache needs per-checkpoint magnitude ratios: a calibration run on the study's own prompts.

Stateful peers are reset before each pipeline call (`BaselineHandle.reset`).
"""

from __future__ import annotations

import inspect
import itertools
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from diffusers.hooks import HookRegistry
from diffusers.hooks.hooks import CacheContext, _set_cache_context

from schedules.adapters import adapter_for, find_denoiser


class NothingHooked(RuntimeError):
    """A baseline attached no hook to the model: it would silently compute everything."""


class BaselineError(ValueError):
    """A baseline cannot run on this model or with these settings (the message says why)."""


@dataclass
class BaselineHandle:
    name: str
    settings: dict[str, Any]
    denoiser: torch.nn.Module
    hooked: list[str]
    hook_names: tuple[str, ...]
    _extra: list[Any] = field(default_factory=list)

    def reset(self) -> None:
        HookRegistry.check_if_exists_or_initialize(self.denoiser).reset_stateful_hooks(recurse=True)

    def remove(self) -> None:
        for h in self._extra:
            h.remove()
        self._extra.clear()
        for _, module in self.denoiser.named_modules():
            registry = getattr(module, "_diffusers_hook", None)
            if registry is None:
                continue
            for name in self.hook_names:
                if name in registry.hooks:
                    registry.remove_hook(name, recurse=False)
        HookRegistry.check_if_exists_or_initialize(self.denoiser).invalidate_child_registries_cache()

    @property
    def label(self) -> str:
        return baseline_label(self.name, self.settings)


@dataclass(frozen=True)
class Baseline:
    name: str
    description: str
    apply: Callable[..., BaselineHandle]
    defaults: Mapping[str, Any]
    probe: Mapping[str, Any] = field(default_factory=dict)   # settings under which it surely caches (tests)


BASELINES: dict[str, Baseline] = {}


def register(name: str, description: str, *, probe: Mapping[str, Any] | None = None,
             **defaults: Any) -> Callable[[Callable[..., BaselineHandle]], Callable]:
    """One registry entry per peer: its apply function, default settings, and `probe` settings under
    which it is sure to skip work on any model (the contract test checks it really does)."""
    def deco(fn: Callable[..., BaselineHandle]) -> Callable[..., BaselineHandle]:
        BASELINES[name] = Baseline(name, description, fn, dict(defaults), dict(probe or {}))
        return fn
    return deco


def baseline_label(method: str, settings: Mapping[str, Any]) -> str:
    """How a setting is named everywhere (store, CLI, dashboard): `first_block_cache(threshold=0.2)`;
    MagCache's calibrated ratios are data, not a setting, and stay out of the name."""
    args = ", ".join(f"{k}={v}" for k, v in settings.items() if k != "mag_ratios")
    return f"{method}({args})"


def check_baseline(method: str, settings: Mapping[str, Any]) -> None:
    """`BaselineError` naming the method or setting a study config gets wrong, before any work."""
    if method not in BASELINES:
        raise BaselineError(f"unknown baseline {method!r} (known: {', '.join(sorted(BASELINES))})")
    unknown = sorted(set(settings) - set(BASELINES[method].defaults))
    if unknown:
        raise BaselineError(f"{method}: unknown setting(s) {unknown} (it takes {sorted(BASELINES[method].defaults)})")


def expand_settings(settings: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """A sweep: every list value is a set of alternatives, so `{threshold: [0.1, 0.2], x: 1}` is two
    settings (the cartesian product over the listed keys, in order). A setting whose value is itself a
    list (`defaults` says so: PAB's `timestep_range`) sweeps only as a list of lists."""
    defaults = defaults or {}

    def alternatives(key: str, value: Any) -> list[Any]:
        if not isinstance(value, (list, tuple)):
            return [value]
        if isinstance(defaults.get(key), (list, tuple)):
            return list(value) if value and all(isinstance(v, (list, tuple)) for v in value) else [value]
        return list(value)

    keys = list(settings)
    choices = [alternatives(k, v) for k, v in settings.items()]
    return [dict(zip(keys, combo)) for combo in itertools.product(*choices)]


def apply_baseline(pipe: Any, name: str, calibrate: Callable[[], Any] | None = None,
                   **settings: Any) -> BaselineHandle:
    """Attach baseline `name` with `settings` (defaults filled in) to `pipe`'s denoiser.
    `calibrate()` runs the pipeline once on calibration prompts (MagCache needs it)."""
    check_baseline(name, settings)
    entry = BASELINES[name]
    merged = {**entry.defaults, **settings}
    denoiser = find_denoiser(pipe)
    handle = entry.apply(pipe, denoiser, merged, calibrate)
    if not handle.hooked:
        handle.remove()
        raise NothingHooked(f"{handle.label} hooked no module of {type(denoiser).__name__}")
    if not _pipeline_opens_cache_context(pipe):
        handle._extra.append(denoiser.register_forward_pre_hook(_open_context))
        handle._extra.append(denoiser.register_forward_hook(_close_context))
    return handle


def _pipeline_opens_cache_context(pipe: Any) -> bool:
    if isinstance(pipe, torch.nn.Module):
        return False
    try:
        return "cache_context(" in inspect.getsource(type(pipe).__call__)
    except (OSError, TypeError):
        return False


def _open_context(module: torch.nn.Module, args: tuple) -> None:
    _set_cache_context(module, CacheContext("cond"))


def _close_context(module: torch.nn.Module, args: tuple, output: Any) -> None:
    _set_cache_context(module, None)


def _hooked(denoiser: torch.nn.Module, names: tuple[str, ...]) -> list[str]:
    return [n or "<root>" for n, m in denoiser.named_modules()
            if getattr(m, "_diffusers_hook", None) is not None and any(h in m._diffusers_hook.hooks for h in names)]


# ------------------------------------------------------------------------------------ entries
@register("first_block_cache", "diffusers FirstBlockCache: skip the rest of the stack when the first "
          "block's residual changed less than `threshold`", probe={"threshold": 100.0}, threshold=0.05)
def _first_block_cache(pipe: Any, denoiser: torch.nn.Module, s: dict[str, Any], calibrate: Any) -> BaselineHandle:
    from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache
    from diffusers.hooks.first_block_cache import _FBC_BLOCK_HOOK, _FBC_LEADER_BLOCK_HOOK

    apply_first_block_cache(denoiser, FirstBlockCacheConfig(threshold=float(s["threshold"])))
    names = (_FBC_LEADER_BLOCK_HOOK, _FBC_BLOCK_HOOK)
    return BaselineHandle("first_block_cache", s, denoiser, _hooked(denoiser, names), names)


def _component_patterns(denoiser: torch.nn.Module) -> list[str]:
    """Regexes (fullmatch) for every scheduled component module, from the adapter table."""
    out = []
    for layout in adapter_for(denoiser).groups:
        comps = "|".join(re.escape(c) for c in layout.components)
        out.append(rf"{re.escape(layout.attribute)}\.\d+\.({comps})")
    return out


@register("taylorseer", "diffusers TaylorSeer: compute every `cache_interval` steps, Taylor-forecast the "
          "components in between (`lite`: forecast only the output projection, blocks skipped)",
          probe={"cache_interval": 3}, cache_interval=2, max_order=1, disable_cache_before_step=2, lite=False)
def _taylorseer(pipe: Any, denoiser: torch.nn.Module, s: dict[str, Any], calibrate: Any) -> BaselineHandle:
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
    FLUX feeds sigma (0-1), so its value is scaled back."""

    def __init__(self, denoiser: torch.nn.Module) -> None:
        self.value = 1000.0
        self.scale = 1000.0 if adapter_for(denoiser).family == "flux" else 1.0
        self.handle = denoiser.register_forward_pre_hook(self._grab, with_kwargs=True)

    def _grab(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        if t is not None:
            self.value = float(torch.as_tensor(t).flatten()[0]) * self.scale

    def __call__(self) -> float:
        return self.value


@register("pab", "diffusers Pyramid Attention Broadcast: inside `timestep_range`, self-attention computes every "
          "`spatial_skip` calls and cross-attention every `cross_skip` calls, reusing its output in between",
          probe={"spatial_skip": 3, "cross_skip": 3, "timestep_range": [0, 1000]},
          spatial_skip=2, cross_skip=None, timestep_range=[100, 800])
def _pab(pipe: Any, denoiser: torch.nn.Module, s: dict[str, Any], calibrate: Any) -> BaselineHandle:
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
def _mag_cache(pipe: Any, denoiser: torch.nn.Module, s: dict[str, Any], calibrate: Any) -> BaselineHandle:
    from diffusers.hooks import MagCacheConfig, apply_mag_cache
    from diffusers.hooks.mag_cache import _MAG_CACHE_BLOCK_HOOK, _MAG_CACHE_LEADER_BLOCK_HOOK

    names = (_MAG_CACHE_LEADER_BLOCK_HOOK, _MAG_CACHE_BLOCK_HOOK)
    ratios = s["mag_ratios"]
    if ratios is None:
        if calibrate is None:
            raise BaselineError("mag_cache needs mag_ratios or a calibration run (its ratios are per checkpoint)")
        ratios = _mag_ratios(pipe, denoiser, int(s["num_inference_steps"]), calibrate, names)
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
