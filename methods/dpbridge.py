"""DPBridge: a latent diffusion bridge from the RGB latent x_T to the dense-map latent x_0 (Sections 4.3-4.6).

UNet from a pretrained latent diffusion backbone, conv_in widened to 8 channels (image latent first), input
concat[x_T, DAN(x_t)], timestep embedding t (diffusers index k = t - 1), null-text cross-attention.
Losses: eps likelihood (Eq. 9) + image consistency through the frozen VAE decoder (Eq. 10-11).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Optional

import torch
import torch.nn.functional as F

from methods.ablation import ABLATION_BASE, distinct_variants
from methods.backbones import DEFAULT_NULL_TEXT_PADDING, Backbone, NullTextPadding, check_null_text_padding
from methods.bridge import BridgeSchedule
from methods.latent import CONFIG_FILE, NUM_TIMESTEPS, LatentModel, config_from_dict, load_trained, per_sample_noise, \
    register_trainable
from methods.registry import register
from methods.trained import TrainedMethod

__all__ = ["CONFIG_FILE", "DPBridgeConfig", "DPBridgeModel", "build_model", "load_checkpoint", "per_sample_noise"]


@dataclass(frozen=True)
class DPBridgeConfig:
    """Every open choice of math.md, named, with its default (recorded with each checkpoint and result)."""

    task: Literal["depth", "normals"] = "depth"
    backbone: str = "tiny"  # "tiny" = methods/weights/tiny_backbone, else a diffusers-layout folder
    finetune: bool = True  # False: same UNet architecture, random init (the "from scratch" ablation)
    dan: Literal["A", "B", "off"] = "A"  # math.md section 3
    dan_timestep: Literal["t", "snr_matched"] = "t"
    # What the UNet outputs. "eps" (the paper, Eq. 9): the noise itself. "v": v = alpha' eps - sigma' x0 in the
    # DAN-A frame (x~ = alpha' x0 + sigma' eps), so eps_hat = sigma' x~ + alpha' v_hat. The loss is L_eps either
    # way. Near t = T, x0_hat = (x_t - a x_T - c eps_hat) / b divides by b_999 = 0.0008: eps prediction must then
    # reproduce its input to ~1e-4, which SD's UNet does and a tiny UNet does not (see README); "v" builds that
    # identity in.
    parameterization: Literal["eps", "v"] = "eps"
    image_consistency: Literal["pixel", "latent", "off"] = "pixel"  # math.md section 2
    ic_max_k: int = 759  # IC only where SNR_t - SNR_T >= 0.05 (diffusers index k <= 759)
    ic_subbatch: int = 4  # decode at most this many x0_hat per step for IC (0 = all); decoder cost on CPU
    lambda_eps: float = 1.0
    lambda_ic: float = 1.0
    # Fraction of training times drawn at the top, t = T-1, where the sampler's first step regresses the map from
    # the image; the rest ~ U{1..T-1}. 0 = the paper's uniform draw.
    top_t_fraction: float = 0.0
    default_steps: int = 10  # sampling steps when the user gives none (paper tables: 50)
    processing_res: int = 64  # long side the method sees where the dataset's protocol sets none (tiny: 64; SD: 768)
    # the empty prompt's tokens for an SD backbone's text encoder: "none" (Marigold's 2) or "max_length" (77);
    # methods.backbones.NULL_TEXT_PADDINGS. The tiny backbone ships its embedding, so it is the same under either.
    null_text_padding: NullTextPadding = DEFAULT_NULL_TEXT_PADDING

    def __post_init__(self):
        bad = [f"{k}={getattr(self, k)} (expected {why})" for k, ok, why in (
            ("top_t_fraction", 0 <= self.top_t_fraction < 1, "0 <= x < 1"),
            ("lambda_eps", self.lambda_eps > 0, "> 0"),
            ("lambda_ic", self.lambda_ic >= 0, ">= 0; image_consistency=off switches the term off"),
            ("default_steps", self.default_steps >= 1, ">= 1"),
            ("processing_res", self.processing_res >= 0, ">= 0"),
            ("ic_subbatch", self.ic_subbatch >= 0, ">= 0, 0 = all"),
            # SNR'_t = SNR_t - SNR_T is the SNR of DAN-A's input; B and off feed inputs it does not describe
            ("dan_timestep", self.dan_timestep == "t" or self.dan == "A", "t unless dan=A")) if not ok]
        if bad:
            raise ValueError(f"DPBridge settings out of range: {', '.join(bad)}")
        check_null_text_padding(self.null_text_padding)

    @classmethod
    def from_dict(cls, data: dict) -> "DPBridgeConfig":
        return config_from_dict(cls, data, "DPBridge")


@register_trainable("dpbridge")
class DPBridgeModel(LatentModel):
    """The bridge of math.md on a latent diffusion backbone: UNet input concat[x_T, DAN(x_t)]."""

    config_cls = DPBridgeConfig

    def __init__(self, backbone: Backbone, cfg: DPBridgeConfig, widen: bool = True):
        super().__init__(backbone, cfg, widen)
        self.schedule = BridgeSchedule()

    # ---- the network
    def eps(self, x_t: torch.Tensor, x_T: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """eps_theta(DAN(x_t), x_T, t): x_t, x_T [B,4,h,w], t int64 [B] DDPM time in 1..T-1."""
        x_in = self.schedule.dan(x_t, x_T, t, self.cfg.dan)
        k = self.schedule.dan_timestep(t, self.cfg.dan_timestep) - 1  # diffusers index
        out = self.net(x_T, x_in, k)
        if self.cfg.parameterization == "eps":
            return out
        return self.schedule.eps_from_v(x_t, x_T, out, t)

    # ---- training (Algorithm 1)
    def draw_times(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """int64 [n]: t ~ U{1..T-1}, except a ``top_t_fraction`` share of the draws at t = T-1."""
        t = super().draw_times(n, gen)
        if self.cfg.top_t_fraction > 0:
            top = torch.rand(n, generator=gen) < self.cfg.top_t_fraction
            t = torch.where(top, torch.full_like(t, NUM_TIMESTEPS - 1), t)
        return t

    def loss(self, x_T: torch.Tensor, x_0: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
             t: torch.Tensor, noise: torch.Tensor) -> dict[str, torch.Tensor]:
        """x_T, x_0, noise [B,4,h,w]; target [B,3,H,W] in [-1,1]; valid bool [B,1,H,W]; t int64 [B] in 1..T-1."""
        x_t = self.schedule.q_sample(x_0, x_T, t, noise)  # Eq. 3
        eps_hat = self.eps(x_t, x_T, t)
        l_eps = F.mse_loss(eps_hat, noise)  # Eq. 9
        total = self.cfg.lambda_eps * l_eps
        out = {"l_eps": l_eps.detach()}
        if self.cfg.image_consistency != "off" and self.cfg.lambda_ic > 0:
            l_ic = self._image_consistency(x_t, x_T, x_0, eps_hat, target, valid, t)
            if l_ic is not None:
                total = total + self.cfg.lambda_ic * l_ic  # Eq. 11
                out["l_ic"] = l_ic.detach()
        out["loss"] = total
        return out

    def _image_consistency(self, x_t, x_T, x_0, eps_hat, target, valid, t) -> Optional[torch.Tensor]:
        """Eq. 10 on the well-conditioned part of the batch (k = t - 1 <= ic_max_k)."""
        keep = torch.nonzero(t - 1 <= self.cfg.ic_max_k).flatten()
        if self.cfg.ic_subbatch > 0:
            keep = keep[: self.cfg.ic_subbatch]
        if keep.numel() == 0:
            return None
        x0_hat = self.schedule.x0_from_eps(x_t[keep], x_T[keep], eps_hat[keep], t[keep])
        if self.cfg.image_consistency == "latent":
            return F.mse_loss(x0_hat, x_0[keep])
        decoded = self.decode(x0_hat)  # [b,3,H,W]
        mask = valid[keep].expand_as(decoded)
        if not bool(mask.any()):
            return None
        return F.mse_loss(decoded[mask], target[keep].to(decoded.dtype)[mask])

    # ---- inference (Algorithm 2, Eq. 13)
    def sample_latent(self, x_T, steps, eta, noise_fn):
        return self.schedule.sample(lambda x, t: self.eps(x, x_T, t), x_T, num_steps=steps, eta=eta,
                                    noise_fn=noise_fn)


def build_model(cfg: DPBridgeConfig, seed: int = 0) -> DPBridgeModel:
    return DPBridgeModel.build(cfg, seed)


def load_checkpoint(folder: Path) -> DPBridgeModel:
    """A trained DPBridge folder (trained_config.json + unet/ with 8 input channels); VAE from its backbone."""
    return load_trained(folder, expect="dpbridge")


@register("dpbridge_tiny")
class DPBridgeTiny(TrainedMethod):
    """DPBridge on the tiny embedded backbone, trained on the tiny world (shipped checkpoints per task)."""

    trainable = "dpbridge"
    checkpoint_stem = "dpbridge_tiny"
    spec_options = {variant: ("depth",) for variant in distinct_variants(ABLATION_BASE, asdict(DPBridgeConfig()))}
    ablation_base = ABLATION_BASE  # the grid's tiny recipe (v, latent IC at every t)
    regenerate_hint = "python -m harness ablate --train (variant {variant}) or python -m harness train --method " \
                      "dpbridge_tiny --task {task}"
