"""Where each model family keeps its blocks and components: a table, not a code path per family.

A component is a submodule whose output is a self-contained contribution that the block then gates
and adds to its residual stream. Caching that output (before the gate) is what ECAD does: the gate
and residual are still applied with the current step's values.

Families:
- pixart: PixArtTransformer2DModel, `transformer_blocks` x {attn1 (self), attn2 (cross), ff}.
- dit: DiTTransformer2DModel, `transformer_blocks` x {attn1, ff} (no cross-attention).
- flux: FluxTransformer2DModel. Dual-stream `transformer_blocks` x {attn (joint, returns image and
  text outputs together), ff, ff_context}; single-stream `single_transformer_blocks` x {attn,
  proj_mlp, proj_out}. We chose ECAD's per-component split for single blocks over whole-block
  caching: reusing all three of a single block is the whole-block reuse, and the split lets the
  search keep the cheap projection fresh while reusing attention.
- sd3: SD3Transformer2DModel, `transformer_blocks` x {attn, attn2 (SD3.5 dual attention only),
  ff, ff_context (absent in the last, context-pre-only block)}.
- unet: UNet2DConditionModel at block level (DeepCache-like): `down_blocks`, `mid_block`,
  `up_blocks`, component `block` = the whole block's output.

Where a block lacks a component that its group lists, the plan's character there is ignored and
costs nothing. A group's `fast_path` (see `fastpaths.py`) is what one of its blocks still does at a
step where none of its components compute; UNet blocks are whole-block components, so reusing one
already skips the block entirely. An adapter's `feeders` are denoiser submodules whose output only
some components read (PixArt's caption projection feeds only the cross-attentions); they run only at
steps where one of those components computes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import fastpaths
from .errors import ScheduleMismatchError
from .fastpaths import FastPath, Feeder
from .schedule import BlockGroup, ModelSpec

WHOLE_BLOCK = "block"


@dataclass(frozen=True)
class GroupLayout:
    attribute: str                 # attribute of the denoiser: a ModuleList of blocks, or one block
    components: tuple[str, ...]    # attributes of each block; WHOLE_BLOCK means the block itself
    fast_path: FastPath | None = None   # what a block does when none of its components compute


@dataclass(frozen=True)
class Adapter:
    family: str
    transformer_classes: tuple[str, ...]
    groups: tuple[GroupLayout, ...]
    feeders: tuple[Feeder, ...] = ()   # denoiser submodules that only feed some components


ADAPTERS: tuple[Adapter, ...] = (
    Adapter("pixart", ("PixArtTransformer2DModel",),
            (GroupLayout("transformer_blocks", ("attn1", "attn2", "ff"), fastpaths.PIXART_BLOCK),),
            (Feeder("caption_projection", (("transformer_blocks", "attn2"),)),)),
    Adapter("dit", ("DiTTransformer2DModel",),
            (GroupLayout("transformer_blocks", ("attn1", "ff"), fastpaths.DIT_BLOCK),)),
    Adapter("flux", ("FluxTransformer2DModel",),
            (GroupLayout("transformer_blocks", ("attn", "ff", "ff_context"), fastpaths.FLUX_DUAL_BLOCK),
             GroupLayout("single_transformer_blocks", ("attn", "proj_mlp", "proj_out"),
                         fastpaths.FLUX_SINGLE_BLOCK))),
    Adapter("sd3", ("SD3Transformer2DModel",),
            (GroupLayout("transformer_blocks", ("attn", "attn2", "ff", "ff_context"), fastpaths.SD3_BLOCK),)),
    Adapter("unet", ("UNet2DConditionModel",),
            (GroupLayout("down_blocks", (WHOLE_BLOCK,)),
             GroupLayout("mid_block", (WHOLE_BLOCK,)),
             GroupLayout("up_blocks", (WHOLE_BLOCK,)))),
)


def feeders_of(transformer_class: str) -> tuple[Feeder, ...]:
    """The feeders of the adapter that handles `transformer_class` (by name: cost tables and
    schedules carry class names, not modules)."""
    return tuple(f for a in ADAPTERS if transformer_class in a.transformer_classes for f in a.feeders)


def find_denoiser(pipe_or_model: torch.nn.Module | object) -> torch.nn.Module:
    """The denoiser of a pipeline (`.transformer` or `.unet`), or the module itself; a
    `torch.compile` wrapper is looked through (hooks go on the module it compiles)."""
    if isinstance(pipe_or_model, torch.nn.Module):
        return getattr(pipe_or_model, "_orig_mod", pipe_or_model)
    for attr in ("transformer", "unet"):
        module = getattr(pipe_or_model, attr, None)
        if isinstance(module, torch.nn.Module):
            return getattr(module, "_orig_mod", module)
    raise ScheduleMismatchError(
        f"{type(pipe_or_model).__name__} is neither a torch module nor a pipeline with a "
        "`transformer` or `unet` attribute")


def adapter_for(model: torch.nn.Module) -> Adapter:
    names = [cls.__name__ for cls in type(model).__mro__]
    for adapter in ADAPTERS:
        if any(n in adapter.transformer_classes for n in names):
            return adapter
    supported = ", ".join(c for a in ADAPTERS for c in a.transformer_classes)
    raise ScheduleMismatchError(f"no adapter for {type(model).__name__} (supported: {supported})")


def group_blocks(model: torch.nn.Module, attribute: str) -> list[torch.nn.Module]:
    value = getattr(model, attribute, None)
    if value is None:
        return []
    if isinstance(value, torch.nn.ModuleList):
        return list(value)
    if isinstance(value, torch.nn.Module):
        return [value]
    return []


def present_components(model: torch.nn.Module, spec: ModelSpec) -> dict[str, tuple[tuple[str, ...], ...]]:
    """group -> per block, the components of `spec` that the live block really has."""
    layouts = {layout.attribute: layout for layout in adapter_for(model).groups}
    return {g.name: tuple(tuple(c for c in g.components if component_module(block, c) is not None)
                          for block in group_blocks(model, layouts[g.name].attribute))
            for g in spec.block_groups}


def component_module(block: torch.nn.Module, component: str) -> torch.nn.Module | None:
    if component == WHOLE_BLOCK:
        return block
    module = getattr(block, component, None)
    return module if isinstance(module, torch.nn.Module) else None


def describe(pipe_or_model: torch.nn.Module | object, model_id: str | None = None,
             revision: str | None = None) -> ModelSpec:
    """The block groups of a live model, so any supported model gets an all-compute schedule."""
    model = find_denoiser(pipe_or_model)
    adapter = adapter_for(model)
    groups = []
    for layout in adapter.groups:
        blocks = group_blocks(model, layout.attribute)
        if not blocks:
            continue
        present = tuple(c for c in layout.components
                        if any(component_module(b, c) is not None for b in blocks))
        if present:
            groups.append(BlockGroup(layout.attribute, len(blocks), present))
    if not groups:
        raise ScheduleMismatchError(f"{type(model).__name__} has none of the block groups its adapter "
                                    f"'{adapter.family}' expects")
    if model_id is None:
        model_id = getattr(getattr(model, "config", None), "_name_or_path", None) or None
    return ModelSpec(adapter.family, type(model).__name__, tuple(groups), model_id, revision)


def check_matches(spec: ModelSpec, model: torch.nn.Module) -> None:
    """Raise naming the first difference between what the schedule targets and the live model."""
    live = describe(model)
    if spec.transformer_class != live.transformer_class:
        raise ScheduleMismatchError(f"schedule is for {spec.transformer_class}, the model is "
                                    f"{live.transformer_class}", field="model.transformer_class")
    if spec.family != live.family:
        raise ScheduleMismatchError(f"schedule is for family '{spec.family}', the model is "
                                    f"'{live.family}'", field="model.family")
    live_groups = {g.name: g for g in live.block_groups}
    for i, g in enumerate(spec.block_groups):
        where = f"model.block_groups[{i}]"
        if g.name not in live_groups:
            raise ScheduleMismatchError(f"the model has no block group '{g.name}' (it has "
                                        f"{', '.join(live_groups)})", field=where + ".name")
        lg = live_groups[g.name]
        if g.num_blocks != lg.num_blocks:
            raise ScheduleMismatchError(f"schedule expects {g.num_blocks} blocks in '{g.name}', the model "
                                        f"has {lg.num_blocks}", field=where + ".num_blocks")
        missing = [c for c in g.components if c not in lg.components]
        if missing:
            raise ScheduleMismatchError(f"the model's '{g.name}' blocks have no component(s) {missing} "
                                        f"(they have {list(lg.components)})", field=where + ".components")
        unlisted = [c for c in lg.components if c not in g.components]
        if unlisted and not spec.subset:
            raise ScheduleMismatchError(
                f"the model's '{g.name}' blocks also have component(s) {unlisted} that the schedule does not "
                f"list: it was made for another model (or set model.subset: true to schedule only these)",
                field=where + ".components")
    absent = [g for g in live_groups if g not in {sg.name for sg in spec.block_groups}]
    if absent and not spec.subset:
        raise ScheduleMismatchError(
            f"the model also has block group(s) {absent} that the schedule does not list: it was made for "
            f"another model (or set model.subset: true to schedule only the groups it lists)",
            field="model.block_groups")
