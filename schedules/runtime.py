"""Attach a schedule to a live diffusers model through diffusers' own hook system.

Two hook kinds, one job each (the shape of diffusers' `hooks/` package):
- `StepCounterHook` on the denoiser counts denoising steps per cache context.
- `ComponentCacheHook` on every scheduled component computes, reuses its last output, or skips,
  as the plan says for the current step.

State is kept per cache context (diffusers' `cache_context("cond")` / `("uncond")` when a pipeline
runs CFG branches sequentially; one default context when CFG is batched, as in PixArt), so each branch
has its own step counter and its own cached outputs. On a pipeline, the call itself is wrapped so state
resets before every call, a step count that disagrees with the schedule is an error before any work,
and the scheduler samples the schedule's explicit timesteps or sigmas (`schedules.timesteps`).
Reuse returns the cached tensor object itself: no copy, no device sync.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, StateManager

from .adapters import adapter_for, check_matches, component_module, find_denoiser, group_blocks
from .errors import ScheduleConflictError, ScheduleStepError
from .io import PathLike, load_schedule
from .schedule import COMPUTE, REUSE, SamplingSpec, Schedule
from .timesteps import call_steps, check_scheduler, sampling_at

STEP_HOOK = "cachesearch_step_counter"
COMPONENT_HOOK = "cachesearch_component_cache"
_DEFAULT_CONTEXT = "default"


class _ContextStates(StateManager):
    """diffusers' StateManager, falling back to one default context when no `cache_context` is set
    (PixArt's pipeline batches CFG and never sets one)."""

    def get_state(self):
        name = self._context.name if self._context is not None else _DEFAULT_CONTEXT
        state = self._state_cache.get(name)
        if state is None:
            state = self._state_cache[name] = self._state_cls(*self._init_args, **self._init_kwargs)
        return state

    @property
    def context_step_index(self) -> int | None:
        return getattr(self._context, "step_index", None) if self._context is not None else None


class _StepState(BaseState):
    def __init__(self) -> None:
        self.calls = 0
        self.step = -1

    def reset(self) -> None:
        self.calls = 0
        self.step = -1


class _CacheState(BaseState):
    def __init__(self) -> None:
        self.output: Any = None
        self.zeros: Any = None

    def reset(self) -> None:
        self.output = None
        self.zeros = None


class StepCounterHook(ModelHook):
    """Advances the step counter of the current context on every denoiser call."""

    _is_stateful = True

    def __init__(self, num_steps: int, strict: bool):
        super().__init__()
        self.num_steps = num_steps
        self.strict = strict  # on a wrapped pipeline, more calls than steps is an error, not a wrap
        self.states = _ContextStates(_StepState)

    def pre_forward(self, module: torch.nn.Module, *args, **kwargs):
        state = self.states.get_state()
        explicit = self.states.context_step_index
        if state.calls >= self.num_steps and explicit is None:
            if self.strict:
                raise ScheduleStepError(
                    f"the pipeline called the denoiser for more than {self.num_steps} steps in one "
                    f"context; the schedule has sampling.num_inference_steps={self.num_steps}")
            state.calls = 0  # bare denoiser: the next trajectory starts
        state.step = explicit if explicit is not None else state.calls
        state.calls += 1
        if not 0 <= state.step < self.num_steps:
            raise ScheduleStepError(f"step index {state.step} is outside the schedule's "
                                    f"{self.num_steps} steps")
        return args, kwargs

    def current_step(self) -> int:
        return self.states.get_state().step

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.states.reset()
        return module


class ComponentCacheHook(ModelHook):
    """Computes, reuses or skips one component, as its row of the plan says for the current step."""

    _is_stateful = True

    def __init__(self, modes_by_step: str, counter: StepCounterHook, where: str):
        super().__init__()
        self.modes_by_step = modes_by_step  # one character per step for this (component, block)
        self.counter = counter
        self.where = where
        self.states = _ContextStates(_CacheState)

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        mode = self.modes_by_step[self.counter.current_step()]
        state = self.states.get_state()
        if mode == COMPUTE:
            output = self.fn_ref.original_forward(*args, **kwargs)
            state.output = output
            state.zeros = None
            return output
        if state.output is None:
            raise ScheduleStepError(f"{self.where}: nothing cached to reuse at step "
                                    f"{self.counter.current_step()} (was the step counter reset mid-call?)")
        if mode == REUSE:
            return state.output
        if state.zeros is None:
            state.zeros = _zeros_like(state.output)
        return state.zeros

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.states.reset()
        return module


def _zeros_like(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return torch.zeros_like(value)
    if isinstance(value, tuple):
        return tuple(_zeros_like(v) for v in value)
    if isinstance(value, list):
        return [_zeros_like(v) for v in value]
    return value


class ScheduleHandle:
    """What `apply_schedule` returns: `remove()` restores plain behaviour; also a context manager."""

    def __init__(self, schedule: Schedule, denoiser: torch.nn.Module, pipeline: object | None):
        self.schedule = schedule
        self.denoiser = denoiser
        self.pipeline = pipeline
        self._hooked: list[torch.nn.Module] = []
        self._counter: StepCounterHook | None = None
        self._pipeline_class: type | None = None
        self.active = False

    def reset(self) -> None:
        """Forget step counters and cached outputs (done automatically before each pipeline call)."""
        HookRegistry.check_if_exists_or_initialize(self.denoiser).reset_stateful_hooks(recurse=True)

    def steps_run(self) -> dict[str, int]:
        """Steps run per cache context since the last reset."""
        if self._counter is None:
            return {}
        return {name: st.calls for name, st in self._counter.states._state_cache.items()}

    def remove(self) -> None:
        if not self.active:
            return
        registry = HookRegistry.check_if_exists_or_initialize(self.denoiser)
        for module in self._hooked:
            HookRegistry.check_if_exists_or_initialize(module).remove_hook(COMPONENT_HOOK, recurse=False)
        registry.remove_hook(STEP_HOOK, recurse=False)
        registry.invalidate_child_registries_cache()
        if self._pipeline_class is not None:
            self.pipeline.__class__ = self._pipeline_class
        self._hooked.clear()
        self.active = False

    def __enter__(self) -> "ScheduleHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def __repr__(self) -> str:
        return f"ScheduleHandle({self.schedule!r}, active={self.active})"


def apply_schedule(pipe_or_model: Any, schedule: Schedule | PathLike | dict) -> ScheduleHandle:
    """Attach `schedule` to a pipeline (its `.transformer`/`.unet`) or to a denoiser module.

    Everything is checked before anything is attached, so a mismatch leaves the model as it was.
    """
    schedule = load_schedule(schedule)
    denoiser = find_denoiser(pipe_or_model)
    pipeline = None if isinstance(pipe_or_model, torch.nn.Module) else pipe_or_model
    check_matches(schedule.model, denoiser)
    _refuse_conflicts(denoiser)
    if pipeline is not None:
        check_scheduler(getattr(pipeline, "scheduler", None), schedule.sampling)   # explicit timesteps/sigmas

    handle = ScheduleHandle(schedule, denoiser, pipeline)
    counter = StepCounterHook(schedule.num_steps, strict=pipeline is not None)
    HookRegistry.check_if_exists_or_initialize(denoiser).register_hook(counter, STEP_HOOK)
    handle._counter = counter
    adapter = adapter_for(denoiser)
    layouts = {layout.attribute: layout for layout in adapter.groups}
    for group in schedule.model.block_groups:
        blocks = group_blocks(denoiser, layouts[group.name].attribute)
        for comp in group.components:
            rows = schedule.rows(group.name, comp)
            for b, block in enumerate(blocks):
                module = component_module(block, comp)
                if module is None:
                    continue
                modes = "".join(row[b] for row in rows)
                if set(modes) == {COMPUTE}:
                    continue  # nothing to decide: no hook, no overhead
                hook = ComponentCacheHook(modes, counter, f"{group.name}[{b}].{comp}")
                HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, COMPONENT_HOOK)
                handle._hooked.append(module)
    HookRegistry.check_if_exists_or_initialize(denoiser).invalidate_child_registries_cache()
    handle.active = True
    if pipeline is not None:
        _wrap_pipeline_call(pipeline, handle)
    return handle


def _refuse_conflicts(denoiser: torch.nn.Module) -> None:
    config = getattr(denoiser, "_cache_config", None)
    if config is not None:
        raise ScheduleConflictError(f"another caching method is enabled on the model "
                                    f"({type(config).__name__}); call disable_cache() first")
    for name, module in denoiser.named_modules():
        registry = getattr(module, "_diffusers_hook", None)
        if registry is None:
            continue
        if STEP_HOOK in registry.hooks or COMPONENT_HOOK in registry.hooks:
            raise ScheduleConflictError("a schedule is already applied to this model; remove() it first")
        stateful = [n for n, h in registry.hooks.items() if getattr(h, "_is_stateful", False)]
        if stateful:
            raise ScheduleConflictError(f"another caching hook is attached at '{name or '<root>'}': "
                                        f"{stateful}; remove it first")


def _expected_steps(pipeline_cls: type, pipeline: object, args: tuple, kwargs: dict,
                    sampling: SamplingSpec) -> int | None:
    try:
        bound = inspect.signature(pipeline_cls.__call__).bind_partial(pipeline, *args, **kwargs)
    except TypeError:
        return None
    params = inspect.signature(pipeline_cls.__call__).parameters
    values = dict(bound.arguments)
    if sampling.explicit is not None:   # the schedule's own timesteps/sigmas; the call's defaults do not count
        return call_steps(sampling, values)
    for key in ("timesteps", "sigmas"):
        if values.get(key) is not None:
            return len(values[key])
    if "num_inference_steps" in values:
        return values["num_inference_steps"]
    param = params.get("num_inference_steps")
    if param is not None and param.default is not inspect.Parameter.empty:
        return param.default
    return None


def _wrap_pipeline_call(pipeline: object, handle: ScheduleHandle) -> None:
    """Swap the pipeline's class for a subclass whose __call__ resets state and checks step counts.

    (`pipe(...)` looks `__call__` up on the class, so an instance attribute would be ignored.)
    """
    original = type(pipeline)
    n = handle.schedule.num_steps

    def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
        expected = _expected_steps(original, self, args, kwargs, handle.schedule.sampling)
        if expected is not None and expected != n:
            raise ScheduleStepError(f"the pipeline was called with {expected} denoising steps but the "
                                    f"schedule has sampling.num_inference_steps={n}")
        handle.reset()
        with sampling_at(self, handle.schedule.sampling):
            output = original.__call__(self, *args, **kwargs)
        short = {ctx: calls for ctx, calls in handle.steps_run().items() if calls != n}
        if short:
            raise ScheduleStepError(f"the pipeline ran {short} denoising steps per context; the schedule "
                                    f"has {n} (img2img strength < 1 or a custom loop?)")
        return output

    wrapped = type(original.__name__, (original,), {
        "__call__": __call__, "__module__": original.__module__, "__qualname__": original.__qualname__,
        "__doc__": original.__doc__,
    })
    pipeline.__class__ = wrapped
    handle._pipeline_class = original
