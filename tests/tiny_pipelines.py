"""Tiny random diffusers pipelines of every family, built from config (text encoders included: no
download), and saved to disk for loading by path like a real hub checkpoint.

`save_tiny_pixart(path)` writes a PixArtAlphaPipeline (tiny T5 encoder + word-level fast tokenizer +
2-level AutoencoderKL + 2-block PixArtTransformer2DModel, 16 px images) with `save_pretrained`, so
tests exercise the real `DiffusionPipeline.from_pretrained` path with no download.

`TINY_PIPELINES` has one entry per adapter family (plus the embedded pipeline): how to build it with
a given scheduler and how to call it, for contract tests that run on every family.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

WORDS = ("a an the red green blue yellow cyan orange purple white black gray brown big small large little "
         "circle square triangle ring cross diamond on in at of background corner top bottom left right "
         "middle center upper lower image against").split()
TINY_PIXART_KWARGS = {"use_resolution_binning": False, "max_sequence_length": 16, "clean_caption": False}


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>"), len(vocab)


def build_tiny_pixart(num_layers: int = 2, seed: int = 0):
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel
    from transformers import T5Config, T5EncoderModel
    torch.manual_seed(seed)
    tokenizer, vocab_size = _tokenizer()
    text_encoder = T5EncoderModel(T5Config(vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=1,
                                           num_heads=2, decoder_start_token_id=0)).eval()
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8), latent_channels=4,
                        norm_num_groups=8, layers_per_block=1, sample_size=16).eval()
    transformer = PixArtTransformer2DModel(
        sample_size=8, num_layers=num_layers, attention_head_dim=8, num_attention_heads=2, caption_channels=32,
        in_channels=4, out_channels=8, cross_attention_dim=16, norm_type="ada_norm_single",
        patch_size=2).eval()
    scheduler = DPMSolverMultistepScheduler()
    return PixArtAlphaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                               scheduler=scheduler)


def save_tiny_pixart(path: str | Path, **kwargs) -> Path:
    path = Path(path)
    build_tiny_pixart(**kwargs).save_pretrained(path)
    return path


def save_tiny_clip(path: str | Path) -> Path:
    """A random 1-layer CLIP (16 px vision, the word-level tokenizer) saved as a transformers folder,
    the layout the `clip_score` plug-in loads from its local `path`."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor
    torch.manual_seed(0)
    tokenizer, vocab_size = _tokenizer()
    config = CLIPConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=32, bos_token_id=0, eos_token_id=1,
                         pad_token_id=0),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=16, patch_size=8),
        projection_dim=8)
    path = Path(path)
    CLIPModel(config).save_pretrained(path)
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 16},
                                                                 crop_size={"height": 16, "width": 16}),
                              tokenizer=tokenizer)
    processor.save_pretrained(path)
    return path


def _clip_text(with_projection: bool = False, hidden: int = 16, projection: int = 16):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    tokenizer, vocab_size = _tokenizer()
    tokenizer.model_max_length = 8
    config = CLIPTextConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=32, num_hidden_layers=1,
                            num_attention_heads=2, max_position_embeddings=8, projection_dim=projection,
                            bos_token_id=0, eos_token_id=1, pad_token_id=0)
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(config).eval(), tokenizer


def _t5_text(d_model: int = 32):
    from transformers import T5Config, T5EncoderModel
    tokenizer, vocab_size = _tokenizer()
    tokenizer.model_max_length = 8
    model = T5EncoderModel(T5Config(vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=64, num_layers=1, num_heads=2,
                                    decoder_start_token_id=0)).eval()
    return model, tokenizer


def _flow_vae():
    from diffusers import AutoencoderKL
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8), latent_channels=4,
                         norm_num_groups=8, layers_per_block=1, sample_size=16, shift_factor=0.06,
                         scaling_factor=1.5).eval()


TINY_FLOW_KWARGS = {"height": 16, "width": 16, "max_sequence_length": 8}


