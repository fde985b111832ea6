"""Explicit timesteps and sigmas: what a schedule's values are, and how a pipeline is made to sample them.

A schedule either leaves the spacing of its K steps to the scheduler (`sampling.timesteps` and
`sampling.sigmas` both null) or lists the K values itself, in the scheduler's own terms:

- `sampling.timesteps`: discrete timesteps, what `set_timesteps(timesteps=...)` of a DDPM-family
  scheduler takes (DPM-Solver++, DDPM, Euler, LCM ...). They are used as given: a scheduler that
  would change them (DPM-Solver++ casts to integers) is refused, never followed silently.
- `sampling.sigmas`: what a flow-matching scheduler's `set_timesteps(sigmas=...)` takes (FLUX and
  SD3's FlowMatchEuler), *before* the scheduler's configured shift, exactly like the pipelines' own
  `sigmas=` argument; so the resolution-dependent shift of FLUX applies to them as it does to the
  pipeline's default `linspace(1, 1/K, K)`.

How a pipeline is made to sample them: for the duration of a scheduled pipeline call (`sampling_at`),
the scheduler's `set_timesteps` is replaced by one that forwards every argument the pipeline gave
(device, FLUX's `mu`, ...) but the step count and values, which come from the schedule; the scheduler
then reports exactly those values or the call fails. This works for every diffusers pipeline that
sets its timesteps through its scheduler (PixArt, SD3, FLUX, DiT, the embedded pipeline), whether or
not its `__call__` takes a `timesteps=` argument, and a plain `pipe(prompt)` is enough. A pipeline
that never calls `set_timesteps` (a custom loop) is an error after the call, not a silent run at the
pipeline's own spacing; such loops call `set_timesteps(scheduler, sampling)` themselves.

Which kind a scheduler samples by (`native_kind`): flow-matching schedulers by sigmas, every other by
timesteps. That decides the kind of a study's fine grid (`fine_grid`) and so of its schedules.
"""

from __future__ import annotations

import copy
import inspect
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from .errors import ScheduleMismatchError, ScheduleStepError
from .spec import SIGMAS, TIMESTEPS, SamplingSpec

FLOW_MATCHING_PREFIX = "FlowMatch"   # diffusers' flow-matching schedulers: FlowMatchEulerDiscreteScheduler, ...
_PATCH = "set_timesteps"


def is_flow_matching(scheduler: Any) -> bool:
    return type(scheduler).__name__.startswith(FLOW_MATCHING_PREFIX)


def native_kind(scheduler: Any) -> str:
    """"sigmas" for flow-matching schedulers (their timesteps derive from sigmas), else "timesteps"."""
    return SIGMAS if is_flow_matching(scheduler) else TIMESTEPS


def fine_grid(scheduler: Any, steps: int) -> tuple[str, tuple[float, ...]]:
    """(kind, values) of a `steps`-point grid in the scheduler's own terms: its own `steps`-step
    timesteps (so a K-of-M subset taken every M/K points is its own K-step schedule), or for flow
    matching the pipelines' default input sigmas `linspace(1, 1/M, M)`. Raises naming the scheduler
    class when it cannot sample custom values of that kind."""
    kind = native_kind(scheduler)
    if kind == SIGMAS:
        values = tuple(round(float(v), 10) for v in np.linspace(1.0, 1.0 / steps, steps))
    else:
        trial = copy.deepcopy(scheduler)
        _own(trial)(steps)
        values = tuple(float(t) for t in trial.timesteps.tolist())
    check_scheduler(scheduler, SamplingSpec(len(values), **{kind: values}))
    return kind, values


def check_scheduler(scheduler: Any, sampling: SamplingSpec) -> None:
    """Refuse, naming the scheduler class, a scheduler that cannot sample `sampling`'s explicit values
    exactly: no such argument, the other kind for flow matching, a config that forbids custom values
    (e.g. Karras sigmas), or values it would change. A dry run on a copy: the scheduler is untouched."""
    explicit = sampling.explicit
    if explicit is None:
        return
    kind, values = explicit
    name = type(scheduler).__name__
    if scheduler is None or not callable(getattr(scheduler, _PATCH, None)):
        raise ScheduleMismatchError(f"the schedule lists explicit {kind} but the pipeline has no scheduler with "
                                    "set_timesteps to sample them", field=f"sampling.{kind}")
    if kind not in inspect.signature(_own(scheduler)).parameters:
        example = "DPMSolverMultistepScheduler" if kind == TIMESTEPS else "FlowMatchEulerDiscreteScheduler"
        raise ScheduleMismatchError(f"{name} cannot sample custom {kind}: its set_timesteps takes no `{kind}` "
                                    f"argument (e.g. {example} can)", field=f"sampling.{kind}")
    if kind == TIMESTEPS and is_flow_matching(scheduler):
        raise ScheduleMismatchError(f"{name} samples by sigmas; this schedule lists timesteps (the scheduler would "
                                    "shift the sigmas it derives from them but use the timesteps unshifted)",
                                    field="sampling.timesteps")
    trial = copy.deepcopy(scheduler)
    extra = {"mu": 0.0} if _needs_mu(trial) else {}
    try:
        _own(trial)(**{kind: list(values)}, **extra)
    except (ValueError, TypeError, AssertionError) as exc:
        raise ScheduleMismatchError(f"{name} refuses the schedule's {kind}: {exc}", field=f"sampling.{kind}") from None
    _verify(trial, kind, values)


