"""I2SB (Liu et al., 2023): an image-to-image Schrödinger bridge between the RGB latent x_1 and the map latent x_0,
trained from scratch (random UNet), in DPBridge's latent space and UNet layout (input concat[x_1, x_t]), so the
rows differ from DPBridge only in the bridge and the missing pretrained prior. Math: methods/processes.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from methods.backbones import Backbone
from methods.latent import NUM_TIMESTEPS, LatentModel, register_trainable
from methods.processes import I2SBSchedule, run_sampler
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
class I2SBModel(LatentModel):
    config_cls = I2SBConfig

    def __init__(self, backbone: Backbone, cfg: I2SBConfig, widen: bool = True):
        super().__init__(backbone, cfg, widen)
        self.schedule = I2SBSchedule(T=NUM_TIMESTEPS, beta_max=cfg.beta_max)

    def draw_times(self, n, gen):
        return torch.randint(1, NUM_TIMESTEPS + 1, (n,), generator=gen)  # t = T is x_1 itself: fine here

    def output(self, x_t, x_1, t):
        """The network's (x_t - x_0) / sigma_t estimate; x_t, x_1 [B,4,h,w], t int64 [B] in 1..T."""
        cond = x_1 if self.cfg.cond_image else torch.zeros_like(x_1)
        return self.net(cond, x_t, t - 1)

    def loss(self, x_T, x_0, target, valid, t, noise):
        x_t = self.schedule.q_sample(x_0, x_T, t, noise)
        loss = F.mse_loss(self.output(x_t, x_T, t), self.schedule.target(x_t, x_0, t))
        return {"loss": loss, "l_i2sb": loss.detach()}

    def sample_latent(self, x_T, steps, eta, noise_fn):
        def x0_fn(x, t):
            return self.schedule.x0_from_output(x, self.output(x, x_T, t), t)

        return run_sampler(x0_fn, self.schedule.step, x_T, steps, noise_fn, eta, NUM_TIMESTEPS)


@register("i2sb")
class I2SB(TrainedMethod):
    """I2SB bridge trained from scratch on the tiny world (shipped: depth, at the ablation budget)."""

    tasks = ("depth",)
    trainable = "i2sb"
    checkpoint_stem = "i2sb_tiny"
