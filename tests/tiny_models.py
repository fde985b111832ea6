"""Tiny random diffusers denoisers of every supported family, built from config (no downloads).

Each builder returns (model, make_inputs) where make_inputs(step) gives the keyword arguments of one
denoiser call at that step, so tests can run a short "trajectory" through any family the same way.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from diffusers import (
    DiTTransformer2DModel, FluxTransformer2DModel, PixArtTransformer2DModel, SD3Transformer2DModel,
    UNet2DConditionModel,
)

TIMESTEPS = [950, 700, 450, 200, 50]
Builder = Callable[[], tuple[torch.nn.Module, Callable[[int], dict[str, Any]]]]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_pixart(num_layers: int = 3, batch: int = 2):
    torch.manual_seed(0)
    model = PixArtTransformer2DModel(
        sample_size=8, num_layers=num_layers, attention_head_dim=8, num_attention_heads=2, caption_channels=32,
        in_channels=4, out_channels=8, cross_attention_dim=16, norm_type="ada_norm_single").eval()
    g = _gen()
    x = torch.randn(batch, 4, 8, 8, generator=g)
    text = torch.randn(batch, 5, 32, generator=g)

    def inputs(step: int) -> dict[str, Any]:
        t = TIMESTEPS[step % len(TIMESTEPS)]
        return dict(hidden_states=x, encoder_hidden_states=text, timestep=torch.tensor([t] * batch),
                    added_cond_kwargs={"resolution": None, "aspect_ratio": None})
    return model, inputs


def tiny_dit(batch: int = 2):
    torch.manual_seed(0)
    model = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, num_layers=3,
                                  sample_size=8, num_embeds_ada_norm=1000).eval()
    x = torch.randn(batch, 4, 8, 8, generator=_gen())

    def inputs(step: int) -> dict[str, Any]:
        t = TIMESTEPS[step % len(TIMESTEPS)]
        return dict(hidden_states=x, timestep=torch.tensor([t] * batch), class_labels=torch.tensor([1] * batch))
    return model, inputs


def tiny_flux(batch: int = 1):
    torch.manual_seed(0)
    model = FluxTransformer2DModel(patch_size=1, in_channels=4, num_layers=2, num_single_layers=2,
                                   attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                   pooled_projection_dim=32, axes_dims_rope=[4, 4, 8]).eval()
    g = _gen()
    seq, txt = 16, 6
    x = torch.randn(batch, seq, 4, generator=g)
    text = torch.randn(batch, txt, 32, generator=g)
    pooled = torch.randn(batch, 32, generator=g)
    img_ids = torch.zeros(seq, 3)
    img_ids[:, 1] = torch.arange(seq) // 4
    img_ids[:, 2] = torch.arange(seq) % 4
    txt_ids = torch.zeros(txt, 3)

    def inputs(step: int) -> dict[str, Any]:
        t = TIMESTEPS[step % len(TIMESTEPS)] / 1000
        return dict(hidden_states=x, encoder_hidden_states=text, pooled_projections=pooled,
                    timestep=torch.tensor([t] * batch), img_ids=img_ids, txt_ids=txt_ids)
    return model, inputs


def tiny_sd3(batch: int = 2):
    torch.manual_seed(0)
    model = SD3Transformer2DModel(sample_size=8, patch_size=1, in_channels=4, num_layers=3, attention_head_dim=8,
                                  num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=16,
                                  pooled_projection_dim=16, out_channels=4, dual_attention_layers=(0,)).eval()
    g = _gen()
    x = torch.randn(batch, 4, 8, 8, generator=g)
    text = torch.randn(batch, 6, 32, generator=g)
    pooled = torch.randn(batch, 16, generator=g)

    def inputs(step: int) -> dict[str, Any]:
        t = TIMESTEPS[step % len(TIMESTEPS)]
        return dict(hidden_states=x, encoder_hidden_states=text, pooled_projections=pooled,
                    timestep=torch.tensor([t] * batch))
    return model, inputs


def tiny_unet(batch: int = 2):
    torch.manual_seed(0)
    model = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                 block_out_channels=(16, 32), norm_num_groups=8, cross_attention_dim=16,
                                 attention_head_dim=4,
                                 down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")).eval()
    g = _gen()
    x = torch.randn(batch, 4, 8, 8, generator=g)
    text = torch.randn(batch, 5, 16, generator=g)

    def inputs(step: int) -> dict[str, Any]:
        t = TIMESTEPS[step % len(TIMESTEPS)]
        return dict(sample=x, encoder_hidden_states=text, timestep=torch.tensor([t] * batch))
    return model, inputs


FAMILIES: dict[str, Builder] = {
    "pixart": tiny_pixart, "dit": tiny_dit, "flux": tiny_flux, "sd3": tiny_sd3, "unet": tiny_unet,
}


def run_trajectory(model: torch.nn.Module, inputs: Callable[[int], dict[str, Any]], steps: int) -> list[torch.Tensor]:
    """Call the denoiser once per step, as a batched-CFG pipeline would."""
    outs = []
    with torch.no_grad():
        for step in range(steps):
            out = model(**inputs(step), return_dict=False)[0]
            outs.append(out)
    return outs
