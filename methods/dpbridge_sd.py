"""DPBridge on real Stable Diffusion: ``dpbridge_sd15`` and ``dpbridge_sd21`` (the paper's two backbones).

Same model as ``dpbridge_tiny`` (methods.dpbridge, trainable "dpbridge"); only the backbone differs. Training
(``python -m harness train --method dpbridge_sd21 --datasets hypersim,vkitti``) records the backbone folder in
the checkpoint's DPBridgeConfig; evaluation reads a trained checkpoint folder (``--checkpoint DIR``, default
``cache/checkpoints/<name>_<task>`` or ``$HARNESS_CHECKPOINTS/<name>_<task>``). Every check below reads JSON
configs only, so a wrong folder fails before a weight is loaded.
"""
from __future__ import annotations

import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional

from methods.ablation import distinct_variants
from methods.dpbridge import DPBridgeConfig, DPBridgeModel
from methods.latent import read_config
from methods.registry import register
from methods.sd_backbone import SD_FAMILIES, check_backbone_family, read_json, resolve_backbone
from methods.trained import TrainedMethod

CHECKPOINT_ROOT = Path(os.environ.get("HARNESS_CHECKPOINTS", Path(__file__).resolve().parents[1] / "cache" /
                                      "checkpoints"))

# DPBridgeConfig settings of the real-backbone methods (recorded in every checkpoint). processing_res: the long
# side the method sees where the dataset's protocol sets none (your own folders, `predict`; the benchmarks use
# their own, protocol.md), Marigold's 768 for SD backbones [choice: the paper does not state it]; default_steps:
# 50, the paper's main tables.
SD_METHOD_SETTINGS = {"processing_res": 768, "default_steps": 50}


class DPBridgeSD(TrainedMethod):
    """DPBridge on a Stable Diffusion backbone, evaluated from a trained checkpoint folder."""

    trainable = DPBridgeModel.trainable_name  # "dpbridge"
    family = "?"  # key of methods.sd_backbone.SD_FAMILIES
    train_preset = "paper"  # harness.train_data.TRAIN_PRESETS: the paper's optimisation recipe
    regenerate_hint = ("python -m harness train --method {name} --task {task} --datasets hypersim,vkitti "
                       "[--backbone PATH]")

    ablation_base: dict = {}  # the grid at scale starts from the paper's defaults (eps, pixel IC)
    # Table 3's grid, name[variant]
    spec_options = {variant: ("depth",) for variant in distinct_variants({}, asdict(DPBridgeConfig()))}

    def checked_config(self, folder: Path):
        return checked_checkpoint(folder, self.family, self.name)

    @classmethod
    def shipped_checkpoint(cls, task: str, variant: str) -> Path:
        """Where `train` puts (and `run` finds) a checkpoint: <root>/<name>_<task>[_<variant>]."""
        return CHECKPOINT_ROOT / (f"{cls.name}_{task}" + ("" if variant == "default" else f"_{variant}"))

    @classmethod
    def method_settings(cls, backbone: Optional[str] = None) -> dict:
        """DPBridgeConfig settings for training: the backbone folder (checked) and SD_METHOD_SETTINGS."""
        return {"backbone": str(resolve_backbone(cls.family, backbone)), **SD_METHOD_SETTINGS}

    def describe(self) -> dict:
        return {**super().describe(), "backbone_family": self.family}


def checked_checkpoint(folder: Path, family_name: str, method: str):
    """(model class, config) of a checkpoint that fits ``family_name``, its backbone resolved; clear errors when the
    checkpoint or its backbone is of another method, family or channel count."""
    family = SD_FAMILIES[family_name]
    cls, cfg = read_config(folder)
    if cls.trainable_name != DPBridgeSD.trainable:
        raise ValueError(f"checkpoint {folder} is a {cls.trainable_name} checkpoint; {method} needs a DPBridge one")
    unet = read_json(Path(folder) / "unet" / "config.json")
    if unet.get("in_channels") != 8 or unet.get("out_channels") != 4:
        raise ValueError(f"checkpoint {folder}: unet has {unet.get('in_channels')} -> {unet.get('out_channels')} "
                         f"channels; a DPBridge checkpoint has 8 (image latent + state) -> 4")
    if unet.get("cross_attention_dim") != family.cross_attention_dim:
        raise ValueError(f"checkpoint {folder}: unet cross_attention_dim {unet.get('cross_attention_dim')} does not "
                         f"match {family.title} ({family.cross_attention_dim}); it was trained on another backbone "
                         f"(config backbone: {cfg.backbone}). Use the method of that backbone.")
    backbone = Path(cfg.backbone)
    if backbone.is_dir():
        check_backbone_family(backbone, family_name)
    else:  # the recorded folder moved: find the family's weights the usual way ($HARNESS_SDxx, the HF cache)
        try:
            cfg = replace(cfg, backbone=str(resolve_backbone(family_name)))
        except FileNotFoundError as err:
            raise FileNotFoundError(f"checkpoint {folder} was trained on the backbone folder {backbone}, which does "
                                    f"not exist here; {err}") from err
    return cls, cfg


@register("dpbridge_sd15")
class DPBridgeSD15(DPBridgeSD):
    """DPBridge on Stable Diffusion 1.5 (paper rows): trained checkpoint (--checkpoint) + local SD 1.5 folder."""

    family = "sd15"


@register("dpbridge_sd21")
class DPBridgeSD21(DPBridgeSD):
    """DPBridge on Stable Diffusion 2.1-base (paper rows): trained checkpoint (--checkpoint) + local SD 2.1-base."""

    family = "sd21"
