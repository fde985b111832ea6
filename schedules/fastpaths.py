"""What a block still has to do at a step where none of its components compute.

At such a step the block's output needs only the current step's gates applied to the cached (or
forecast) component outputs, and the residual adds. Everything else the block's forward would do —
norms, the modulation of the components' inputs, attention processors, concatenations that only feed
a component — has no consumer, so the fast path does not do it. That work has no MACs (the counter
never saw it) but costs real time: on the embedded model a reused PixArt block took 1.4 ms through
its forward with component hooks and 0.03 ms through its fast path.

Each fast path is written against one diffusers block's `forward` and performs the same tensor
operations, in the same order, on the same operands, as that forward does after its components
return; so its output is bit-identical to the block run with component hooks (tests check it per
family). A skipped component ('-' = zero output) drops its term instead of adding zeros.
`applies(block)` says whether the block is configured the way the fast path assumes (norm type,
GLIGEN, positional embeddings...); where it does not, the block keeps its ordinary forward — still
exact, only slower. Which family uses which fast path is in the adapter table (`adapters.py`).

Signature of `run`: `(block, read, outputs, args, kwargs) -> block output (or None: take the
ordinary forward this time)`, with `read` the block's `ArgReader` and `outputs` mapping each component
name to its output at this step, or None when the cell skips or the block lacks it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import torch

from .modes import MODE_TABLE

if TYPE_CHECKING:
    from .schedule import Schedule

Outputs = Mapping[str, Any]


@dataclass(frozen=True)
class Feeder:
    """A denoiser submodule whose output is consumed only by some components (PixArt's
    `caption_projection` feeds only the cross-attentions `attn2`). At a step where none of those
    components computes in any block, its output has no consumer, so the runtime serves the last one
    instead of running it (the value is never read); the cost model counts its MACs only at the
    steps that need it."""

    attribute: str
    feeds: tuple[tuple[str, str], ...]   # (block group, component)


@dataclass(frozen=True)
class FastPath:
    name: str
    applies: Callable[[torch.nn.Module], bool]
    run: Callable[[torch.nn.Module, "ArgReader", Outputs, tuple, dict], Any]


class ArgReader:
    """Reads a block's forward arguments by name from (args, kwargs), however the caller passed them
    (PixArt passes hidden states positionally, the rest by keyword; gradient checkpointing passes all
    positionally). The signature is inspected once, at attach time."""

    def __init__(self, block: torch.nn.Module) -> None:
        params = list(inspect.signature(type(block).forward).parameters.values())[1:]  # drop self
        self.index = {p.name: i for i, p in enumerate(params)}
        self.default = {p.name: (None if p.default is inspect.Parameter.empty else p.default) for p in params}

    def __call__(self, args: tuple, kwargs: dict, name: str) -> Any:
        if name in kwargs:
            return kwargs[name]
        i = self.index[name]
        return args[i] if i < len(args) else self.default[name]


# ------------------------------------------------------------------ BasicTransformerBlock (PixArt, DiT)
def _basic_block_applies(norm_type: str) -> Callable[[torch.nn.Module], bool]:
    def applies(block: torch.nn.Module) -> bool:
        return (getattr(block, "norm_type", None) == norm_type and getattr(block, "pos_embed", None) is None
                and not getattr(block, "only_cross_attention", False) and not hasattr(block, "fuser"))
    return applies


def _squeeze4(h: torch.Tensor) -> torch.Tensor:
    return h.squeeze(1) if h.ndim == 4 else h


def _basic_tail(h: torch.Tensor, out: Outputs, gate_msa: torch.Tensor, gate_mlp: torch.Tensor) -> torch.Tensor:
    # attn1 -> gate -> residual; attn2 -> residual (no gate); ff -> gate -> residual
    if out.get("attn1") is not None:
        h = _squeeze4(gate_msa * out["attn1"] + h)
    if out.get("attn2") is not None:
        h = out["attn2"] + h
    if out.get("ff") is not None:
        h = _squeeze4(gate_mlp * out["ff"] + h)
    return h


def _pixart_run(block: torch.nn.Module, read: "ArgReader", out: Outputs, args: tuple, kwargs: dict) -> torch.Tensor:
    if (read(args, kwargs, "cross_attention_kwargs") or {}).get("gligen") is not None:
        return None  # GLIGEN fuser sits between the components: take the ordinary forward
    h = read(args, kwargs, "hidden_states")
    timestep = read(args, kwargs, "timestep")
    _, _, gate_msa, _, _, gate_mlp = (block.scale_shift_table[None]
                                      + timestep.reshape(h.shape[0], 6, -1)).chunk(6, dim=1)
    return _basic_tail(h, out, gate_msa, gate_mlp)


def _dit_run(block: torch.nn.Module, read: "ArgReader", out: Outputs, args: tuple, kwargs: dict) -> torch.Tensor:
    if (read(args, kwargs, "cross_attention_kwargs") or {}).get("gligen") is not None:
        return None
    h = read(args, kwargs, "hidden_states")
    norm = block.norm1   # AdaLayerNormZero: the gates come from its embedding + linear (MACs, counted)
    emb = norm.emb(read(args, kwargs, "timestep"), read(args, kwargs, "class_labels"), hidden_dtype=h.dtype)
    _, _, gate_msa, _, _, gate_mlp = norm.linear(norm.silu(emb)).chunk(6, dim=1)
    return _basic_tail(h, out, gate_msa.unsqueeze(1), gate_mlp.unsqueeze(1))


def _dit_applies(block: torch.nn.Module) -> bool:
    return _basic_block_applies("ada_norm_zero")(block) and getattr(block.norm1, "emb", None) is not None


# ------------------------------------------------------------------ FLUX
def _zero_gates(norm: torch.nn.Module, temb: torch.Tensor, n: int) -> tuple[torch.Tensor, ...]:
    """The adaLN-zero modulation vector, as AdaLayerNormZero(Single)/SD35AdaLayerNormZeroX compute it."""
    return norm.linear(norm.silu(temb)).chunk(n, dim=1)


def _clip16(h: torch.Tensor) -> torch.Tensor:
    return h.clip(-65504, 65504) if h.dtype == torch.float16 else h


def _flux_dual_run(block: torch.nn.Module, read: "ArgReader", out: Outputs, args: tuple, kwargs: dict) -> Any:
    hidden, context, temb = (read(args, kwargs, n) for n in ("hidden_states", "encoder_hidden_states", "temb"))
    _, _, gate_msa, _, _, gate_mlp = _zero_gates(block.norm1, temb, 6)
    _, _, c_gate_msa, _, _, c_gate_mlp = _zero_gates(block.norm1_context, temb, 6)
    attn = out.get("attn")
    if attn is not None:
        hidden = hidden + gate_msa.unsqueeze(1) * attn[0]
    if out.get("ff") is not None:
        hidden = hidden + gate_mlp.unsqueeze(1) * out["ff"]
    if attn is not None and len(attn) == 3:
        hidden = hidden + attn[2]   # IP-adapter branch: added ungated, as the block does
    if attn is not None:
        context = context + c_gate_msa.unsqueeze(1) * attn[1]
    if out.get("ff_context") is not None:
        context = context + c_gate_mlp.unsqueeze(1) * out["ff_context"]
    return _clip16(context), hidden


def _flux_single_run(block: torch.nn.Module, read: "ArgReader", out: Outputs, args: tuple, kwargs: dict) -> Any:
    hidden, context, temb = (read(args, kwargs, n) for n in ("hidden_states", "encoder_hidden_states", "temb"))
    text_len = context.shape[1]
    residual = torch.cat([context, hidden], dim=1)
    _, _, gate = _zero_gates(block.norm, temb, 3)   # always, so the fast path's MACs are one number
    if out.get("proj_out") is None:
        joined = residual   # proj_out skipped: its gated branch adds nothing
    else:
        joined = _clip16(residual + gate.unsqueeze(1) * out["proj_out"])
    return joined[:, :text_len], joined[:, text_len:]


def _has(*names: str) -> Callable[[torch.nn.Module], bool]:
    return lambda block: all(hasattr(block, n) for n in names)


# ------------------------------------------------------------------ SD3
def _sd3_run(block: torch.nn.Module, read: "ArgReader", out: Outputs, args: tuple, kwargs: dict) -> Any:
    hidden, context, temb = (read(args, kwargs, n) for n in ("hidden_states", "encoder_hidden_states", "temb"))
    if block.use_dual_attention:
        _, _, gate_msa, _, _, gate_mlp, _, _, gate_msa2 = _zero_gates(block.norm1, temb, 9)
    else:
        _, _, gate_msa, _, _, gate_mlp = _zero_gates(block.norm1, temb, 6)
    attn = out.get("attn")
    if attn is not None:
        hidden = hidden + gate_msa.unsqueeze(1) * attn[0]
    if block.use_dual_attention and out.get("attn2") is not None:
        hidden = hidden + gate_msa2.unsqueeze(1) * out["attn2"]
    if out.get("ff") is not None:
        hidden = hidden + gate_mlp.unsqueeze(1) * out["ff"]
    if block.context_pre_only:
        return None, hidden
    _, _, c_gate_msa, _, _, c_gate_mlp = _zero_gates(block.norm1_context, temb, 6)
    if attn is not None:
        context = context + c_gate_msa.unsqueeze(1) * attn[1]
    if out.get("ff_context") is not None:
        context = context + c_gate_mlp.unsqueeze(1) * out["ff_context"]
    return context, hidden


PIXART_BLOCK = FastPath("pixart_block", _basic_block_applies("ada_norm_single"), _pixart_run)
DIT_BLOCK = FastPath("dit_block", _dit_applies, _dit_run)
FLUX_DUAL_BLOCK = FastPath("flux_dual_block", _has("norm1", "norm1_context", "ff_context"), _flux_dual_run)
FLUX_SINGLE_BLOCK = FastPath("flux_single_block", _has("norm", "proj_mlp", "proj_out"), _flux_single_run)
SD3_BLOCK = FastPath("sd3_block", _has("norm1", "norm1_context", "use_dual_attention", "context_pre_only"),
                     _sd3_run)


def fast_steps(schedule: "Schedule", group: str, block: int, components: Sequence[str]) -> tuple[bool, ...]:
    """Steps at which none of the `components` that block `block` really has compute: where its
    fast path runs, if it has one. One rule for the runtime, the cost model and the latency model."""
    rows = [schedule.rows(group, c) for c in components]
    return tuple(bool(rows) and not any(MODE_TABLE[r[s][block]].calls_module for r in rows)
                 for s in range(schedule.num_steps))


def feeder_steps(schedule: "Schedule", feeder: Feeder,
                 present: Mapping[str, Sequence[Sequence[str]]]) -> tuple[bool, ...]:
    """Steps at which some component fed by `feeder` computes in some block that has it (`present`:
    group -> per block, the components it really has)."""
    needed = [False] * schedule.num_steps
    for group, comp in feeder.feeds:
        if group not in present or comp not in schedule.model.group(group).components:
            continue
        rows = schedule.rows(group, comp)
        for b, comps in enumerate(present[group]):
            if comp in comps:
                for s in range(schedule.num_steps):
                    needed[s] = needed[s] or MODE_TABLE[rows[s][b]].calls_module
    return tuple(needed)
