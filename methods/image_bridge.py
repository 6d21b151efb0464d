"""What the bridges trained from scratch (I2SB, BBDM) share: the UNet sees concat[image latent, x_t] (or zeros in
the image slot), regresses its process' target, and samples from the image latent with its process' step.

A subclass names its schedule (methods/processes.py: q_sample, target, x0_from_output, step) and its loss term.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from methods.backbones import Backbone
from methods.latent import NUM_TIMESTEPS, LatentModel
from methods.processes import run_sampler


class ImageBridgeModel(LatentModel):
    loss_name = "?"  # the logged loss term

    def __init__(self, backbone: Backbone, cfg, widen: bool = True):
        super().__init__(backbone, cfg, widen)
        self.schedule = self.make_schedule(cfg)

    def make_schedule(self, cfg):
        raise NotImplementedError

    def draw_times(self, n, gen):
        return torch.randint(1, NUM_TIMESTEPS + 1, (n,), generator=gen)  # t = T is the image latent: fine here

    def output(self, x_t, image_latent, t):
        """The network's target estimate; x_t, image_latent [B,4,h,w], t int64 [B] in 1..T."""
        cond = image_latent if self.cfg.cond_image else torch.zeros_like(image_latent)
        return self.net(cond, x_t, t - 1)

    def loss(self, x_T, x_0, target, valid, t, noise):
        x_t = self.schedule.q_sample(x_0, x_T, t, noise)
        loss = F.mse_loss(self.output(x_t, x_T, t), self.schedule.target(x_t, x_0, t))
        return {"loss": loss, self.loss_name: loss.detach()}

    def sample_latent(self, x_T, steps, eta, noise_fn):
        def x0_fn(x, t):
            return self.schedule.x0_from_output(x, self.output(x, x_T, t), t)

        def step(x, x0_hat, t, s, eta_, z):
            return self.schedule.step(x, x0_hat, t, s, eta_, z, y=x_T)

        return run_sampler(x0_fn, step, x_T, steps, noise_fn, eta, NUM_TIMESTEPS)
