"""Attach a schedule to a live diffusers model through diffusers' own hook system.

Three hook kinds, one job each (the shape of diffusers' `hooks/` package):
- `StepCounterHook` on the denoiser counts denoising steps per cache context and publishes the
  current step (and its position on the trajectory) as plain attributes for the other hooks.
- `ComponentCacheHook` on every component whose row is not all-compute: computes, or serves the cell
  from the State of its mode (the mode table in `modes.py`: reuse, skip, forecast, ...).
- `ReusedBlockHook` on every block that has a step where none of its components compute: at those
  steps it runs the family's fast path (`fastpaths.py`: the current gates on the cached outputs and the
  residual adds, nothing else) instead of the block's forward; at other steps it steps aside.

State is kept per cache context (diffusers' `cache_context("cond")` / `("uncond")` when a pipeline
runs CFG branches sequentially; one default context when CFG is batched, as in PixArt), so each branch
has its own step counter and its own cached outputs. On a pipeline, the call itself is wrapped so state
resets before every call, a step count that disagrees with the schedule is an error before any work,
and the scheduler samples the schedule's explicit timesteps or sigmas (`schedules.timesteps`).
Reuse returns the cached tensor object itself: no copy, no device sync. Hooks go only where a cell
differs from compute, so an all-compute schedule attaches nothing but the step counter.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, Callable

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, StateManager

from .adapters import (
    adapter_for, check_matches, component_module, describe, find_denoiser, group_blocks, present_components,
)
from .errors import ScheduleConflictError, ScheduleStepError
from .fastpaths import ArgReader, FastPath, Feeder, fast_steps, feeder_steps
from .io import PathLike, load_schedule
from .modes import MODE_TABLE, CellState
from .schedule import COMPUTE, SamplingSpec, Schedule
from .timesteps import call_steps, check_scheduler, sampling_at

STEP_HOOK = "cachesearch_step_counter"
COMPONENT_HOOK = "cachesearch_component_cache"
BLOCK_HOOK = "cachesearch_reused_block"
FEEDER_HOOK = "cachesearch_feeder"
_OUR_HOOKS = (STEP_HOOK, COMPONENT_HOOK, BLOCK_HOOK, FEEDER_HOOK)
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

    def clone(self) -> "_StepState":
        return copy.copy(self)


class StepCounterHook(ModelHook):
    """Advances the step counter of the current context on every denoiser call.

    `step`, `pattern` and `position` are plain attributes, valid for the whole denoiser call, so a
    component or block hook finds what to do with one attribute read. `pattern` numbers the distinct
    step patterns of the plan (steps whose every cell agrees share one), and the other hooks look
    their cell up by pattern, not by step: under `torch.compile`, dynamo then guards on the pattern,
    so a static schedule compiles one graph per distinct pattern (FORA-3: two), not one per step.
    The counting itself runs outside the graph (`torch.compiler.disable`: one graph break, at the
    top of the denoiser). `position` is the step's timestep value when `timesteps` (a callable giving
    one value per step, read once per trajectory) is set and a mode needs positions, else the step
    number; only forecast cells read it (so only forecast plans compile one graph per step).
    """

    _is_stateful = True

    def __init__(self, num_steps: int, strict: bool, patterns: tuple[int, ...] | None = None):
        super().__init__()
        self.num_steps = num_steps
        self.strict = strict  # on a wrapped pipeline, more calls than steps is an error, not a wrap
        self.patterns = patterns if patterns is not None else tuple(range(num_steps))
        self.states = _ContextStates(_StepState)
        self.timesteps: Callable[[], list[float] | None] | None = None
        self._positions: list[float] | None = None
        self.step = self.pattern = -1
        self.position = -1.0

    @torch.compiler.disable
    def pre_forward(self, module: torch.nn.Module, *args, **kwargs):
        state = self.states.get_state()
        explicit = self.states.context_step_index
        if state.calls >= self.num_steps and explicit is None:
            if self.strict:
                raise ScheduleStepError(
                    f"the pipeline called the denoiser for more than {self.num_steps} steps in one "
                    f"context; the schedule has sampling.num_inference_steps={self.num_steps}")
            state.calls = 0  # bare denoiser: the next trajectory starts
        step = state.step = explicit if explicit is not None else state.calls
        state.calls += 1
        if not 0 <= step < self.num_steps:
            raise ScheduleStepError(f"step index {step} is outside the schedule's {self.num_steps} steps")
        if step == 0 and self.timesteps is not None:
            values = self.timesteps()
            self._positions = values if values is not None and len(values) == self.num_steps else None
        self.step = step
        self.pattern = self.patterns[step]
        self.position = float(self._positions[step]) if self._positions is not None else float(step)
        return args, kwargs

    def current_step(self) -> int:
        return self.states.get_state().step

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.states.reset()
        self._positions = None
        self.step = self.pattern = -1
        self.position = -1.0
        return module


def step_patterns(schedule: Schedule) -> tuple[int, ...]:
    """Numbers the distinct step patterns: steps s and t share a number iff every cell of the plan
    agrees at s and t (in order of first appearance)."""
    index: dict[tuple[str, ...], int] = {}
    keys = [tuple(schedule.rows(g, c)[s] for g, c in schedule.components()) for s in range(schedule.num_steps)]
    return tuple(index.setdefault(k, len(index)) for k in keys)


def _by_pattern(per_step: tuple[Any, ...], patterns: tuple[int, ...]) -> tuple[Any, ...]:
    """A per-step tuple re-indexed by pattern number (every step of a pattern has the same value)."""
    out: dict[int, Any] = {}
    for step, p in enumerate(patterns):
        out.setdefault(p, per_step[step])
    return tuple(out[p] for p in range(len(out)))


class _CellStates(BaseState):
    """One CellState per non-compute mode a component's row uses (e.g. reuse and forecast), fed by
    every compute of that component. States share tensors (a reuse and a forecast state hold the
    same last output), so memory is the largest history, not the sum."""

    def __init__(self, kinds: tuple[tuple[str, type[CellState]], ...]) -> None:
        self.by_mode = {char: cls() for char, cls in kinds}
        self.all = tuple(self.by_mode.values())
        self.history: tuple = ()        # the last two computes, ((output, position), ...), oldest first

    def update(self, output: Any, position: float) -> None:
        self.history = (*self.history[-1:], (output, position))
        for state in self.all:
            state.update(output, position)

    def replay(self, history: tuple) -> None:
        """Rebuild every state from another run's last two computes (no state looks further back)."""
        self.reset()
        for output, position in history:
            self.update(output, position)

    def reset(self) -> None:
        self.history = ()
        for state in self.all:
            state.reset()

    def clone(self) -> "_CellStates":
        """A copy that shares the cached tensors (the runtime never writes into a tensor it keeps)."""
        twin = copy.copy(self)
        twin.by_mode = {char: copy.copy(state) for char, state in self.by_mode.items()}
        twin.all = tuple(twin.by_mode.values())
        return twin


