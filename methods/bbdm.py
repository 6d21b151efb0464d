"""BBDM (Li et al., 2023): a Brownian bridge between the map latent x_0 and the RGB latent y, trained from scratch
(random UNet), in DPBridge's latent space and UNet layout (input concat[y, x_t]). Math: methods/processes.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from methods.image_bridge import ImageBridgeModel
from methods.latent import NUM_TIMESTEPS, register_trainable
from methods.processes import BBDMSchedule, SkipMean
from methods.registry import register
from methods.trained import TrainedMethod


@dataclass(frozen=True)
class BBDMConfig:
    task: Literal["depth", "normals"] = "depth"
    backbone: str = "tiny"  # UNet architecture and frozen VAE; weights random unless finetune
    finetune: bool = False  # BBDM trains from scratch
    max_var: float = 1.0  # BBDM's s: delta_t = 2 s (m_t - m_t^2)
    skip_mean: SkipMean = "marginal"  # the step at eta < 1 (methods/processes.py)
    cond_image: bool = True  # UNet sees y beside x_t (False: zeros in that slot, BBDM's "nocond")
    default_steps: int = 10
    processing_res: int = 64


@register_trainable("bbdm")
class BBDMModel(ImageBridgeModel):
    """Output: x_t - x_0 (BBDM's "grad" objective)."""

    config_cls = BBDMConfig
    loss_name = "l_bbdm"

    def make_schedule(self, cfg):
        return BBDMSchedule(T=NUM_TIMESTEPS, max_var=cfg.max_var, skip_mean=cfg.skip_mean)


@register("bbdm")
class BBDM(TrainedMethod):
    """BBDM Brownian bridge trained from scratch on the tiny world (shipped: depth, at the ablation budget)."""

    tasks = ("depth",)
    trainable = "bbdm"
    checkpoint_stem = "bbdm_tiny"
