"""I2SB (Liu et al., 2023): an image-to-image Schrödinger bridge between the RGB latent x_1 and the map latent x_0,
trained from scratch (random UNet), in DPBridge's latent space and UNet layout (input concat[x_1, x_t]), so the
rows differ from DPBridge only in the bridge and the missing pretrained prior. Math: methods/processes.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from methods.image_bridge import ImageBridgeModel
from methods.latent import NUM_TIMESTEPS, register_trainable
from methods.processes import I2SBSchedule
from methods.registry import register
from methods.trained import TrainedMethod


@dataclass(frozen=True)
class I2SBConfig:
    task: Literal["depth", "normals"] = "depth"
    backbone: str = "tiny"  # UNet architecture and frozen VAE; weights random unless finetune
    finetune: bool = False  # I2SB trains from scratch (True: start from the backbone UNet)
    beta_max: float = 0.3  # I2SB's default
    cond_image: bool = True  # UNet sees x_1 beside x_t (False: zeros in that slot, I2SB's unconditional form)
    default_steps: int = 10
    processing_res: int = 64


@register_trainable("i2sb")
class I2SBModel(ImageBridgeModel):
    """Output: (x_t - x_0) / sigma_t."""

    config_cls = I2SBConfig
    loss_name = "l_i2sb"

    def make_schedule(self, cfg):
        return I2SBSchedule(T=NUM_TIMESTEPS, beta_max=cfg.beta_max)


@register("i2sb")
class I2SB(TrainedMethod):
    """I2SB bridge trained from scratch on the tiny world (shipped: depth, at the ablation budget)."""

    tasks = ("depth",)
    trainable = "i2sb"
    checkpoint_stem = "i2sb_tiny"