def set_timesteps(scheduler: Any, sampling: SamplingSpec, device: Any = None, **kwargs: Any) -> None:
    """Make `scheduler` sample the schedule's explicit values (for custom sampling loops; scheduled
    pipeline calls do this themselves). `kwargs` go to the scheduler as given (e.g. FLUX's `mu`)."""
    explicit = sampling.explicit
    if explicit is None:
        scheduler.set_timesteps(sampling.num_inference_steps, device=device, **kwargs)
        return
    kind, values = explicit
    scheduler.set_timesteps(device=device, **{kind: list(values)}, **kwargs)
    _verify(scheduler, kind, values)


def call_steps(sampling: SamplingSpec, passed: Mapping[str, Any]) -> int:
    """Steps a scheduled pipeline call runs, given the arguments the caller passed explicitly (defaults
    excluded): the schedule's K. Passing other values is an error before any work; passing the same
    ones (or none) is fine."""
    explicit = sampling.explicit
    assert explicit is not None
    kind, values = explicit
    for key in (TIMESTEPS, SIGMAS):
        given = passed.get(key)
        if given is None:
            continue
        if key != kind or _floats(given) != list(values):
            raise ScheduleStepError(f"the pipeline was called with its own {key}={_short(_floats(given))} but the "
                                    f"schedule samples sampling.{kind}={_short(values)}; call it without `{key}`")
    steps = passed.get("num_inference_steps")
    if steps is not None and steps != len(values):
        raise ScheduleStepError(f"the pipeline was called with {steps} denoising steps but the schedule samples "
                                f"{len(values)} explicit {kind} (sampling.num_inference_steps={len(values)}); "
                                "call it without num_inference_steps")
    return len(values)


@contextmanager
def sampling_at(pipeline: Any, sampling: SamplingSpec) -> Iterator[None]:
    """During one pipeline call, every `pipeline.scheduler.set_timesteps(...)` samples the schedule's
    explicit values (other arguments forwarded); afterwards the scheduler is as it was. No-op for a
    schedule without explicit values."""
    explicit = sampling.explicit
    if explicit is None:
        yield
        return
    kind, values = explicit
    scheduler = getattr(pipeline, "scheduler", None)
    check_scheduler(scheduler, sampling)   # the scheduler may have been swapped since apply
    original = getattr(scheduler, _PATCH)   # the class's, or another wrapper already on the instance
    params = inspect.signature(_own(scheduler))
    calls = 0

    def scheduled_set_timesteps(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        arguments = dict(params.bind_partial(*args, **kwargs).arguments)
        for key in ("num_inference_steps", TIMESTEPS, SIGMAS):
            arguments.pop(key, None)
        extra = arguments.pop("kwargs", {})   # a **kwargs parameter binds as one dict
        original(**arguments, **extra, **{kind: list(values)})
        _verify(scheduler, kind, values)
        calls += 1

    scheduled_set_timesteps.__signature__ = params   # type: ignore[attr-defined]  (retrieve_timesteps inspects it)
    had_own = _PATCH in vars(scheduler)
    saved = vars(scheduler).get(_PATCH)
    setattr(scheduler, _PATCH, scheduled_set_timesteps)
    try:
        yield
    finally:
        if had_own:
            setattr(scheduler, _PATCH, saved)
        else:
            delattr(scheduler, _PATCH)
    if calls == 0:
        raise ScheduleStepError(f"{type(pipeline).__name__} never called scheduler.set_timesteps, so the schedule's "
                                f"explicit {kind} were not applied (a custom sampling loop must call "
                                "schedules.timesteps.set_timesteps(scheduler, schedule.sampling))")


# ------------------------------------------------------------------ helpers
def _own(scheduler: Any) -> Any:
    """The scheduler class's own set_timesteps bound to `scheduler`, whatever is patched on the instance
    (a deep copy of a patched scheduler would otherwise call back into the original)."""
    return getattr(type(scheduler), _PATCH).__get__(scheduler, type(scheduler))


def _needs_mu(scheduler: Any) -> bool:
    config = getattr(scheduler, "config", {})
    return bool(config.get("use_dynamic_shifting", False)) and "mu" in inspect.signature(_own(scheduler)).parameters


def _verify(scheduler: Any, kind: str, values: Sequence[float]) -> None:
    """The scheduler now samples len(values) steps, at exactly `values` when they are timesteps."""
    name = type(scheduler).__name__
    got = _floats(scheduler.timesteps)
    if len(got) != len(values):
        raise ScheduleMismatchError(f"{name} turned the schedule's {len(values)} {kind} into {len(got)} timesteps "
                                    "(a solver that evaluates the model more than once per step?)",
                                    field=f"sampling.{kind}")
    if kind == TIMESTEPS and got != [float(v) for v in values]:
        changed = next(i for i, (a, b) in enumerate(zip(got, values)) if a != float(b))
        raise ScheduleMismatchError(f"{name} would sample timestep {got[changed]:g} where the schedule lists "
                                    f"{values[changed]:g} (step {changed}); it takes "
                                    f"{str(scheduler.timesteps.dtype).replace('torch.', '')} timesteps",
                                    field="sampling.timesteps")


def _floats(values: Any) -> list[float]:
    if hasattr(values, "tolist"):
        values = values.tolist()
    return [float(v) for v in values]


def _short(values: Sequence[float]) -> str:
    shown = ", ".join(f"{v:g}" for v in list(values)[:4])
    return f"[{shown}{', ...' if len(values) > 4 else ''}] ({len(values)} values)"