class ComponentCacheHook(ModelHook):
    """Computes one component, or serves its cell from the State of the cell's mode."""

    _is_stateful = True

    def __init__(self, modes_by_step: str, counter: StepCounterHook, where: str, record: bool = False):
        super().__init__()
        self.modes_by_step = modes_by_step  # one character per step for this (component, block)
        self.cells = tuple(MODE_TABLE[ch] for ch in modes_by_step)
        self.by_pattern = _by_pattern(self.cells, counter.patterns)
        kinds = tuple(sorted({(m.char, m.state) for m in self.cells if m.state is not None}))
        self.kinds = kinds
        # `record`: keep exact positions for a snapshot that a forecasting schedule may resume from
        self.uses_position = record or any(cls.uses_position for _, cls in kinds)
        self.counter = counter
        self.where = where
        self.states = _ContextStates(_CellStates, (kinds,))

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        mode = self.by_pattern[self.counter.pattern]
        if mode.calls_module:
            output = self.fn_ref.original_forward(*args, **kwargs)
            self.states.get_state().update(output, self.counter.position if self.uses_position else 0.0)
            return output
        return self._serve(mode.char)

    def cell_output(self) -> Any:
        """This step's output without calling the module: what a block fast path consumes
        (None where the cell contributes nothing, i.e. a skip)."""
        mode = self.by_pattern[self.counter.pattern]
        return self._serve(mode.char) if mode.contributes else None

    def _serve(self, char: str) -> Any:
        position = self.counter.position if self.uses_position else 0.0
        value = self.states.get_state().by_mode[char].predict(position)
        if value is None:
            raise ScheduleStepError(f"{self.where}: nothing computed yet to serve '{char}' at step "
                                    f"{self.counter.step} (was the step counter reset mid-call?)")
        return value

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.states.reset()
        return module


