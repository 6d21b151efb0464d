"""Backbones in Stable Diffusion's diffusers layout: the tiny embedded one, and (later) SD 1.5 / 2.1 folders.

A backbone folder holds ``vae/`` (AutoencoderKL), ``unet/`` (UNet2DConditionModel, eps prediction on the SD
"scaled_linear" schedule) and the null-text embedding the cross-attention is fed. For real SD that embedding comes
from ``text_encoder/`` + ``tokenizer/``; the tiny backbone ships it as ``null_text_embedding.safetensors``.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import torch
from safetensors.torch import load_file, save_file

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
REPO_DIR = WEIGHTS_DIR.parents[1]
TINY_BACKBONE_DIR = WEIGHTS_DIR / "tiny_backbone"
NULL_TEXT_FILE = "null_text_embedding.safetensors"

TINY_IMAGE_SIZE = 64  # px, the tiny world's training resolution
TINY_LATENT_SIZE = 16  # VAE downsamples 4x
TINY_TEXT_TOKENS, TINY_TEXT_DIM = 8, 32  # null-text embedding [1,8,32]

# How the empty prompt is tokenised for a backbone's CLIP text encoder [choice: the paper says only "null-text
# embedding"]. "none": [BOS, EOS], 2 tokens, as Marigold's released code encodes it (padding="do_not_pad"), whose
# recipe DPBridge follows. "max_length": padded to the tokenizer's 77 tokens, as diffusers' text-to-image pipelines
# encode an empty prompt. The text encoder is causal, so its first 2 rows are the same either way; what differs is
# whether the UNet's cross-attention attends over 2 keys or 77. A backbone folder that ships NULL_TEXT_FILE (the
# tiny one) uses that file under either setting.
NullTextPadding = Literal["none", "max_length"]
NULL_TEXT_PADDINGS = get_args(NullTextPadding)
DEFAULT_NULL_TEXT_PADDING = "none"


def recorded_path(path) -> str:
    """A weights path as recorded with results: relative to the repository when inside it (the shipped weights
    read the same in every clone, so a summary reproduces byte for byte), else absolute."""
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(REPO_DIR).as_posix()
    except ValueError:
        return str(resolved)


def tiny_vae_config() -> dict:
    """~0.7 M parameters, 4x down, 4 latent channels (SD has 8x down; the tiny world is 64 px)."""
    return dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(16, 32, 64), latent_channels=4,
                layers_per_block=1, norm_num_groups=16, sample_size=TINY_IMAGE_SIZE)


def tiny_unet_config() -> dict:
    """~1.5 M parameters, SD's block structure in miniature (cross-attention fed the null-text embedding)."""
    return dict(sample_size=TINY_LATENT_SIZE, in_channels=4, out_channels=4, block_out_channels=(32, 64, 64),
                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
                cross_attention_dim=TINY_TEXT_DIM, attention_head_dim=8, norm_num_groups=32)


@dataclass
class Backbone:
    """The pieces DPBridge takes from a pretrained latent diffusion model."""

    vae: "torch.nn.Module"  # diffusers AutoencoderKL
    unet: "torch.nn.Module | None"  # diffusers UNet2DConditionModel (None: load_backbone(with_unet=False))
    null_text: torch.Tensor  # [1, tokens, dim] cross-attention context
    scaling_factor: float  # latent = scaling_factor * E(x)
    source: str  # folder it came from, or "random-init"
    null_text_source: str  # how null_text was obtained (load_null_text), recorded with results


def missing_files_message(folder: Path) -> str:
    return (f"backbone folder {folder} is incomplete. Expected diffusers layout: vae/config.json, "
            f"vae/diffusion_pytorch_model.safetensors, unet/config.json, unet/diffusion_pytorch_model.safetensors, "
            f"and either {NULL_TEXT_FILE} or text_encoder/ + tokenizer/. For the tiny backbone run "
            f"`python -m harness pretrain` to regenerate it.")


def check_backbone_folder(folder: Path) -> None:
    needed = ["vae/config.json", "unet/config.json"]
    missing = [n for n in needed if not (folder / n).is_file()]
    has_text = (folder / NULL_TEXT_FILE).is_file() or (folder / "text_encoder").is_dir()
    if missing or not has_text:
        raise FileNotFoundError(missing_files_message(folder) + f" Missing: {', '.join(missing) or 'null text'}.")


def check_null_text_padding(padding: str) -> None:
    if padding not in NULL_TEXT_PADDINGS:
        raise ValueError(f"null_text_padding={padding!r}: expected one of {', '.join(NULL_TEXT_PADDINGS)}")


