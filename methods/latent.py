"""What every latent dense-prediction model here shares: a trainable UNet fed ``concat[image latent, state]``, a
frozen VAE, the null-text context, and one checkpoint format.

Subclasses (DPBridge, I2SB, BBDM, the noise-to-map baseline) define the process: ``draw_times`` and ``loss`` for
training (Algorithm 1 and its analogues), ``sample_latent`` for inference. The training loop and the evaluator only
see this interface, so a new process is one file.

Checkpoint folder: ``trained_config.json`` ({"method": <registered trainable name>, "method_config": {...}}) +
``unet/`` (diffusers layout, fp16 weights) + the training summary and log. The VAE and null text come from the
backbone the config names.
"""
from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch

from methods.backbones import DEFAULT_NULL_TEXT_PADDING, WEIGHTS_DIR, Backbone, load_backbone, widen_conv_in
from methods.registry import registrar
from methods.targets import depth_from_image, normals_from_image

CONFIG_FILE = "trained_config.json"
NUM_TIMESTEPS = 1000  # T: SD's DDPM time; every process here discretises [0, T] the same way

# name -> model class; filled by @register_trainable. The decorator is the only place a trainable name is written.
TRAINABLE: dict[str, type] = {}
register_trainable = registrar(TRAINABLE, "trainable", "trainable_name")


