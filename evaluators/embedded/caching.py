"""Hand-made reuse schedules of increasing aggressiveness for the embedded model.

Why: the embedded model exists so that quality responds to caching; these schedules are the yardstick
the caching test and ``bench/embedded_quality.py`` use to show it (mild plans barely move PSNR and
adherence, aggressive ones clearly do).  They are FORA-style (reuse every block's components on the
same steps), built from boolean steps x blocks masks with ``Schedule.from_masks``.
"""

from __future__ import annotations

from typing import Callable

from schedules import SamplingSpec, Schedule, describe

StepRule = Callable[[int], bool]  # step index -> compute?

#: name -> (compute rule per step, description); ordered from mildest to most aggressive
REFERENCE_RULES: dict[str, tuple[StepRule, str]] = {
    "all-compute": (lambda s: True, "compute every component at every step"),
    "mild": (lambda s: s < 6 or s % 2 == 0, "compute steps 0-5, then reuse everything on every other step"),
    "every-2nd": (lambda s: s % 2 == 0, "reuse everything on every other step (FORA N=2)"),
    "2-of-3": (lambda s: s % 3 == 0, "reuse everything on 2 of 3 steps (FORA N=3)"),
    "first-4-only": (lambda s: s < 4, "compute steps 0-3, reuse everything afterwards"),
}


def reference_schedule(pipe: object, name: str, num_inference_steps: int = 20, guidance_scale: float = 4.0) -> Schedule:
    """One of ``REFERENCE_RULES`` for the live pipeline ``pipe`` (any block count)."""
    rule, description = REFERENCE_RULES[name]
    spec = describe(pipe, model_id="cachesearch/embedded")
    sampling = SamplingSpec(
        num_inference_steps,
        scheduler=type(pipe.scheduler).__name__,  # type: ignore[attr-defined]
        cfg="batched",
        guidance_scale=guidance_scale,
        height=pipe.config["image_size"],  # type: ignore[attr-defined]
        width=pipe.config["image_size"],  # type: ignore[attr-defined]
    )
    masks = {
        (g.name, c): [[rule(s)] * g.num_blocks for s in range(num_inference_steps)]
        for g in spec.block_groups
        for c in g.components
    }
    return Schedule.from_masks(spec, sampling, masks, provenance={"searcher": "hand-made", "name": name,
                                                                   "description": description})
