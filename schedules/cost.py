"""MACs of a schedule as a sum over its plan, from one measurement on the live model.

One denoiser call is run under `torch.utils.flop_counter.FlopCounterMode`; the per-module counts give
the MACs of every scheduled component at that input shape, of each block's own work outside its
components (the modulation projections of adaLN-zero blocks, say), and of the rest of the denoiser
(embeddings, output head). The same inputs then run each block's fast path (`fastpaths.py`) under the
counter, because a block none of whose components compute does less than its forward (SD3's last
block drops the projection that only fed its attention). Every step calls each component with the
same shapes, so a schedule's cost is a sum over its cells (`schedule_macs`). No hand formulas:
whatever the model does, the counter sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from .adapters import adapter_for, feeders_of, component_module, describe, find_denoiser, group_blocks
from .errors import ScheduleMismatchError
from .fastpaths import ArgReader, fast_steps, feeder_steps
from .modes import MODE_TABLE
from .schedule import BlockGroup, Schedule


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


class DenoiserFlops:
    """FLOPs of the denoiser calls made inside the block (the cost table's scope: no text encoder, no
    VAE), for methods whose work is only known by running them (the peers): `counting_mode` entered
    by a forward pre-hook on the denoiser and left by its forward hook.

    The counter's module tracker first meets the denoiser inside its call; it is shown the module tree
    as it stands before the forward runs, so that a peer which rewires the tree during its forward
    (cache-dit swaps in a block list that holds the transformer as a child: a cycle) does not send the
    tracker's name walk round that cycle for ever."""

    def __init__(self, denoiser: torch.nn.Module) -> None:
        self.denoiser, self.flops, self._handles = denoiser, 0, []
        self._mode: Any = None

    def __enter__(self) -> "DenoiserFlops":
        def enter(module: torch.nn.Module, args: Any, kwargs: Any) -> None:
            self._mode = counting_mode()
            self._mode.__enter__()
            tracker = getattr(self._mode, "mod_tracker", None)
            if tracker is not None and hasattr(tracker, "_get_mod_name"):
                tracker._get_mod_name(module)

        def leave(module: torch.nn.Module, args: Any, kwargs: Any, output: Any) -> None:
            self._mode.__exit__(None, None, None)
            self.flops += self._mode.get_total_flops()
            self._mode = None

        self._handles = [self.denoiser.register_forward_pre_hook(enter, with_kwargs=True, prepend=True),
                         self.denoiser.register_forward_hook(leave, with_kwargs=True, always_call=True)]
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        if self._mode is not None:
            self._mode.__exit__(None, None, None)


