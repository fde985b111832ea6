"""Tiny random diffusers pipelines saved to disk, for loading by path like a real hub checkpoint.

`save_tiny_pixart(path)` writes a PixArtAlphaPipeline (tiny T5 encoder + word-level fast tokenizer +
2-level AutoencoderKL + 2-block PixArtTransformer2DModel, 16 px images) with `save_pretrained`, so
tests exercise the real `DiffusionPipeline.from_pretrained` path with no download.
"""

from __future__ import annotations

from pathlib import Path

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
