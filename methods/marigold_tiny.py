"""The noise-to-map baseline (Marigold's formulation) on the tiny backbone: the UNet sees concat[image latent, x_t]
with x_t on SD's noise schedule, is fine-tuned from the same backbone with the same budget as DPBridge-tiny, and
samples with DDIM from pure noise (trailing grid). Marigold's multi-resolution noise and test-time ensembling are
not used (ensemble of 1). Math: methods/processes.py (DDIMSchedule).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from methods.backbones import Backbone
from methods.latent import NUM_TIMESTEPS, LatentModel, register_trainable
from methods.processes import DDIMSchedule, at_time, run_sampler
from methods.registry import register
from methods.trained import TrainedMethod


@dataclass(frozen=True)
class MarigoldTinyConfig:
    task: Literal["depth", "normals"] = "depth"
    backbone: str = "tiny"
    finetune: bool = True  # Marigold fine-tunes the backbone UNet
    prediction: Literal["v", "eps"] = "v"  # Marigold (SD2) predicts v; DPBridge-tiny also uses v
    default_steps: int = 10
    processing_res: int = 64


@register_trainable("marigold_tiny")
class MarigoldTinyModel(LatentModel):
    config_cls = MarigoldTinyConfig

    def __init__(self, backbone: Backbone, cfg: MarigoldTinyConfig, widen: bool = True):
        super().__init__(backbone, cfg, widen)
        self.schedule = DDIMSchedule(T=NUM_TIMESTEPS)

    def draw_times(self, n, gen):
        return torch.randint(1, NUM_TIMESTEPS + 1, (n,), generator=gen)

    def x0_estimate(self, x_t, image_latent, t):
        out = self.net(image_latent, x_t, t - 1)
        if self.cfg.prediction == "v":
            return self.schedule.x0_eps_from_v(x_t, out, t)[0]
        a, s = at_time(self.schedule.alpha, t, x_t), at_time(self.schedule.sigma, t, x_t)  # [B,1,1,1]
        return (x_t - s * out) / a

    def loss(self, x_T, x_0, target, valid, t, noise):
        x_t = self.schedule.q_sample(x_0, noise, t)
        goal = self.schedule.v_target(x_0, noise, t) if self.cfg.prediction == "v" else noise
        loss = F.mse_loss(self.net(x_T, x_t, t - 1), goal)
        return {"loss": loss, "l_diffusion": loss.detach()}

    def sample_latent(self, x_T, steps, eta, noise_fn):
        start = noise_fn()  # pure noise at t = T, drawn from each image's own generator
        return run_sampler(lambda x, t: self.x0_estimate(x, x_T, t), self.schedule.step, start, steps, noise_fn,
                           eta, NUM_TIMESTEPS)


@register("marigold_tiny")
class MarigoldTiny(TrainedMethod):
    """Noise-to-map diffusion (Marigold's formulation) fine-tuned from the tiny backbone, same budget as DPBridge."""

    tasks = ("depth",)
    trainable = "marigold_tiny"
    checkpoint_stem = "marigold_tiny"