@dataclass(frozen=True)
class CostTable:
    """MACs per denoiser call at one input shape (batch and resolution).

    `block_macs[g][b]`: block b's own MACs outside its components when its forward runs;
    `fast_block_macs[g][b]`: its MACs on the fast path (None: the block has no fast path and runs
    its forward at every step); `block_components[g][b]`: the components block b really has (SD3's
    last block has no ff_context); `feeder_macs[attr]`: MACs of each adapter feeder (counted at the
    steps that need it, see `fastpaths.feeder_steps`). `other_macs`: the rest of one call, outside
    every block and feeder.
    """

    transformer_class: str
    component_macs: Mapping[str, Mapping[str, tuple[int, ...]]]   # group -> component -> per block
    other_macs: int                                               # one call, outside the blocks
    batch_size: int | None = None
    height: int | None = None
    width: int | None = None
    block_macs: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    fast_block_macs: Mapping[str, tuple[int | None, ...]] = field(default_factory=dict)
    block_components: Mapping[str, tuple[tuple[str, ...], ...]] = field(default_factory=dict)
    feeder_macs: Mapping[str, int] = field(default_factory=dict)
    output_bytes: Mapping[str, Mapping[str, tuple[int, ...]]] = field(default_factory=dict)  # per block

    @property
    def call_macs(self) -> int:
        return (self.other_macs + sum(sum(v) for comps in self.component_macs.values() for v in comps.values())
                + sum(sum(v) for v in self.block_macs.values()) + sum(self.feeder_macs.values()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "transformer_class": self.transformer_class,
            "component_macs": {g: {c: list(v) for c, v in comps.items()} for g, comps in self.component_macs.items()},
            "other_macs": self.other_macs, "batch_size": self.batch_size,
            "height": self.height, "width": self.width,
            "block_macs": {g: list(v) for g, v in self.block_macs.items()},
            "fast_block_macs": {g: list(v) for g, v in self.fast_block_macs.items()},
            "block_components": {g: [list(c) for c in v] for g, v in self.block_components.items()},
            "feeder_macs": dict(self.feeder_macs),
            "output_bytes": {g: {c: list(v) for c, v in comps.items()} for g, comps in self.output_bytes.items()},
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> "CostTable":
        return cls(doc["transformer_class"],
                   {g: {c: tuple(v) for c, v in comps.items()} for g, comps in doc["component_macs"].items()},
                   int(doc["other_macs"]), doc.get("batch_size"), doc.get("height"), doc.get("width"),
                   {g: tuple(v) for g, v in (doc.get("block_macs") or {}).items()},
                   {g: tuple(v) for g, v in (doc.get("fast_block_macs") or {}).items()},
                   {g: tuple(tuple(c) for c in v) for g, v in (doc.get("block_components") or {}).items()},
                   {k: int(v) for k, v in (doc.get("feeder_macs") or {}).items()},
                   {g: {c: tuple(v) for c, v in comps.items()} for g, comps in (doc.get("output_bytes") or {}).items()})


def measure_cost_table(pipe_or_model: Any, run: Callable[[], Any], batch_size: int | None = None,
                       height: int | None = None, width: int | None = None) -> CostTable:
    """Run `run()` (which must call the denoiser at least once, e.g. one pipeline step or a direct
    forward) under the counter, and divide by the number of denoiser calls it made. The inputs and
    component outputs of each block's first call are kept to count its fast path afterwards."""
    model = find_denoiser(pipe_or_model)
    spec = describe(model)
    root = type(model).__name__
    layouts = {layout.attribute: layout for layout in adapter_for(model).groups}
    blocks = {g.name: group_blocks(model, layouts[g.name].attribute) for g in spec.block_groups}
    calls = 0

    def count_call(*_: Any) -> None:
        nonlocal calls
        calls += 1

    with _FirstCalls(spec, blocks) as seen:
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
        return sum(counts.get(f"{root}.{path}", {}).values()) // 2 // calls

    component_macs: dict[str, dict[str, tuple[int, ...]]] = {}
    block_macs: dict[str, tuple[int, ...]] = {}
    fast_block_macs: dict[str, tuple[int | None, ...]] = {}
    block_components: dict[str, tuple[tuple[str, ...], ...]] = {}
    covered = 0
    for group in spec.block_groups:
        is_list = isinstance(getattr(model, group.name), torch.nn.ModuleList)
        paths = [f"{group.name}.{b}" if is_list else group.name for b in range(len(blocks[group.name]))]
        per_comp = {comp: tuple(0 if component_module(block, comp) is None else
                                macs_of(path if comp == "block" else f"{path}.{comp}")
                                for block, path in zip(blocks[group.name], paths))
                    for comp in group.components}
        component_macs[group.name] = per_comp
        fixed = tuple(macs_of(path) - sum(per_comp[c][b] for c in group.components)
                      for b, path in enumerate(paths))
        block_macs[group.name] = fixed
        fast_block_macs[group.name] = tuple(
            _fast_path_macs(layouts[group.name].fast_path, block, seen.get((group.name, b)))
            for b, block in enumerate(blocks[group.name]))
        block_components[group.name] = tuple(tuple(c for c in group.components if component_module(block, c) is not None)
                                              for block in blocks[group.name])
        covered += sum(sum(v) for v in per_comp.values()) + sum(fixed)
    feeder_macs = {f.attribute: macs_of(f.attribute) for f in adapter_for(model).feeders
                   if isinstance(getattr(model, f.attribute, None), torch.nn.Module)}
    covered += sum(feeder_macs.values())
    total = sum(counts.get(root, {}).values()) // 2 // calls
    output_bytes = {g.name: {c: tuple(_nbytes(seen.get((g.name, b), ((), {}, {}))[2].get(c))
                                      for b in range(len(blocks[g.name]))) for c in g.components}
                    for g in spec.block_groups}
    return CostTable(root, component_macs, total - covered, batch_size, height, width, block_macs,
                     fast_block_macs, block_components, feeder_macs, output_bytes)


def _nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    return 0


def cache_memory(schedule: Schedule, table: CostTable) -> dict[str, Any]:
    """What a schedule keeps alive while it runs, per cache context: every hooked component holds
    the history its modes need (reuse and skip 1 output, forecasts 2; the states share tensors, so
    a component needs the largest, not the sum), at the output sizes the cost table measured.
    Sequential CFG keeps one set per context (cond, uncond)."""
    by_mode: dict[str, int] = {}
    total = 0
    for g, c in schedule.components():
        sizes = table.output_bytes.get(g, {}).get(c, ())
        for b in range(schedule.model.group(g).num_blocks):
            used = {ch for row in schedule.rows(g, c) for ch in row[b]} - {"1"}
            if not used or b >= len(sizes):
                continue
            history = max(MODE_TABLE[ch].memory_tensors for ch in used)
            total += history * sizes[b]
            for ch in used:
                by_mode[ch] = by_mode.get(ch, 0) + MODE_TABLE[ch].memory_tensors * sizes[b]
    contexts = calls_per_step(schedule)
    return {"bytes": total * contexts, "contexts": contexts,
            "by_mode_bytes": {MODE_TABLE[ch].name: v * contexts for ch, v in sorted(by_mode.items())}}


class _FirstCalls:
    """Records, for every block, the arguments of its first call and its components' outputs."""

    def __init__(self, spec: Any, blocks: Mapping[str, list[torch.nn.Module]]) -> None:
        self.spec, self.blocks = spec, blocks
        self.seen: dict[tuple[str, int], tuple[tuple, dict, dict[str, Any]]] = {}
        self.handles: list[Any] = []

    def __enter__(self) -> dict[tuple[str, int], tuple[tuple, dict, dict[str, Any]]]:
        for group in self.spec.block_groups:
            for b, block in enumerate(self.blocks[group.name]):
                key = (group.name, b)
                outputs: dict[str, Any] = {}

                def pre(module: Any, args: tuple, kwargs: dict, _key=key, _out=outputs) -> None:
                    self.seen.setdefault(_key, (args, kwargs, _out))
                self.handles.append(block.register_forward_pre_hook(pre, with_kwargs=True))
                for comp in group.components:
                    module = component_module(block, comp)
                    if module is None or module is block:
                        continue

                    def post(module: Any, args: tuple, output: Any, _c=comp, _out=outputs) -> None:
                        _out.setdefault(_c, output)
                    self.handles.append(module.register_forward_hook(post))
        return self.seen

    def __exit__(self, *exc: Any) -> None:
        for h in self.handles:
            h.remove()


def _fast_path_macs(fast_path: Any, block: torch.nn.Module, seen: Any) -> int | None:
    if fast_path is None or seen is None or not fast_path.applies(block):
        return None
    args, kwargs, outputs = seen
    with torch.no_grad(), counting_mode() as counter:
        result = fast_path.run(block, ArgReader(block), dict(outputs), args, kwargs)
    if result is None:
        return None
    return counter.get_total_flops() // 2


def calls_per_step(schedule: Schedule) -> int:
    """Sequential CFG calls the denoiser twice per step; batched CFG or no CFG once."""
    return 2 if schedule.sampling.cfg == "sequential" else 1


def schedule_macs(schedule: Schedule, table: CostTable) -> int:
    """MACs of one sampling run under `schedule` (all denoiser calls of all steps): the rest of each
    call, each computed component, and each block's own work on its forward or its fast path."""
    if schedule.model.transformer_class != table.transformer_class:
        raise ScheduleMismatchError(f"cost table is for {table.transformer_class}, schedule for "
                                    f"{schedule.model.transformer_class}")
    schedule = schedule.completed(table_block_groups(table))   # a subset file: the rest computes every step
    per_call = table.other_macs * schedule.num_steps
    for g, c in schedule.components():
        macs = table.component_macs[g][c]
        for row in schedule.rows(g, c):
            per_call += sum(m for m, ch in zip(macs, row) if MODE_TABLE[ch].calls_module)
    for group in schedule.model.block_groups:
        fast = table.fast_block_macs.get(group.name, ())
        present = table.block_components.get(group.name, ())
        for b, macs in enumerate(table.block_macs.get(group.name, ())):
            fast_macs = fast[b] if b < len(fast) else None
            if fast_macs is None or b >= len(present):
                per_call += macs * schedule.num_steps
                continue
            flags = fast_steps(schedule, group.name, b, present[b])
            per_call += sum(fast_macs if is_fast else macs for is_fast in flags)
    feeders = {f.attribute: f for f in feeders_of(table.transformer_class)}
    for attribute, macs in table.feeder_macs.items():
        per_call += macs * sum(feeder_steps(schedule, feeders[attribute], table.block_components))
    return per_call * calls_per_step(schedule)


def table_block_groups(table: CostTable) -> tuple[BlockGroup, ...]:
    """The block groups the table was measured on (group -> component -> per-block MACs)."""
    return tuple(BlockGroup(g, len(next(iter(comps.values()), ())), tuple(comps))
                 for g, comps in table.component_macs.items())


def full_macs(schedule: Schedule, table: CostTable) -> int:
    return table.call_macs * schedule.num_steps * calls_per_step(schedule)


def mac_speedup(schedule: Schedule, table: CostTable, reference: Schedule | None = None) -> float:
    """MACs of `reference` (default: all compute at the schedule's own steps) over the schedule's. A
    study's reference is its all-compute run at its default step count, so a schedule that samples
    fewer steps is faster by that too."""
    return full_macs(reference or schedule, table) / max(schedule_macs(schedule, table), 1)
