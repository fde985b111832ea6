"""MACs of a schedule as a sum over its plan, from one measurement on the live model.

One denoiser call is run under `torch.utils.flop_counter.FlopCounterMode`; the per-module counts give
the MACs of every scheduled component at that input shape, and the rest of the denoiser (embeddings,
norms' projections, gates' modulation, output head) is what is left of the total. Every step calls each
component with the same shapes, so a schedule's cost is `steps x rest + sum of computed components`.
No hand formulas: whatever the model does, the counter sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from .adapters import adapter_for, component_module, describe, find_denoiser, group_blocks
from .errors import ScheduleMismatchError
from .schedule import COMPUTE, Schedule


def _cpu_flash_attention_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    # torch's table lacks the CPU flash kernel that SDPA dispatches to on CPU; same count as SDPA.
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _custom_flop_mapping() -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        mapping[op] = _cpu_flash_attention_flop  # FlopCounterMode wraps custom entries itself
    return mapping


def counting_mode() -> FlopCounterMode:
    """A FlopCounterMode that also counts CPU attention; use it to measure any run."""
    return FlopCounterMode(display=False, custom_mapping=_custom_flop_mapping())


@dataclass(frozen=True)
class CostTable:
    """MACs per denoiser call at one input shape (batch and resolution)."""

    transformer_class: str
    component_macs: Mapping[str, Mapping[str, tuple[int, ...]]]   # group -> component -> per block
    other_macs: int                                               # everything else in one call
    batch_size: int | None = None
    height: int | None = None
    width: int | None = None

    @property
    def call_macs(self) -> int:
        return self.other_macs + sum(sum(v) for comps in self.component_macs.values() for v in comps.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "transformer_class": self.transformer_class,
            "component_macs": {g: {c: list(v) for c, v in comps.items()} for g, comps in self.component_macs.items()},
            "other_macs": self.other_macs, "batch_size": self.batch_size,
            "height": self.height, "width": self.width,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> "CostTable":
        return cls(doc["transformer_class"],
                   {g: {c: tuple(v) for c, v in comps.items()} for g, comps in doc["component_macs"].items()},
                   int(doc["other_macs"]), doc.get("batch_size"), doc.get("height"), doc.get("width"))


def measure_cost_table(pipe_or_model: Any, run: Callable[[], Any], batch_size: int | None = None,
                       height: int | None = None, width: int | None = None) -> CostTable:
    """Run `run()` (which must call the denoiser at least once, e.g. one pipeline step or a direct
    forward) under the counter, and divide by the number of denoiser calls it made."""
    model = find_denoiser(pipe_or_model)
    spec = describe(model)
    root = type(model).__name__
    calls = 0

    def count_call(*_: Any) -> None:
        nonlocal calls
        calls += 1

    handle = model.register_forward_pre_hook(count_call)
    try:
        with torch.no_grad(), counting_mode() as counter:
            run()
    finally:
        handle.remove()
    if calls == 0:
        raise ScheduleMismatchError("the measurement run never called the denoiser")
    counts = counter.get_flop_counts()

    def macs_of(path: str) -> int:
        return sum(counts.get(f"{root}.{path}", {}).values()) // 2

    layouts = {layout.attribute: layout for layout in adapter_for(model).groups}
    component_macs: dict[str, dict[str, tuple[int, ...]]] = {}
    covered = 0
    for group in spec.block_groups:
        blocks = group_blocks(model, layouts[group.name].attribute)
        per_comp: dict[str, tuple[int, ...]] = {}
        is_list = isinstance(getattr(model, group.name), torch.nn.ModuleList)
        for comp in group.components:
            values = []
            for b, block in enumerate(blocks):
                if component_module(block, comp) is None:
                    values.append(0)
                    continue
                path = f"{group.name}.{b}" if is_list else group.name
                if comp != "block":
                    path += f".{comp}"
                values.append(macs_of(path) // calls)
            per_comp[comp] = tuple(values)
            covered += sum(values)
        component_macs[group.name] = per_comp
    total = sum(counts.get(root, {}).values()) // 2 // calls
    return CostTable(root, component_macs, total - covered, batch_size, height, width)


def calls_per_step(schedule: Schedule) -> int:
    """Sequential CFG calls the denoiser twice per step; batched CFG or no CFG once."""
    return 2 if schedule.sampling.cfg == "sequential" else 1


def schedule_macs(schedule: Schedule, table: CostTable) -> int:
    """MACs of one sampling run under `schedule` (all denoiser calls of all steps)."""
    if schedule.model.transformer_class != table.transformer_class:
        raise ScheduleMismatchError(f"cost table is for {table.transformer_class}, schedule for "
                                    f"{schedule.model.transformer_class}")
    per_call = table.other_macs * schedule.num_steps
    listed = set(schedule.components())
    for g, c in schedule.components():
        macs = table.component_macs[g][c]
        for row in schedule.rows(g, c):
            per_call += sum(m for m, ch in zip(macs, row) if ch == COMPUTE)
    for g, comps in table.component_macs.items():   # what a subset schedule leaves out computes every step
        for c, macs in comps.items():
            if (g, c) not in listed:
                per_call += sum(macs) * schedule.num_steps
    return per_call * calls_per_step(schedule)


def full_macs(schedule: Schedule, table: CostTable) -> int:
    return table.call_macs * schedule.num_steps * calls_per_step(schedule)


def mac_speedup(schedule: Schedule, table: CostTable, reference: Schedule | None = None) -> float:
    """MACs of `reference` (default: all compute at the schedule's own steps) over the schedule's. A
    study's reference is its all-compute run at its default step count, so a schedule that samples
    fewer steps is faster by that too."""
    return full_macs(reference or schedule, table) / max(schedule_macs(schedule, table), 1)
