"""Real Stable Diffusion backbones (1.5 and 2.1-base) from local files: where to find them, and what they must be.

A backbone is found, first match wins: an explicit folder (``--backbone PATH``), the environment variable of its
family (``HARNESS_SD15`` / ``HARNESS_SD21``), then the local Hugging Face cache (offline: ``local_files_only``).
Every folder is checked from its JSON configs alone, before a weight is read: the right family (cross-attention
width 768 for SD 1.5, 1024 for SD 2.1), eps prediction at 512 px (2.1-base, not the 768-v model), no SDXL parts,
a 4-channel latent with 8x downsampling.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


@dataclass(frozen=True)
class SDFamily:
    """What identifies one Stable Diffusion family in its diffusers configs."""

    name: str  # "sd15" | "sd21"
    title: str
    cross_attention_dim: int  # CLIP text width the UNet attends to
    sample_size: int  # UNet latent side at the native resolution (64 = 512 px)
    env: str  # environment variable naming a local folder
    repos: tuple[str, ...]  # Hugging Face repo ids looked up in the local cache


SD_FAMILIES = {
    "sd15": SDFamily("sd15", "Stable Diffusion 1.5", 768, 64, "HARNESS_SD15",
                     ("stable-diffusion-v1-5/stable-diffusion-v1-5", "runwayml/stable-diffusion-v1-5")),
    "sd21": SDFamily("sd21", "Stable Diffusion 2.1-base", 1024, 64, "HARNESS_SD21",
                     ("stabilityai/stable-diffusion-2-1-base",)),
}

# (what, accepted file names) in a diffusers-layout folder; the first name is the one to download.
REQUIRED_FILES = (
    ("unet config", ("unet/config.json",)),
    ("unet weights", ("unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.bin")),
    ("vae config", ("vae/config.json",)),
    ("vae weights", ("vae/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.bin")),
    ("text encoder config", ("text_encoder/config.json",)),
    ("text encoder weights", ("text_encoder/model.safetensors", "text_encoder/pytorch_model.bin")),
    ("tokenizer vocabulary", ("tokenizer/vocab.json", "tokenizer/tokenizer.json")),
    ("tokenizer merges", ("tokenizer/merges.txt", "tokenizer/tokenizer.json")),
    ("tokenizer config", ("tokenizer/tokenizer_config.json",)),  # model_max_length 77: null_text_padding=max_length
    ("scheduler config", ("scheduler/scheduler_config.json",)),
)


class BackboneMismatchError(ValueError):
    """A folder that is not the backbone family a method needs (checked from configs, before any compute)."""


def download_hint(family: SDFamily) -> str:
    files = " ".join(names[0] for _, names in REQUIRED_FILES) + " tokenizer/special_tokens_map.json"
    return (f"huggingface-cli download {family.repos[0]} {files} --local-dir /path/to/{family.name}, then pass "
            f"--backbone /path/to/{family.name} or set {family.env}=/path/to/{family.name}")


def needed_files_text() -> str:
    return ", ".join(" or ".join(names) for _, names in REQUIRED_FILES)


def missing_files(folder: Path) -> list[str]:
    return [names[0] for _, names in REQUIRED_FILES if not any((folder / n).is_file() for n in names)]


def cached_snapshot(family: SDFamily) -> Optional[Path]:
    """The family's folder in the local Hugging Face cache, or None (never touches the network)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    for repo in family.repos:
        try:
            folder = Path(snapshot_download(repo, local_files_only=True))
        except (LocalEntryNotFoundError, OSError):  # not in the cache: try the next repo id
            continue
        if not missing_files(folder):
            return folder
    return None


