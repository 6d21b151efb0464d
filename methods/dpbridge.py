"""DPBridge: a latent diffusion bridge from the RGB latent x_T to the dense-map latent x_0 (Sections 4.3-4.6).

UNet from a pretrained latent diffusion backbone, conv_in widened to 8 channels (image latent first), input
concat[x_T, DAN(x_t)], timestep embedding t (diffusers index k = t - 1), null-text cross-attention.
Losses: eps likelihood (Eq. 9) + image consistency through the frozen VAE decoder (Eq. 10-11).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal, Optional

import torch
import torch.nn.functional as F

from methods.backbones import WEIGHTS_DIR, Backbone, load_backbone, widen_conv_in
from methods.base import Method, OutputContract, RunOptions
from methods.bridge import BridgeSchedule
from methods.registry import register
from methods.targets import depth_from_image, normals_from_image

CONFIG_FILE = "dpbridge_config.json"


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
    default_steps: int = 10  # sampling steps when the user gives none (paper tables: 50)
    processing_res: int = 64  # long side the method sees (tiny world: 64; SD: 768 or the dataset's)

    @classmethod
    def from_dict(cls, data: dict) -> "DPBridgeConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown DPBridge config keys {unknown}; known: {sorted(known)}")
        return cls(**data)


def resolve_backbone_path(name: str) -> Path:
    return WEIGHTS_DIR / "tiny_backbone" if name == "tiny" else Path(name)


class DPBridgeModel(torch.nn.Module):
    """The trainable UNet plus the frozen VAE and the bridge schedule."""

    def __init__(self, backbone: Backbone, cfg: DPBridgeConfig, widen: bool = True):
        super().__init__()
        self.cfg = cfg
        self.schedule = BridgeSchedule()
        self.unet = backbone.unet
        if widen:
            widen_conv_in(self.unet)
        self.vae = backbone.vae.requires_grad_(False).eval()
        self.register_buffer("null_text", backbone.null_text, persistent=False)  # [1,tokens,dim]
        self.scaling_factor = backbone.scaling_factor
        # image sides must divide by the VAE's and the UNet's total downsampling
        self.size_multiple = 2 ** (len(self.vae.config.block_out_channels) - 1) * 2 ** (
            len(self.unet.config.block_out_channels) - 1)

    # ---- latents
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] in [-1,1] -> [B,4,h,w] (posterior mode x scaling factor)."""
        return self.vae.encode(image).latent_dist.mode() * self.scaling_factor

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """[B,4,h,w] -> [B,3,H,W] (gradients flow through the frozen decoder)."""
        return self.vae.decode(latent / self.scaling_factor).sample

    # ---- the network
    def eps(self, x_t: torch.Tensor, x_T: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """eps_theta(DAN(x_t), x_T, t): x_t, x_T [B,4,h,w], t int64 [B] DDPM time in 1..T-1."""
        x_in = self.schedule.dan(x_t, x_T, t, self.cfg.dan)
        k = self.schedule.dan_timestep(t, self.cfg.dan_timestep) - 1  # diffusers index
        context = self.null_text.to(x_t.dtype).expand(x_t.shape[0], -1, -1)
        out = self.unet(torch.cat([x_T, x_in], dim=1), k, encoder_hidden_states=context).sample
        if self.cfg.parameterization == "eps":
            return out
        return self.schedule.eps_from_v(x_t, x_T, out, t)

    # ---- training (Algorithm 1)
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
    @torch.inference_mode()
    def predict_image(self, rgb: torch.Tensor, steps: int, eta: float,
                      generators: list[torch.Generator]) -> torch.Tensor:
        """rgb [B,3,H,W] in [-1,1] -> decoded map image [B,3,H,W]; one generator per image."""
        x_T = self.encode(rgb)  # image latent, encoded once
        noise_fn = per_sample_noise(x_T, generators)
        x_0 = self.schedule.sample(lambda x, t: self.eps(x, x_T, t), x_T, num_steps=steps, eta=eta, noise_fn=noise_fn)
        return self.decode(x_0)


def per_sample_noise(like: torch.Tensor, generators: list[torch.Generator]):
    """A noise function drawing image i's noise from generators[i], so a sample's result never depends on the
    batch it was in."""
    if len(generators) != like.shape[0]:
        raise ValueError(f"need one generator per image: {len(generators)} for a batch of {like.shape[0]}")

    def draw() -> torch.Tensor:
        return torch.stack([torch.randn(like.shape[1:], generator=g, dtype=like.dtype).to(like.device)
                            for g in generators])

    return draw


def build_model(cfg: DPBridgeConfig, seed: int = 0) -> DPBridgeModel:
    """Fresh model for training: pretrained backbone (finetune) or the same architecture randomly initialised."""
    backbone = load_backbone(resolve_backbone_path(cfg.backbone))
    if not cfg.finetune:
        from diffusers import UNet2DConditionModel

        torch.manual_seed(seed)
        backbone.unet = UNet2DConditionModel.from_config(backbone.unet.config)
    return DPBridgeModel(backbone, cfg)


def load_checkpoint(folder: Path) -> DPBridgeModel:
    """A trained DPBridge folder: dpbridge_config.json + unet/ (8 input channels); the VAE comes from its backbone."""
    from diffusers import UNet2DConditionModel

    folder = Path(folder)
    cfg_path = folder / CONFIG_FILE
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{folder} is not a DPBridge checkpoint: {CONFIG_FILE} is missing. Train one with "
                                f"`python -m harness train --method dpbridge_tiny --task depth` or pass --checkpoint.")
    cfg = DPBridgeConfig.from_dict(json.loads(cfg_path.read_text())["method_config"])
    backbone = load_backbone(resolve_backbone_path(cfg.backbone))
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=torch.float32,
                                                local_files_only=True)
    if unet.config.in_channels != 2 * backbone.unet.config.in_channels:
        raise ValueError(f"checkpoint {folder}: UNet has {unet.config.in_channels} input channels, expected "
                         f"{2 * backbone.unet.config.in_channels} (image latent + bridge latent)")
    backbone.unet = unet.float()
    return DPBridgeModel(backbone, cfg, widen=False).eval()


