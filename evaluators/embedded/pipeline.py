"""EmbeddedPipeline: text -> 24 px RGB images with the shipped PixArt-class denoiser, offline on CPU.

It is used like a diffusers pipeline and deliberately mirrors PixArtAlphaPipeline's denoising loop, so
the schedule runtime is exercised exactly as on the real model: classifier-free guidance is batched
(uncond + cond concatenated, ONE transformer call per step with batch 2B), ``timestep`` is a (2B,)
tensor and ``added_cond_kwargs={"resolution": None, "aspect_ratio": None}``.  The model works in pixel
space in [-1, 1], so the "latents" are the image itself (no VAE).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler, PixArtTransformer2DModel
from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import retrieve_timesteps
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image
from safetensors.torch import load_file

from .model import DENOISER_WEIGHTS, build_scheduler, build_transformer, read_config
from .text import MiniLMTextEncoder

_NO_COND: dict[str, Any] = {"resolution": None, "aspect_ratio": None}


@dataclass
class EmbeddedPipelineOutput:
    """``images``: list of PIL images, a B x 3 x H x W float tensor in [0, 1] ("pt") or a B x H x W x 3
    float array ("np"); ``latents``: the final x0 in [-1, 1] before conversion (when requested)."""

    images: list[Image.Image] | torch.Tensor | np.ndarray
    latents: torch.Tensor | None = None


class EmbeddedPipeline:
    """Sampler around a PixArtTransformer2DModel, a DPM-Solver++ scheduler and the MiniLM encoder."""

    def __init__(
        self,
        transformer: PixArtTransformer2DModel,
        scheduler: DPMSolverMultistepScheduler,
        encoder: MiniLMTextEncoder,
        config: dict[str, Any],
    ) -> None:
        self.transformer = transformer.eval()
        self.scheduler = scheduler
        self._encoder = encoder
        self.text_encoder = encoder.model
        self.tokenizer = encoder.tokenizer
        self.config = dict(config)

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.transformer.parameters()).dtype

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "EmbeddedPipeline":
        """Move the denoiser (the text encoder stays on CPU; its cached outputs follow the denoiser)."""
        if device is not None:
            self.transformer.to(device)
        if dtype is not None and dtype != self.dtype:  # skip a no-op cast (diffusers warns on any dtype cast)
            self.transformer.to(dtype=dtype)
        self._encoder.to(self.device, self.dtype)
        return self

    def encode_prompt(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B x T x text_dim token states, B x T mask), cached per prompt; "" is the unconditional prompt."""
        return self._encoder.encode(list(prompts))

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        num_inference_steps: int = 20,
        guidance_scale: float = 4.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_latents: bool = False,
        timesteps: list[int] | None = None,
        sigmas: list[float] | None = None,
        callback_on_step_end: Callable[..., dict[str, Any]] | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> EmbeddedPipelineOutput:
        """Sample one image per prompt; deterministic for given generator seeds. Custom `timesteps` (or
        `sigmas`, for schedulers that take them) override the scheduler's spacing, as in diffusers'
        pipelines (`retrieve_timesteps`); `num_inference_steps` is then their count.
        `callback_on_step_end(pipe, i, t, {"latents": x})` runs after every step, as in diffusers'
        pipelines, and may return replacement latents."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise ValueError("need at least one prompt")
        if output_type not in ("pil", "pt", "np"):
            raise ValueError(f"output_type must be 'pil', 'pt' or 'np', got {output_type!r}")
        if isinstance(generator, list) and len(generator) != len(prompts):
            raise ValueError(f"{len(generator)} generators for {len(prompts)} prompts")
        b, size, device, dtype = len(prompts), self.config["image_size"], self.device, self.dtype
        do_cfg = guidance_scale > 1.0
        cond, cond_mask = self.encode_prompt(prompts)
        if do_cfg:
            uncond, uncond_mask = self.encode_prompt([""] * b)
            cond, cond_mask = torch.cat([uncond, cond]), torch.cat([uncond_mask, cond_mask])

        shape = (b, 3, size, size)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
        x = latents.to(device, dtype) * self.scheduler.init_noise_sigma

        steps, _ = retrieve_timesteps(self.scheduler, num_inference_steps, device, timesteps=timesteps, sigmas=sigmas)
        # stochastic solvers (e.g. SDE-DPM++) draw their per-step noise from the same generators
        takes_generator = "generator" in inspect.signature(self.scheduler.step).parameters
        step_kwargs = {"generator": generator} if takes_generator else {}
        unknown = set(callback_on_step_end_tensor_inputs) - {"latents"}
        if unknown:
            raise ValueError(f"callback_on_step_end_tensor_inputs: only 'latents' is available, not {sorted(unknown)}")
        for i, t in enumerate(steps):
            x_in = torch.cat([x, x]) if do_cfg else x
            x_in = self.scheduler.scale_model_input(x_in, t)
            eps = self.transformer(
                x_in,
                encoder_hidden_states=cond,
                encoder_attention_mask=cond_mask,
                timestep=t.expand(x_in.shape[0]),
                added_cond_kwargs=_NO_COND,
                return_dict=False,
            )[0]
            if do_cfg:
                eps_uncond, eps_cond = eps.chunk(2)
                eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
            x = self.scheduler.step(eps, t, x, return_dict=False, **step_kwargs)[0]
            if callback_on_step_end is not None:
                x = callback_on_step_end(self, i, t, {"latents": x}).pop("latents", x)

        images = ((x.float().clamp(-1, 1) + 1) / 2).cpu()
        out: list[Image.Image] | torch.Tensor | np.ndarray = images
        if output_type == "np":
            out = images.permute(0, 2, 3, 1).numpy()
        elif output_type == "pil":
            arr = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
            out = [Image.fromarray(a) for a in arr]
        return EmbeddedPipelineOutput(images=out, latents=x if return_latents else None)


def load_embedded_pipeline(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> EmbeddedPipeline:
    """The shipped embedded model, from package data only (no network)."""
    config = read_config()
    if not DENOISER_WEIGHTS.exists():
        raise FileNotFoundError(f"embedded denoiser weights {DENOISER_WEIGHTS} are missing")
    transformer = build_transformer(config["transformer"])
    transformer.load_state_dict(load_file(str(DENOISER_WEIGHTS)))
    scheduler = build_scheduler(config["scheduler"])
    # weights trained before the two-layer text features (no "text_layers" key) read the last layer only
    encoder = MiniLMTextEncoder(layers=config.get("text_layers", [-1]))
    pipe = EmbeddedPipeline(transformer, scheduler, encoder, config)
    return pipe.to(device, dtype)