class _LastOutput(BaseState):
    def __init__(self) -> None:
        self.output: Any = None

    def reset(self) -> None:
        self.output = None

    def clone(self) -> "_LastOutput":
        return copy.copy(self)


class FeederHook(ModelHook):
    """Runs a feeder (see `fastpaths.Feeder`) only at the steps where a component it feeds computes;
    elsewhere returns its last output, which nothing reads."""

    _is_stateful = True

    def __init__(self, needed: tuple[bool, ...], counter: StepCounterHook):
        super().__init__()
        self.needed = _by_pattern(needed, counter.patterns)
        self.counter = counter
        self.states = _ContextStates(_LastOutput)

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        state = self.states.get_state()
        if self.needed[self.counter.pattern] or state.output is None:
            state.output = self.fn_ref.original_forward(*args, **kwargs)
        return state.output

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.states.reset()
        return module


class ReusedBlockHook(ModelHook):
    """At the steps where none of a block's components compute, runs the family's fast path on the
    components' cell outputs instead of the block's forward; otherwise calls the forward (whose
    component hooks do the per-component work)."""

    def __init__(self, fast_steps: tuple[bool, ...], components: dict[str, ComponentCacheHook],
                 fast_path: FastPath, read: ArgReader, counter: StepCounterHook):
        super().__init__()
        self.fast_steps = fast_steps
        self.fast_by_pattern = _by_pattern(fast_steps, counter.patterns)
        self.components = components
        self.fast_path = fast_path
        self.read = read
        self.counter = counter

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        if self.fast_by_pattern[self.counter.pattern]:
            outputs = {name: hook.cell_output() for name, hook in self.components.items()}
            result = self.fast_path.run(module, self.read, outputs, args, kwargs)
            if result is not None:
                return result
        return self.fn_ref.original_forward(*args, **kwargs)


