"""BBDM (Li et al., 2023): a Brownian bridge between the map latent x_0 and the RGB latent y, trained from scratch
(random UNet), in DPBridge's latent space and UNet layout (input concat[y, x_t]). Math: methods/processes.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from methods.backbones import Backbone
from methods.latent import NUM_TIMESTEPS, LatentModel, register_trainable
from methods.processes import BBDMSchedule, run_sampler
from methods.registry import register
from methods.trained import TrainedMethod


@dataclass(frozen=True)
class BBDMConfig:
    task: Literal["depth", "normals"] = "depth"
    backbone: str = "tiny"  # UNet architecture and frozen VAE; weights random unless finetune
    finetune: bool = False  # BBDM trains from scratch
    max_var: float = 1.0  # BBDM's s: delta_t = 2 s (m_t - m_t^2)
    cond_image: bool = True  # UNet sees y beside x_t (False: zeros in that slot, BBDM's "nocond")
    default_steps: int = 10
    processing_res: int = 64


@register_trainable("bbdm")
class BBDMModel(LatentModel):
    config_cls = BBDMConfig

    def __init__(self, backbone: Backbone, cfg: BBDMConfig, widen: bool = True):
        super().__init__(backbone, cfg, widen)
        self.schedule = BBDMSchedule(T=NUM_TIMESTEPS, max_var=cfg.max_var)

    def draw_times(self, n, gen):
        return torch.randint(1, NUM_TIMESTEPS + 1, (n,), generator=gen)

    def output(self, x_t, y, t):
        """The network's x_t - x_0 estimate; x_t, y [B,4,h,w], t int64 [B] in 1..T."""
        cond = y if self.cfg.cond_image else torch.zeros_like(y)
        return self.net(cond, x_t, t - 1)

    def loss(self, x_T, x_0, target, valid, t, noise):
        x_t = self.schedule.q_sample(x_0, x_T, t, noise)
        loss = F.mse_loss(self.output(x_t, x_T, t), self.schedule.target(x_t, x_0, t))
        return {"loss": loss, "l_bbdm": loss.detach()}

    def sample_latent(self, x_T, steps, eta, noise_fn):
        def x0_fn(x, t):
            return self.schedule.x0_from_output(x, self.output(x, x_T, t), t)

        def step(x, x0_hat, t, s, eta_, z):
            return self.schedule.step(x, x0_hat, t, s, eta_, z, y=x_T)

        return run_sampler(x0_fn, step, x_T, steps, noise_fn, eta, NUM_TIMESTEPS)


@register("bbdm")
class BBDM(TrainedMethod):
    """BBDM Brownian bridge trained from scratch on the tiny world (shipped: depth, at the ablation budget)."""

    tasks = ("depth",)
    trainable = "bbdm"
    checkpoint_stem = "bbdm_tiny"
