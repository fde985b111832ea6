"""One pipeline call for a list of (prompt, seed) pairs, returning images and final latents.

Works on any diffusers text-to-image pipeline and on the embedded pipeline:
- one CPU `torch.Generator` per pair, so each image depends only on its own seed (not on the batch
  it shares or on the device: diffusers draws the noise on the generator's device);
- images as `output_type="pt"` (B x 3 x H x W in [0, 1]);
- final latents from the embedded pipeline's `return_latents=True`, else captured from the step
  callback (`callback_on_step_end` or the older `callback`), whose last call sees the final latents.
  A pipeline with neither exposes no latents (`latent_mse` then fails with that reason).
- class-conditional pipelines (DiT) take class labels: prompts are ImageNet label names
  (`pipe.get_label_ids`) or integers.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch

from .config import EvaluationConfig


@dataclass
class Outputs:
    images: torch.Tensor           # B x 3 x H x W float32 in [0, 1], on the pipeline's device
    latents: torch.Tensor | None   # B x ... final latents


class PipelineRunner:
    def __init__(self, pipe: Any, config: EvaluationConfig) -> None:
        self.pipe = pipe
        self.config = config
        params = inspect.signature(type(pipe).__call__).parameters
        self.params = set(params)
        self.takes_prompt = "prompt" in params
        self.takes_labels = not self.takes_prompt and "class_labels" in params
        if not (self.takes_prompt or self.takes_labels):
            raise TypeError(f"{type(pipe).__name__} takes neither `prompt` nor `class_labels`")
        if "return_latents" in params:
            self.latent_mode = "return"
        elif "callback_on_step_end" in params:
            self.latent_mode = "step_end"
        elif "callback" in params:
            self.latent_mode = "callback"
        else:
            self.latent_mode = None

    def _conditioning(self, prompts: list[str]) -> dict[str, Any]:
        if self.takes_prompt:
            return {"prompt": list(prompts)}
        labels = []
        for p in prompts:
            if p.strip().lstrip("-").isdigit():
                labels.append(int(p))
            else:
                labels.extend(self.pipe.get_label_ids([p]))
        return {"class_labels": labels}

    @property
    def steerable(self) -> bool:
        """Whether a run can be saved and resumed at any step (prefix-shared evaluation): a step-end
        callback, or the older per-step `callback` with a first-order scheduler (called every step)."""
        if "callback_on_step_end" in self.params:
            return True
        return self.latent_mode == "callback" and getattr(self.pipe.scheduler, "order", 1) == 1

    def __call__(self, prompts: list[str], seeds: list[int], num_inference_steps: int | None = None,
                 steer: Any = None) -> Outputs:
        """`steer`: a `TrajectoryControl` whose callback runs after every step (before the latents are
        captured); needs a `steerable` pipeline."""
        cfg = self.config
        kwargs: dict[str, Any] = self._conditioning(prompts)
        kwargs["num_inference_steps"] = num_inference_steps or cfg.num_inference_steps
        if "guidance_scale" in self.params:
            kwargs["guidance_scale"] = cfg.guidance_scale
        kwargs["generator"] = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        kwargs["output_type"] = "pt"
        if cfg.height is not None and "height" in self.params:
            kwargs["height"], kwargs["width"] = cfg.height, cfg.width
        captured: dict[str, torch.Tensor] = {}
        if self.latent_mode == "return":
            kwargs["return_latents"] = True
        if steer is not None and not self.steerable:
            raise TypeError(f"{type(self.pipe).__name__} cannot be steered step by step")
        if self.latent_mode == "step_end" or (steer is not None and "callback_on_step_end" in self.params):
            def on_step_end(pipe: Any, step: int, t: Any, cb_kwargs: dict[str, Any]) -> dict[str, Any]:
                if steer is not None:
                    cb_kwargs = steer.callback(pipe, step, t, cb_kwargs)
                captured["latents"] = cb_kwargs["latents"]
                return cb_kwargs
            kwargs["callback_on_step_end"] = on_step_end
            kwargs["callback_on_step_end_tensor_inputs"] = ["latents"]
        if self.latent_mode == "callback":
            def on_step(step: int, t: Any, latents: torch.Tensor) -> None:
                if steer is not None:
                    steer.legacy_callback(step, t, latents)
                captured["latents"] = latents
            kwargs["callback"] = on_step
            kwargs["callback_steps"] = 1
        kwargs.update(cfg.pipeline_kwargs)
        with torch.no_grad():
            out = self.pipe(**kwargs)
        images = out.images if hasattr(out, "images") else out[0]
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"{type(self.pipe).__name__} returned {type(images).__name__} for output_type='pt'")
        if images.ndim == 3:
            images = images.unsqueeze(0)
        latents = getattr(out, "latents", None) if self.latent_mode == "return" else captured.get("latents")
        return Outputs(images=images.float(), latents=latents)


class CfgWatch:
    """How a pipeline runs classifier-free guidance, seen rather than guessed: a forward pre-hook on
    the denoiser records each call's batch; `mode(images, steps)` reads them for one run of `images`
    images over `steps` steps: `sequential` (two calls per step), `batched` (one call on twice the
    images) or `none`. The evaluator's cost table and the peers that split the CFG batch use it."""

    def __init__(self, denoiser: torch.nn.Module) -> None:
        self.seen: list[int] = []
        self._denoiser = denoiser
        self._handle: Any = None

    def __enter__(self) -> "CfgWatch":
        self._handle = self._denoiser.register_forward_pre_hook(self._record, with_kwargs=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._handle.remove()

    def _record(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        x = args[0] if args else kwargs.get("hidden_states", kwargs.get("sample"))
        self.seen.append(int(x.shape[0]) if isinstance(x, torch.Tensor) else -1)

    def mode(self, images: int, steps: int) -> str:
        if len(self.seen) >= 2 * steps:
            return "sequential"
        if self.seen and self.seen[0] == 2 * images:
            return "batched"
        return "none"

