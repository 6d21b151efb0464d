"""Tiny random folders in the exact diffusers layouts of Stable Diffusion and Marigold (no download).

Same file names, config keys and component classes as the real ones; widths shrunk so a folder is written in about a
second. The family-defining keys (cross-attention width, latent channels, 8x VAE, eps at sample_size 64) are real.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

CROSS_DIM = {"sd15": 768, "sd21": 1024}
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def write_tiny_tokenizer(folder: Path) -> None:
    """A CLIP BPE tokenizer with the special tokens and one word piece per letter (no merges)."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in LETTERS:
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    tok.save_pretrained(folder)


def tiny_unet(cross_dim: int, in_channels: int = 4, sample_size: int = 64):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(sample_size=sample_size, in_channels=in_channels, out_channels=4,
                                block_out_channels=(32, 32), layers_per_block=1,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                cross_attention_dim=cross_dim, attention_head_dim=8, norm_num_groups=8)


def tiny_vae():
    """4 blocks = 8x downsampling and 4 latent channels, as SD's VAE."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8),
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         layers_per_block=1, norm_num_groups=8, sample_size=64, scaling_factor=0.18215)


def tiny_text_encoder(width: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(vocab_size=2 + 2 * len(LETTERS), hidden_size=width, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=4, max_position_embeddings=77,
                         bos_token_id=0, eos_token_id=1, pad_token_id=1)
    return CLIPTextModel(cfg)


def write_tiny_sd(folder: Path, family: str = "sd21", *, seed: int = 0, prediction_type: str = "epsilon",
                  sample_size: int = 64, unet_cross_dim: int | None = None) -> Path:
    """unet/ vae/ text_encoder/ tokenizer/ scheduler/ + model_index.json, random weights (seeded)."""
    from diffusers import DDPMScheduler

    torch.manual_seed(seed)
    width = CROSS_DIM[family]
    tiny_unet(unet_cross_dim or width, sample_size=sample_size).save_pretrained(folder / "unet")
    tiny_vae().save_pretrained(folder / "vae")
    tiny_text_encoder(width).save_pretrained(folder / "text_encoder")
    write_tiny_tokenizer(folder / "tokenizer")
    DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                  prediction_type=prediction_type).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return folder


def write_tiny_marigold(folder: Path, task: str = "depth", seed: int = 0) -> Path:
    """A Marigold depth / normals folder through diffusers' own pipeline class and save_pretrained."""
    from diffusers import DDIMScheduler, MarigoldDepthPipeline, MarigoldNormalsPipeline
    from transformers import CLIPTokenizer

    torch.manual_seed(seed)
    scratch = folder.parent / f"{folder.name}-tokenizer-source"
    write_tiny_tokenizer(scratch)
    tokenizer = CLIPTokenizer.from_pretrained(scratch)
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", prediction_type="v_prediction",
                              timestep_spacing="trailing", set_alpha_to_one=False, clip_sample=False)
    parts = dict(unet=tiny_unet(1024, in_channels=8, sample_size=96), vae=tiny_vae(), scheduler=scheduler,
                 text_encoder=tiny_text_encoder(1024), tokenizer=tokenizer, default_denoising_steps=2,
                 default_processing_resolution=64)
    if task == "depth":
        pipe = MarigoldDepthPipeline(prediction_type="depth", scale_invariant=True, shift_invariant=True, **parts)
    else:
        pipe = MarigoldNormalsPipeline(prediction_type="normals", use_full_z_range=True, **parts)
    pipe.save_pretrained(folder)
    return folder
