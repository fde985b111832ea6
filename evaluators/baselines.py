"""Peer caching methods a user could turn on instead of searching, applied the way each one needs.

A registry of `Baseline` entries (one entry + one apply function per method). Each apply function
attaches the method to a pipeline's denoiser and returns a `BaselineHandle` that names the modules
it hooked — a method that hooks nothing is an error (`NothingHooked`), never a silent full-compute
"baseline" — and detaches cleanly.

The entries live beside it, one apply function each: diffusers' caches in
`evaluators/diffusers_peers.py`, cache-dit's DBCache in `evaluators/cache_dit_peer.py`; what each
needs on our families is written there. What all of them share is here: the registry, settings
checks and sweeps, the handle, attaching with a clean undo when a peer breaks half-way, and the
generic `cache_context` for pipelines that open none.

Stateful peers are reset before each pipeline call (`BaselineHandle.reset`).
"""

from __future__ import annotations

import inspect
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from diffusers.hooks import HookRegistry
from diffusers.hooks.hooks import CacheContext, _set_cache_context

from schedules.adapters import find_denoiser


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
    _extra: list[Any] = field(default_factory=list)              # objects with .remove()
    _resets: list[Callable[[], None]] = field(default_factory=list)   # per-run state outside the hooks
    failures: list[str] = field(default_factory=list)   # what the peer reported when it fell back to full compute

    def reset(self) -> None:
        HookRegistry.check_if_exists_or_initialize(self.denoiser).reset_stateful_hooks(recurse=True)
        for fn in self._resets:
            fn()

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
class PeerContext:
    """What an apply function may need besides its settings: `calibrate()` runs the pipeline once on
    calibration prompts (MagCache); `cfg` is how the pipeline runs guidance (`batched`, `sequential`,
    `none`; None: not known, and a peer that needs it refuses)."""

    calibrate: Callable[[], Any] | None = None
    cfg: str | None = None


@dataclass(frozen=True)
class Baseline:
    name: str
    description: str
    apply: Callable[..., BaselineHandle]
    defaults: Mapping[str, Any]
    probe: Mapping[str, Any] = field(default_factory=dict)   # settings under which it surely caches (tests)
    own_context: bool = False    # it sets the denoiser's cache context itself (no generic "cond" context)
    requires: str | None = None  # an optional package it needs (importable name), e.g. cache_dit
    extra: str | None = None     # the cachesearch extra that installs it

    @property
    def install_hint(self) -> str:
        return install_line(self.extra) if self.extra else ""

    @property
    def available(self) -> bool:
        """Whether its optional package is installed (looked up, not imported: cache-dit takes ~10 s)."""
        import importlib.util
        return self.requires is None or importlib.util.find_spec(self.requires) is not None


BASELINES: dict[str, Baseline] = {}


def register(name: str, description: str, *, probe: Mapping[str, Any] | None = None, own_context: bool = False,
             requires: str | None = None, extra: str | None = None,
             **defaults: Any) -> Callable[[Callable[..., BaselineHandle]], Callable]:
    """One registry entry per peer: its apply function `(pipe, denoiser, settings, PeerContext)`,
    default settings, and `probe` settings under which it is sure to skip work on any model (the
    contract test checks it really does)."""
    def deco(fn: Callable[..., BaselineHandle]) -> Callable[..., BaselineHandle]:
        BASELINES[name] = Baseline(name, description, fn, dict(defaults), dict(probe or {}), own_context, requires,
                                   extra)
        return fn
    return deco


def install_line(extra: str) -> str:
    return f"pip install 'cachesearch[{extra}]'"


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


def apply_baseline(pipe: Any, name: str, calibrate: Callable[[], Any] | None = None, cfg: str | None = None,
                   **settings: Any) -> BaselineHandle:
    """Attach baseline `name` with `settings` (defaults filled in) to `pipe`'s denoiser.
    `calibrate()` runs the pipeline once on calibration prompts (MagCache needs it); `cfg` is how the
    pipeline runs guidance (`evaluators.runner.CfgWatch`; FasterCache needs it)."""
    check_baseline(name, settings)
    entry = BASELINES[name]
    merged = {**entry.defaults, **settings}
    denoiser = find_denoiser(pipe)
    before = _HookSnapshot(denoiser)
    try:
        handle = entry.apply(pipe, denoiser, merged, PeerContext(calibrate, cfg))
    except (BaselineError, NothingHooked):
        before.restore()
        raise
    except Exception as exc:          # the peer's own code broke on this model: say so, leave nothing behind
        before.restore()
        raise BaselineError(f"{baseline_label(name, merged)} cannot be applied to {type(denoiser).__name__}: "
                            f"{type(exc).__name__}: {exc}") from exc
    # the diffusers caches set their context through the root registry's cached list of child
    # registries, built before these hooks existed (a pipeline that opens contexts itself, FLUX)
    HookRegistry.check_if_exists_or_initialize(denoiser).invalidate_child_registries_cache()
    if not handle.hooked:
        handle.remove()
        raise NothingHooked(f"{handle.label} hooked no module of {type(denoiser).__name__}")
    if not entry.own_context and not _pipeline_opens_cache_context(pipe):
        handle._extra.append(denoiser.register_forward_pre_hook(_open_context))
        handle._extra.append(denoiser.register_forward_hook(_close_context))
    return handle


class _HookSnapshot:
    """The diffusers hooks and torch forward hooks under a denoiser, to undo a half-applied peer."""

    def __init__(self, denoiser: torch.nn.Module) -> None:
        self.denoiser = denoiser
        self.diffusers = {id(m): set(getattr(m, "_diffusers_hook", None).hooks) if getattr(m, "_diffusers_hook", None)
                          else set() for m in denoiser.modules()}
        self.torch = {id(m): (set(m._forward_pre_hooks), set(m._forward_hooks)) for m in denoiser.modules()}

    def restore(self) -> None:
        for m in self.denoiser.modules():
            registry = getattr(m, "_diffusers_hook", None)
            if registry is not None:
                for name in [n for n in registry.hooks if n not in self.diffusers.get(id(m), set())]:
                    registry.remove_hook(name, recurse=False)
            pre, post = self.torch.get(id(m), (set(), set()))
            for key in [k for k in m._forward_pre_hooks if k not in pre]:
                del m._forward_pre_hooks[key]
            for key in [k for k in m._forward_hooks if k not in post]:
                del m._forward_hooks[key]
        HookRegistry.check_if_exists_or_initialize(self.denoiser).invalidate_child_registries_cache()


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


from . import cache_dit_peer, diffusers_peers  # noqa: E402,F401  (register their entries)