def load_null_text(folder: Path, padding: str = DEFAULT_NULL_TEXT_PADDING) -> tuple[torch.Tensor, str]:
    """The empty-prompt embedding [1,tokens,dim] and where it came from: the shipped file, or computed once from the
    backbone's own CLIP text encoder, tokenised as ``padding`` says (NULL_TEXT_PADDINGS)."""
    check_null_text_padding(padding)
    path = folder / NULL_TEXT_FILE
    if path.is_file():
        return load_file(str(path))["null_text"].float(), f"file {NULL_TEXT_FILE}"
    embedding = _encode_empty_prompt(str(Path(folder).resolve()), padding).clone()
    return embedding, f"CLIP text encoder on the empty prompt, padding {padding}, {embedding.shape[1]} tokens"


@functools.lru_cache(maxsize=4)
def _encode_empty_prompt(folder: str, padding: str) -> torch.Tensor:
    """CLIP text encoder of ``folder`` on the empty prompt, once per process and padding (the encoder is then
    released): [1,2,dim] for "none", [1,77,dim] for "max_length"."""
    from transformers import CLIPTextModel, CLIPTokenizer  # real SD folders only

    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)
    encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", local_files_only=True)
    ids = tokenizer([""], padding="do_not_pad" if padding == "none" else "max_length",
                    max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return encoder(ids)[0].float()


def load_backbone(folder: Path | str = TINY_BACKBONE_DIR, with_unet: bool = True,
                  null_text_padding: str = DEFAULT_NULL_TEXT_PADDING) -> Backbone:
    """Load VAE + UNet + null text from a diffusers-layout folder, fp32, offline. ``with_unet=False`` skips the
    UNet's weights (``unet`` is None): a trained checkpoint brings its own (SD2.1's UNet is 865 M parameters)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    folder = Path(folder)
    check_backbone_folder(folder)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=torch.float32, local_files_only=True)
    unet = None
    if with_unet:
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=torch.float32,
                                                    local_files_only=True).float()
    null_text, null_text_source = load_null_text(folder, null_text_padding)
    return Backbone(vae=vae.float().eval(), unet=unet, null_text=null_text,
                    scaling_factor=float(vae.config.scaling_factor), source=str(folder),
                    null_text_source=null_text_source)


def new_tiny_backbone(seed: int = 0) -> Backbone:
    """Randomly initialised tiny backbone (what `pretrain` starts from; also the from-scratch ablation)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(seed)
    vae = AutoencoderKL(**tiny_vae_config())
    unet = UNet2DConditionModel(**tiny_unet_config())
    gen = torch.Generator().manual_seed(seed)
    null_text = torch.randn(1, TINY_TEXT_TOKENS, TINY_TEXT_DIM, generator=gen)  # fixed, never trained
    return Backbone(vae=vae, unet=unet, null_text=null_text, scaling_factor=1.0, source="random-init",
                    null_text_source=f"random, seed {seed}")


def save_module_fp16(module: "torch.nn.Module", folder: Path) -> None:
    """diffusers save_pretrained with weights stored in float16 (shipped checkpoints stay small)."""
    half = {k: v.detach().to(torch.float16).contiguous() for k, v in module.state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    module.save_config(folder)
    save_file(half, str(folder / "diffusion_pytorch_model.safetensors"))


def save_backbone(backbone: Backbone, folder: Path, summary: dict) -> None:
    """Write the folder layout ``load_backbone`` reads, plus a training summary."""
    backbone.vae.register_to_config(scaling_factor=backbone.scaling_factor)
    save_module_fp16(backbone.vae, folder / "vae")
    save_module_fp16(backbone.unet, folder / "unet")
    save_file({"null_text": backbone.null_text.contiguous()}, str(folder / NULL_TEXT_FILE))
    (folder / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def widen_conv_in(unet: "torch.nn.Module", factor: int = 2) -> None:
    """conv_in 4 -> 4*factor input channels: weight duplicated along input channels and divided by ``factor``, bias
    kept (Marigold's trick, Appendix B.1), so the output is unchanged when every copy receives the same input."""
    old = unet.conv_in
    new = torch.nn.Conv2d(old.in_channels * factor, old.out_channels, old.kernel_size, old.stride, old.padding)
    with torch.no_grad():
        new.weight.copy_(old.weight.repeat(1, factor, 1, 1) / factor)
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=old.in_channels * factor)