class ScheduleHandle:
    """What `apply_schedule` returns: `remove()` restores plain behaviour; also a context manager."""

    def __init__(self, schedule: Schedule, denoiser: torch.nn.Module, pipeline: object | None):
        self.schedule = schedule
        self.denoiser = denoiser
        self.pipeline = pipeline
        self._hooked: list[tuple[torch.nn.Module, str]] = []   # (module, hook name), attach order
        self._paths = {m: n for n, m in denoiser.named_modules()}
        self.fast_blocks: list[str] = []                         # blocks with a fast path attached
        self.skipped_feeders: list[str] = []                     # feeders that sit out some steps
        self._counter: StepCounterHook | None = None
        self._pipeline_class: type | None = None
        self.active = False

    def reset(self) -> None:
        """Forget step counters and cached outputs (done automatically before each pipeline call)."""
        HookRegistry.check_if_exists_or_initialize(self.denoiser).reset_stateful_hooks(recurse=True)

    def state(self) -> dict[str, Any]:
        """Everything a sampling run must restore to resume at a later step exactly: the step
        counters, and per component and feeder module (by its path in the denoiser) and cache
        context the last two computed outputs. Keyed by module, not hook, so a schedule applied
        later (new hooks, other modes) can resume from it (`load_state`). Complete only for a handle
        applied with `record_history=True`, which hooks every component. Tensors are shared, not
        copied: the runtime never writes into a tensor it keeps."""
        out: dict[str, Any] = {"counter": {ctx: st.clone() for ctx, st in self._counter.states._state_cache.items()},
                               "positions": self._counter._positions, "modules": {}}
        for module, name in self._hooked:
            hook = HookRegistry.check_if_exists_or_initialize(module).get_hook(name)
            if isinstance(hook, ComponentCacheHook):
                out["modules"][(self._paths[module], name)] = {
                    ctx: st.history for ctx, st in hook.states._state_cache.items()}
            elif isinstance(hook, FeederHook):
                out["modules"][(self._paths[module], name)] = {
                    ctx: st.output for ctx, st in hook.states._state_cache.items()}
        return out

    def load_state(self, saved: dict[str, Any]) -> None:
        self._counter.states._state_cache = {ctx: st.clone() for ctx, st in saved["counter"].items()}
        self._counter._positions = saved["positions"]
        for module, name in self._hooked:
            hook = HookRegistry.check_if_exists_or_initialize(module).get_hook(name)
            entry = saved["modules"].get((self._paths[module], name))
            if isinstance(hook, ComponentCacheHook):
                if entry is None:
                    raise ScheduleStepError(f"{hook.where}: the saved state has no outputs of this component "
                                            "(it was saved without record_history)")
                hook.states._state_cache = {}
                for ctx, history in entry.items():
                    state = hook.states._state_cache[ctx] = _CellStates(hook.kinds)
                    state.replay(history)
            elif isinstance(hook, FeederHook) and entry is not None:
                hook.states._state_cache = {}
                for ctx, output in entry.items():
                    hook.states._state_cache[ctx] = _LastOutput()
                    hook.states._state_cache[ctx].output = output

    def steps_run(self) -> dict[str, int]:
        """Steps run per cache context since the last reset."""
        if self._counter is None:
            return {}
        return {name: st.calls for name, st in self._counter.states._state_cache.items()}

    def remove(self) -> None:
        if not self.active:
            return
        registry = HookRegistry.check_if_exists_or_initialize(self.denoiser)
        for module, name in reversed(self._hooked):
            HookRegistry.check_if_exists_or_initialize(module).remove_hook(name, recurse=False)
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


def apply_schedule(pipe_or_model: Any, schedule: Schedule | PathLike | dict,
                   fast_paths: bool = True, record_history: bool = False) -> ScheduleHandle:
    """Attach `schedule` to a pipeline (its `.transformer`/`.unet`) or to a denoiser module.

    Everything is checked before anything is attached, so a mismatch leaves the model as it was.
    `fast_paths=False` keeps every block's own forward (component hooks only): the same outputs bit
    for bit, slower; it exists so tests and benchmarks can compare the two. `record_history=True`
    also hooks the components and feeders that compute at every step, so `handle.state()` holds
    what any other schedule needs to resume from it (prefix-shared evaluation); outputs unchanged.
    """
    schedule = load_schedule(schedule)
    denoiser = find_denoiser(pipe_or_model)
    pipeline = None if isinstance(pipe_or_model, torch.nn.Module) else pipe_or_model
    check_matches(schedule.model, denoiser)
    schedule = schedule.completed(describe(denoiser).block_groups)   # a subset file: the rest computes
    _refuse_conflicts(denoiser)
    if pipeline is not None:
        check_scheduler(getattr(pipeline, "scheduler", None), schedule.sampling)   # explicit timesteps/sigmas

    handle = ScheduleHandle(schedule, denoiser, pipeline)
    counter = StepCounterHook(schedule.num_steps, strict=pipeline is not None, patterns=step_patterns(schedule))
    HookRegistry.check_if_exists_or_initialize(denoiser).register_hook(counter, STEP_HOOK)
    handle._counter = counter
    adapter = adapter_for(denoiser)
    layouts = {layout.attribute: layout for layout in adapter.groups}
    uses_position = False
    for group in schedule.model.block_groups:
        layout = layouts[group.name]
        for b, block in enumerate(group_blocks(denoiser, layout.attribute)):
            for comp in group.components:
                module = component_module(block, comp)
                if module is None:
                    continue
                modes = "".join(row[b] for row in schedule.rows(group.name, comp))
                if set(modes) == {COMPUTE} and not record_history:
                    continue  # nothing to decide: no hook, no overhead
                hook = ComponentCacheHook(modes, counter, f"{group.name}[{b}].{comp}", record=record_history)
                uses_position |= hook.uses_position
                _register(handle, module, hook, COMPONENT_HOOK)
            if fast_paths and layout.fast_path is not None and layout.fast_path.applies(block):
                _attach_fast_path(handle, block, b, group, layout.fast_path, counter)
    if fast_paths:
        _attach_feeders(handle, denoiser, adapter.feeders, counter, record_history)
    HookRegistry.check_if_exists_or_initialize(denoiser).invalidate_child_registries_cache()
    if (uses_position or record_history) and pipeline is not None:
        counter.timesteps = _scheduler_timesteps(pipeline)
    handle.active = True
    if pipeline is not None:
        _wrap_pipeline_call(pipeline, handle)
    return handle