def build_tiny_flux(seed: int = 0, scheduler=None):
    """FluxPipeline: 1-layer CLIP + T5 text encoders from config, 2 dual + 2 single blocks, 16 px."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    torch.manual_seed(seed)
    clip, tokenizer = _clip_text(hidden=32)
    t5, tokenizer_2 = _t5_text(32)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=2, num_single_layers=2,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, axes_dims_rope=[4, 4, 8]).eval()
    pipe = FluxPipeline(scheduler=scheduler or FlowMatchEulerDiscreteScheduler(), vae=_flow_vae(), text_encoder=clip,
                        tokenizer=tokenizer, text_encoder_2=t5, tokenizer_2=tokenizer_2, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_sd3(seed: int = 0, scheduler=None):
    """StableDiffusion3Pipeline: two 1-layer CLIPs with projection + T5 from config, 2 blocks, 16 px."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    torch.manual_seed(seed)
    clip_l, tokenizer = _clip_text(with_projection=True)
    clip_g, tokenizer_2 = _clip_text(with_projection=True)
    t5, tokenizer_3 = _t5_text(32)
    transformer = SD3Transformer2DModel(sample_size=8, patch_size=1, in_channels=4, num_layers=2, attention_head_dim=8,
                                        num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=16,
                                        pooled_projection_dim=32, out_channels=4).eval()
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=scheduler or FlowMatchEulerDiscreteScheduler(shift=3.0), vae=_flow_vae(),
        text_encoder=clip_l, tokenizer=tokenizer, text_encoder_2=clip_g, tokenizer_2=tokenizer_2,
        text_encoder_3=t5, tokenizer_3=tokenizer_3)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_dit(seed: int = 0, scheduler=None):
    """DiTPipeline: 3-block DiTTransformer2DModel (learned sigma), 1-level VAE, DPM-Solver++ by default."""
    from diffusers import AutoencoderKL, DiTPipeline, DiTTransformer2DModel, DPMSolverMultistepScheduler
    torch.manual_seed(seed)
    transformer = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                                        num_layers=3, sample_size=8, num_embeds_ada_norm=1000).eval()
    vae = AutoencoderKL(block_out_channels=(8,), latent_channels=4, norm_num_groups=8,
                        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",)).eval()
    pipe = DiTPipeline(transformer=transformer, vae=vae, scheduler=scheduler or DPMSolverMultistepScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_sd(seed: int = 0, scheduler=None):
    """StableDiffusionPipeline (the unet family): 2-level UNet2DConditionModel, 1-layer CLIP, 16 px."""
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, StableDiffusionPipeline, UNet2DConditionModel
    torch.manual_seed(seed)
    clip, tokenizer = _clip_text(hidden=16)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(16, 32), norm_num_groups=8, cross_attention_dim=16,
                                attention_head_dim=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")).eval()
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8), latent_channels=4,
                        norm_num_groups=8, layers_per_block=1, sample_size=16).eval()
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=clip, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler or DPMSolverMultistepScheduler(steps_offset=1),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ------------------------------------------------------------------ one entry per family
@dataclass(frozen=True)
class TinyPipeline:
    """`build(scheduler=None)` -> pipeline; `run(pipe, **kwargs)` -> B x 3 x H x W images for two fixed
    inputs and seeds; `takes_values`: its __call__ accepts `timesteps=`/`sigmas=`; `unit`: what the
    denoiser's `timestep` input is per unit of a schedule value (FLUX feeds sigma, SD3 sigma x 1000)."""

    build: Callable[..., Any]
    run: Callable[..., torch.Tensor]
    takes_values: bool = True
    unit: float = 1.0


def _generators() -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in (0, 1)]


def _prompted(**fixed: Any) -> Callable[..., torch.Tensor]:
    def run(pipe: Any, **kwargs: Any) -> torch.Tensor:
        return pipe(["a red circle", "a blue square"], generator=_generators(), output_type="pt",
                    **fixed, **kwargs).images
    return run


def _labelled(pipe: Any, **kwargs: Any) -> torch.Tensor:
    images = pipe(class_labels=[1, 2], generator=_generators(), output_type="np", **kwargs).images
    return torch.from_numpy(images).permute(0, 3, 1, 2)


def build_tiny_pixart_pipeline(scheduler=None):
    pipe = build_tiny_pixart()
    if scheduler is not None:
        pipe.scheduler = scheduler
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_embedded(scheduler=None):
    from evaluators.embedded import load_embedded_pipeline
    pipe = load_embedded_pipeline()
    if scheduler is not None:
        pipe.scheduler = scheduler
    return pipe


TINY_PIPELINES: dict[str, TinyPipeline] = {
    "pixart": TinyPipeline(build_tiny_pixart_pipeline, _prompted(guidance_scale=4.5, **TINY_PIXART_KWARGS)),
    "dit": TinyPipeline(build_tiny_dit, _labelled, takes_values=False),
    "flux": TinyPipeline(build_tiny_flux, _prompted(guidance_scale=3.5, **TINY_FLOW_KWARGS)),
    "sd3": TinyPipeline(build_tiny_sd3, _prompted(guidance_scale=4.5, **TINY_FLOW_KWARGS), unit=1000.0),
    "unet": TinyPipeline(build_tiny_sd, _prompted(guidance_scale=4.5, height=16, width=16)),
    "embedded": TinyPipeline(build_embedded, _prompted(guidance_scale=4.0)),
}
