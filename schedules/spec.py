"""What a schedule is made for: the model's block groups and the sampling settings. Kept apart from
the Schedule class so parsing and validation can use them without cycles. The mode alphabet lives in
`modes` and is re-exported here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .modes import COMPUTE, DAMPED, FORECAST, MODES, REUSE, SKIP  # noqa: F401

FORMAT = "cachesearch.schedule"
FORMAT_VERSION = 1

CFG_MODES = ("batched", "sequential", "none")

@dataclass(frozen=True)
class BlockGroup:
    """A list of transformer blocks that share one structure (e.g. FLUX's dual vs single blocks)."""

    name: str
    num_blocks: int
    components: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "num_blocks": self.num_blocks, "components": list(self.components)}


@dataclass(frozen=True)
class ModelSpec:
    """What the schedule was made for; applying it elsewhere is an error that names the mismatch.

    `subset=True` says the file schedules only the block groups and components it lists, on purpose
    (the rest of the model computes as usual). Without it, a model with block groups or components
    the file does not list is a mismatch: the file was made for another model and would claim a
    speedup it does not give. Written to the file (and hashed) only when true, so files without it
    keep their hashes."""

    family: str
    transformer_class: str
    block_groups: tuple[BlockGroup, ...]
    model_id: str | None = None
    revision: str | None = None
    subset: bool = False

    def group(self, name: str) -> BlockGroup:
        for g in self.block_groups:
            if g.name == name:
                return g
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "transformer_class": self.transformer_class,
            "block_groups": [g.to_dict() for g in self.block_groups],
            "model_id": self.model_id,
            "revision": self.revision,
            **({"subset": True} if self.subset else {}),
        }


TIMESTEPS = "timesteps"
SIGMAS = "sigmas"


@dataclass(frozen=True)
class SamplingSpec:
    """Sampling settings the schedule was searched with. Binding: the step count and, when given, the
    explicit values the scheduler samples at; the rest is a record.

    At most one of `timesteps` and `sigmas` is set, and the field says which the values are:
    `timesteps` are what a discrete-time scheduler's `set_timesteps(timesteps=...)` takes (DDPM-family:
    DPM-Solver++, UniPC, ...), used as given; `sigmas` are what a flow-matching scheduler's
    `set_timesteps(sigmas=...)` takes (FLUX/SD3 FlowMatchEuler), before the scheduler's configured
    shift, exactly like the pipelines' own `sigmas=` argument. Nothing converts one into the other.
    """

    num_inference_steps: int
    scheduler: str | None = None
    timesteps: tuple[float, ...] | None = None
    cfg: str = "batched"
    guidance_scale: float | None = None
    height: int | None = None
    width: int | None = None
    sigmas: tuple[float, ...] | None = None

    @property
    def explicit(self) -> tuple[str, tuple[float, ...]] | None:
        """("timesteps" | "sigmas", the values), or None when the scheduler spaces the steps itself."""
        if self.timesteps is not None:
            return TIMESTEPS, self.timesteps
        if self.sigmas is not None:
            return SIGMAS, self.sigmas
        return None

    def to_dict(self) -> dict[str, Any]:
        doc = {
            "num_inference_steps": self.num_inference_steps,
            "scheduler": self.scheduler,
            "timesteps": list(self.timesteps) if self.timesteps is not None else None,
            "cfg": self.cfg,
            "guidance_scale": self.guidance_scale,
            "height": self.height,
            "width": self.width,
        }
        if self.sigmas is not None:   # written only when set: documents without sigmas keep their hash
            doc["sigmas"] = list(self.sigmas)
        return doc
