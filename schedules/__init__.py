"""The schedule contract: what every part of cachesearch and every production pipeline speaks.

    from schedules import load_schedule, apply_schedule
    apply_schedule(pipe, load_schedule("pixart_alpha_fast.json"))
    image = pipe(prompt, num_inference_steps=20).images[0]

Needs only torch and diffusers, so a serving pipeline can apply an exported file without the search stack.
"""

from .adapters import ADAPTERS, Adapter, GroupLayout, describe
from .cost import CostTable, counting_mode, full_macs, mac_speedup, measure_cost_table, schedule_macs
from .errors import ScheduleConflictError, ScheduleError, ScheduleMismatchError, ScheduleStepError
from .io import json_schema, load_schedule, save_schedule
from .result import DONE, FAILED, EvaluationResult
from .runtime import ScheduleHandle, apply_schedule
from .schedule import (
    COMPUTE, FORMAT, FORMAT_VERSION, MODES, REUSE, SKIP, BlockGroup, ModelSpec, SamplingSpec, Schedule,
    genome_length,
)

__all__ = [
    "ADAPTERS", "Adapter", "GroupLayout", "describe",
    "CostTable", "counting_mode", "full_macs", "mac_speedup", "measure_cost_table", "schedule_macs",
    "ScheduleConflictError", "ScheduleError", "ScheduleMismatchError", "ScheduleStepError",
    "DONE", "FAILED", "EvaluationResult", "json_schema", "load_schedule", "save_schedule", "ScheduleHandle", "apply_schedule",
    "COMPUTE", "FORMAT", "FORMAT_VERSION", "MODES", "REUSE", "SKIP", "BlockGroup", "ModelSpec",
    "SamplingSpec", "Schedule", "genome_length",
]