def config_from_dict(cls: type, data: dict, what: str):
    """A frozen config dataclass from a dict, refusing unknown keys (a typo must not silently become a default)."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what} config keys {unknown}; known: {sorted(known)}")
    return cls(**data)


def resolve_backbone_path(name: str) -> Path:
    return WEIGHTS_DIR / "tiny_backbone" if name == "tiny" else Path(name)


def null_text_padding(cfg) -> str:
    """The config's ``null_text_padding`` (DPBridge names it); the baselines' configs, which do not, use the
    default (methods.backbones.NULL_TEXT_PADDINGS)."""
    return getattr(cfg, "null_text_padding", DEFAULT_NULL_TEXT_PADDING)


def per_sample_noise(like: torch.Tensor, generators: list[torch.Generator]) -> Callable[[], torch.Tensor]:
    """A noise function drawing image i's noise from generators[i], so a sample's result never depends on the
    batch it was in."""
    if len(generators) != like.shape[0]:
        raise ValueError(f"need one generator per image: {len(generators)} for a batch of {like.shape[0]}")

    def draw() -> torch.Tensor:
        return torch.stack([torch.randn(like.shape[1:], generator=g, dtype=like.dtype).to(like.device)
                            for g in generators])

    return draw


class LatentModel(torch.nn.Module):
    """The trainable UNet (input ``concat[x_T, state]``, 8 channels), the frozen VAE, the null-text context.

    ``cfg`` is the subclass' frozen config dataclass; it has at least ``task``, ``backbone``, ``finetune``,
    ``default_steps`` and ``processing_res``.
    """

    trainable_name = "?"  # set by @register_trainable
    config_cls: type = None  # the subclass' config dataclass

    def __init__(self, backbone: Backbone, cfg, widen: bool = True):
        super().__init__()
        self.cfg = cfg
        self.unet = backbone.unet
        if widen:
            widen_conv_in(self.unet)
        self.vae = backbone.vae.requires_grad_(False).eval()
        self.register_buffer("null_text", backbone.null_text, persistent=False)  # [1,tokens,dim]
        self.null_text_source = backbone.null_text_source
        self.scaling_factor = backbone.scaling_factor
        # inference: image sides must divide by the VAE's downsampling, so the latent is whole; diffusers' UNet takes
        # any latent size (its upsamplers are given the skip connections' sizes), as Marigold's pipeline relies on.
        # So NYUv2's native 480x640 is processed as it is (latent 60x80), not resized to 512x640.
        self.latent_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        # training crops divide by the UNet's downsampling as well, so every batch splits evenly at every level
        self.size_multiple = self.latent_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)

    # ---- building and loading
    @classmethod
    def build(cls, cfg, seed: int = 0) -> "LatentModel":
        """Fresh model for training: the pretrained backbone UNet (``finetune``) or the same architecture randomly
        initialised (seeded), conv_in widened to 8 channels either way."""
        backbone = load_backbone(resolve_backbone_path(cfg.backbone), null_text_padding=null_text_padding(cfg))
        if not cfg.finetune:
            from diffusers import UNet2DConditionModel

            torch.manual_seed(seed)
            backbone.unet = UNet2DConditionModel.from_config(backbone.unet.config)
        return cls(backbone, cfg)

    @classmethod
    def from_folder(cls, folder: Path, cfg) -> "LatentModel":
        from diffusers import UNet2DConditionModel

        backbone_dir = resolve_backbone_path(cfg.backbone)
        backbone = load_backbone(backbone_dir, with_unet=False,  # the checkpoint brings the UNet
                                 null_text_padding=null_text_padding(cfg))
        latent_channels = backbone.vae.config.latent_channels
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=torch.float32,
                                                    local_files_only=True)
        if unet.config.in_channels != 2 * latent_channels:
            raise ValueError(f"checkpoint {folder}: UNet has {unet.config.in_channels} input channels, expected "
                             f"{2 * latent_channels} (image latent + state latent) for backbone {cfg.backbone}")
        backbone.unet = unet.float()
        return cls(backbone, cfg, widen=False).eval()

    def config_record(self) -> dict:
        from dataclasses import asdict

        return {"method": self.trainable_name, "method_config": asdict(self.cfg)}

    # ---- latents
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] in [-1,1] -> [B,4,h,w] (posterior mode x scaling factor)."""
        return self.vae.encode(image).latent_dist.mode() * self.scaling_factor

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """[B,4,h,w] -> [B,3,H,W] (gradients flow through the frozen decoder)."""
        return self.vae.decode(latent / self.scaling_factor).sample

    def net(self, x_T: torch.Tensor, state: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """UNet(concat[x_T, state], k, null text): x_T, state [B,4,h,w]; k int64 [B] diffusers index 0..999."""
        context = self.null_text.to(state.dtype).expand(state.shape[0], -1, -1)
        k = k.to(state.device)  # the sampler's times live on the CPU (BridgeSchedule.sample)
        return self.unet(torch.cat([x_T, state], dim=1), k, encoder_hidden_states=context).sample

    # ---- the process (subclasses)
    def draw_times(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """Training times, int64 [n], DDPM time t ~ U{1..T-1} by default (never the singular endpoint T)."""
        return torch.randint(1, NUM_TIMESTEPS, (n,), generator=gen)

    def loss(self, x_T, x_0, target, valid, t, noise) -> dict[str, torch.Tensor]:
        """x_T, x_0, noise [B,4,h,w]; target [B,3,H,W] in [-1,1]; valid bool [B,1,H,W]; t int64 [B].
        Returns {"loss": scalar with grad, other terms detached}."""
        raise NotImplementedError

    def sample_latent(self, x_T: torch.Tensor, steps: int, eta: float,
                      noise_fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Image latent x_T [B,4,h,w] -> predicted map latent x_0 [B,4,h,w]."""
        raise NotImplementedError

    def check_steps(self, steps: int) -> None:
        if not 1 <= steps <= NUM_TIMESTEPS - 1:
            raise ValueError(f"{self.trainable_name}: steps must be in 1..{NUM_TIMESTEPS - 1}, got {steps}")

    # ---- inference
    @torch.inference_mode()
    def predict_image(self, rgb: torch.Tensor, steps: int, eta: float,
                      generators: list[torch.Generator], ensemble: int = 1) -> torch.Tensor:
        """rgb [B,3,H,W] in [-1,1] -> decoded map image [B,3,H,W]; one generator per image.

        ensemble > 1: that many samples per image, drawn one after another from the image's generator, averaged
        as decoded images (depth: the normalised [-1, 1] map; normals: the vectors, renormalised by the caller)."""
        self.check_steps(steps)
        # the image latent, encoded once, in float32 under autocast too: the sampler's state, noise and arithmetic
        # stay float32 (x0_hat divides by b_t, 8e-4 at the first step, which magnifies a bf16 state's rounding
        # about 1200x), only the networks run in the autocast dtype; a seed draws the same noise in every dtype
        x_T = self.encode(rgb).float()
        members = self.member_latents(x_T, steps, eta, generators, ensemble)
        return sum(self.decode(m).float() for m in members) / ensemble  # summed in float32 under autocast

    def member_latents(self, x_T: torch.Tensor, steps: int, eta: float, generators: list[torch.Generator],
                       members: int = 1) -> Iterator[torch.Tensor]:
        """``members`` sampled map latents [B,4,h,w], one after another, each image drawing from its generator."""
        if members < 1:
            raise ValueError(f"ensemble must be >= 1, got {members}")
        noise = per_sample_noise(x_T, generators)
        return (self.sample_latent(x_T, steps, eta, noise) for _ in range(members))


def save_config(model: LatentModel, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(model.config_record(), indent=2) + "\n")


def read_config(folder: Path) -> tuple[type, object]:
    """(model class, config) of a trained checkpoint folder, with errors that say what to do."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a trained checkpoint: {CONFIG_FILE} is missing. Train one with "
                                f"`python -m harness train --method <name> --task depth` or pass another --checkpoint.")
    fix = "retrain the checkpoint or pass another --checkpoint"
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is damaged (not valid JSON: {err}); {fix}") from None
    if not isinstance(record, dict) or not isinstance(record.get("method_config"), dict):
        raise ValueError(f"{path} is damaged (expected an object with \"method\" and \"method_config\"); {fix}")
    name = record.get("method")
    if name not in TRAINABLE:
        raise ValueError(f"{path}: method {name!r} is not a trainable method here; known: {sorted(TRAINABLE)}")
    cls = TRAINABLE[name]
    return cls, config_from_dict(cls.config_cls, record["method_config"], name)


def load_trained(folder: Path, expect: Optional[str] = None) -> LatentModel:
    """A trained checkpoint folder -> its model (eval mode). ``expect``: refuse another method's checkpoint."""
    cls, cfg = read_config(folder)
    if expect is not None and cls.trainable_name != expect:
        raise ValueError(f"checkpoint {folder} is a {cls.trainable_name} checkpoint, not {expect}")
    return cls.from_folder(Path(folder), cfg)


def map_from_image(task: str, image: torch.Tensor) -> torch.Tensor:
    """Decoded [B,3,H,W] -> depth [B,1,H,W] or unit normals [B,3,H,W]."""
    image = image.float()
    return normals_from_image(image) if task == "normals" else depth_from_image(image)
