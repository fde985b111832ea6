"""The schedule contract: what every part of cachesearch and every production pipeline speaks.

    from schedules import load_schedule, apply_schedule
    apply_schedule(pipe, load_schedule("pixart_alpha_fast.json"))
    image = pipe(prompt, num_inference_steps=20).images[0]

Needs only torch and diffusers, so a serving pipeline can apply an exported file without the search
stack. The format, validation and result types are pure Python; the parts that touch torch/diffusers
(adapters, runtime, cost model) load on first use, so the store and dashboard start without them.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import ScheduleConflictError, ScheduleError, ScheduleMismatchError, ScheduleStepError
from .io import json_schema, load_schedule, save_schedule
from .result import DONE, FAILED, RACED, BaselineResult, EvaluationResult
from .schedule import Schedule, genome_length
from .modes import DAMPED, FORECAST, MODE_TABLE, Mode, mode_of
from .objectives import COST_NAMES, Objective, ObjectiveError, Objectives, objective_value
from .spec import (
    COMPUTE, FORMAT, FORMAT_VERSION, MODES, REUSE, SIGMAS, SKIP, TIMESTEPS, BlockGroup, ModelSpec, SamplingSpec,
)

_LAZY = {
    "ADAPTERS": "adapters", "Adapter": "adapters", "GroupLayout": "adapters", "describe": "adapters",
    "CostTable": "cost", "cache_memory": "cost", "counting_mode": "cost", "full_macs": "cost", "mac_speedup": "cost",
    "measure_cost_table": "cost", "schedule_macs": "cost",
    "ScheduleHandle": "runtime", "apply_schedule": "runtime",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'schedules' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ScheduleConflictError", "ScheduleError", "ScheduleMismatchError", "ScheduleStepError",
    "json_schema", "load_schedule", "save_schedule", "DONE", "FAILED", "RACED", "BaselineResult", "EvaluationResult",
    "Schedule", "genome_length", "COMPUTE", "FORMAT", "FORMAT_VERSION", "MODES", "REUSE", "SKIP",
    "FORECAST", "DAMPED", "MODE_TABLE", "Mode", "mode_of", "TIMESTEPS", "SIGMAS",
    "BlockGroup", "ModelSpec", "SamplingSpec", "COST_NAMES", "Objective", "ObjectiveError", "Objectives",
    "objective_value", *_LAZY,
]