def resolve_backbone(family_name: str, explicit: Optional[str] = None, env=os.environ) -> Path:
    """The backbone folder of ``family_name`` ("sd15" / "sd21"), checked; an error listing every place looked."""
    family = SD_FAMILIES[family_name]
    looked = []
    if explicit:
        candidates = [("--backbone", Path(explicit).expanduser())]
    elif env.get(family.env):
        candidates = [(f"${family.env}", Path(env[family.env]).expanduser())]
    else:
        looked.append(f"${family.env} (not set)")
        snap = cached_snapshot(family)
        candidates = [("Hugging Face cache", snap)] if snap else []
        if not snap:
            looked.append(f"the Hugging Face cache ({', '.join(family.repos)}: not cached, or incomplete)")
    for origin, folder in candidates:
        missing = missing_files(folder) if folder.is_dir() else ["the folder itself"]
        if missing:
            raise FileNotFoundError(
                f"{family.title} backbone from {origin}: {folder} lacks {', '.join(missing)}. A backbone folder "
                f"needs (diffusers layout): {needed_files_text()}. Get them with: {download_hint(family)}.")
        check_backbone_family(folder, family_name)
        return folder
    raise FileNotFoundError(
        f"no {family.title} weights found. Looked at: {'; '.join(looked)}. Needed in one folder (diffusers layout): "
        f"{needed_files_text()}. Get them with: {download_hint(family)}.")


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read {path}: {err}") from err


def family_of_unet(unet_cfg: dict) -> Optional[str]:
    """The family whose cross-attention width a UNet config has, or None."""
    for name, fam in SD_FAMILIES.items():
        if unet_cfg.get("cross_attention_dim") == fam.cross_attention_dim:
            return name
    return None


def check_backbone_family(folder: Path, family_name: str) -> None:
    """Raise BackboneMismatchError when ``folder`` is not a ``family_name`` backbone (configs only, no weights)."""
    family = SD_FAMILIES[family_name]
    folder = Path(folder)
    problems = backbone_problems(folder, family)
    if problems:
        raise BackboneMismatchError(f"{folder} is not a {family.title} backbone: {'; '.join(problems)}. "
                                    f"Pass the {family.title} folder (diffusers layout) as --backbone or "
                                    f"${family.env}.")


def backbone_problems(folder: Path, family: SDFamily) -> list[str]:
    unet = read_json(folder / "unet" / "config.json")
    sched = read_json(folder / "scheduler" / "scheduler_config.json")
    vae = read_json(folder / "vae" / "config.json")
    text = read_json(folder / "text_encoder" / "config.json")
    out = []
    if (folder / "text_encoder_2").exists() or unet.get("addition_embed_type"):
        out.append("it has SDXL parts (text_encoder_2 / addition_embed_type), an SDXL-family model")
    width = unet.get("cross_attention_dim")
    if width != family.cross_attention_dim:
        other = family_of_unet(unet)
        guess = f" (that is {SD_FAMILIES[other].title})" if other else ""
        out.append(f"unet cross_attention_dim is {width}{guess}, {family.title} has {family.cross_attention_dim}")
    if unet.get("in_channels") != 4 or unet.get("out_channels") != 4:
        out.append(f"unet has {unet.get('in_channels')} -> {unet.get('out_channels')} channels, a backbone has "
                   f"4 -> 4 (an 8-channel UNet is an already fine-tuned Marigold / DPBridge checkpoint)")
    prediction = sched.get("prediction_type", "epsilon")
    if prediction != "epsilon" or unet.get("sample_size") != family.sample_size:
        out.append(f"it predicts {prediction} at sample_size {unet.get('sample_size')} (= "
                   f"{8 * (unet.get('sample_size') or 0)} px); {family.title} predicts epsilon at "
                   f"{family.sample_size} (= {8 * family.sample_size} px): the 768-v SD 2.x models are not the base")
    if vae.get("latent_channels") != 4 or len(vae.get("block_out_channels", ())) != 4:
        out.append(f"vae has {vae.get('latent_channels')} latent channels and "
                   f"{2 ** (len(vae.get('block_out_channels', ())) - 1)}x downsampling; SD has 4 and 8x")
    if text.get("hidden_size") != family.cross_attention_dim:
        out.append(f"text_encoder hidden_size is {text.get('hidden_size')}, the unet attends to "
                   f"{family.cross_attention_dim}")
    return out