@register("dpbridge_tiny")
class DPBridgeTiny(Method):
    """DPBridge on the tiny embedded backbone, trained on the tiny world (shipped checkpoints per task)."""

    def __init__(self, task, options: RunOptions):
        super().__init__(task, options)
        self.checkpoint = Path(options.checkpoint or WEIGHTS_DIR / f"dpbridge_tiny_{task}")
        self.model = load_checkpoint(self.checkpoint).to(options.device)
        if self.model.cfg.task != task:
            raise ValueError(f"checkpoint {self.checkpoint} was trained for {self.model.cfg.task}, not {task}")
        self.steps = options.steps or self.model.cfg.default_steps

    @property
    def contract(self) -> OutputContract:
        kind = "normals" if self.task == "normals" else "depth"
        return OutputContract(kind=kind, affine_invariant=kind == "depth", stochastic=True,
                              default_steps=self.model.cfg.default_steps, processing_res=self.model.cfg.processing_res,
                              size_multiple=self.model.size_multiple)

    def predict(self, rgb: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        device = torch.device(self.options.device)
        dtype = getattr(torch, self.options.dtype)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            image = self.model.predict_image(rgb.to(device), self.steps, self.options.eta, generators)
        image = image.float()
        return normals_from_image(image) if self.task == "normals" else depth_from_image(image)

    def describe(self) -> dict:
        cfg = asdict(self.model.cfg)
        return {"method": self.name, "variant": "default", "checkpoint": str(self.checkpoint),
                "steps": self.steps, "eta": self.options.eta, "dtype": self.options.dtype, "method_config": cfg}