def _register(handle: ScheduleHandle, module: torch.nn.Module, hook: ModelHook, name: str) -> None:
    HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, name)
    handle._hooked.append((module, name))


def _attach_fast_path(handle: ScheduleHandle, block: torch.nn.Module, b: int, group: Any, fast_path: FastPath,
                      counter: StepCounterHook) -> None:
    """A ReusedBlockHook on `block` if some step computes none of its components."""
    present = [c for c in group.components if component_module(block, c) is not None]
    flags = fast_steps(handle.schedule, group.name, b, present)
    if not any(flags):
        return
    hooks = {c: HookRegistry.check_if_exists_or_initialize(component_module(block, c)).get_hook(COMPONENT_HOOK)
             for c in present}
    _register(handle, block, ReusedBlockHook(flags, hooks, fast_path, ArgReader(block), counter), BLOCK_HOOK)
    handle.fast_blocks.append(f"{group.name}[{b}]")


def _attach_feeders(handle: ScheduleHandle, denoiser: torch.nn.Module, feeders: tuple[Feeder, ...],
                    counter: StepCounterHook, record: bool = False) -> None:
    present = present_components(denoiser, handle.schedule.model)
    for feeder in feeders:
        module = getattr(denoiser, feeder.attribute, None)
        if not isinstance(module, torch.nn.Module):
            continue
        needed = feeder_steps(handle.schedule, feeder, present)
        if all(needed) and not record:
            continue
        _register(handle, module, FeederHook(needed, counter), FEEDER_HOOK)
        if not all(needed):
            handle.skipped_feeders.append(feeder.attribute)


def _scheduler_timesteps(pipeline: object) -> Callable[[], list[float] | None]:
    """Reads the pipeline scheduler's timesteps at a trajectory's first denoiser call (one host read
    per pipeline call), for modes that extrapolate in timestep."""
    def read() -> list[float] | None:
        values = getattr(getattr(pipeline, "scheduler", None), "timesteps", None)
        if values is None:
            return None
        return [float(v) for v in (values.tolist() if hasattr(values, "tolist") else values)]
    return read


def _refuse_conflicts(denoiser: torch.nn.Module) -> None:
    config = getattr(denoiser, "_cache_config", None)
    if config is not None:
        raise ScheduleConflictError(f"another caching method is enabled on the model "
                                    f"({type(config).__name__}); call disable_cache() first")
    for name, module in denoiser.named_modules():
        registry = getattr(module, "_diffusers_hook", None)
        if registry is None:
            continue
        if any(name in registry.hooks for name in _OUR_HOOKS):
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
