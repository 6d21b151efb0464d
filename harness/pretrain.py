"""Pretrain the tiny backbone, the project's stand-in for Stable Diffusion (`python -m harness pretrain`).

The run folder (``output``, default cache/pretrain/tiny_backbone) keeps the log and a checkpoint per stage every
``checkpoint_every`` steps: the same command resumes a killed run and ends bit-identical to one that never stopped.
The finished backbone is then exported to ``export`` (default: the shipped methods/weights/tiny_backbone).

1. VAE (AutoencoderKL) on tiny-world RGB images and on depth / normal maps encoded as 3-channel images.
2. Latent scaling factor = 1 / std of RGB latents (how SD chose 0.18215).
3. UNet (UNet2DConditionModel) as an ordinary eps-prediction latent diffusion model on RGB latents, SD's
   scaled-linear schedule, cross-attention fed the fixed null-text embedding.
"""
from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

import harness.pool
from harness.manifest import device_description, refuse_replacing, refuse_unrecorded_folder, settings_change
from harness.pool import encode_images, render_pool
from harness.runio import read_json_object, restore_interrupted_swap, write_folder_atomically
from harness.stage_checkpoint import StageCheckpoints, TrainingClock
from harness.train import warmup_exponential
from methods.backbones import TINY_BACKBONE_DIR, TINY_IMAGE_SIZE, new_tiny_backbone, save_backbone
from methods.bridge import BridgeSchedule
from methods.targets import flip_horizontal, normals_from_image, rgb_to_tensor, target_image


@dataclass(frozen=True)
class PretrainConfig:
    seed: int = 0
    pool_count: int = 4000  # training scenes rendered once
    val_count: int = 200
    batch: int = 16
    vae_steps: int = 1500
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6
    unet_steps: int = 2500
    unet_lr: float = 5e-4
    warmup: int = 100
    log_every: int = 100
    checkpoint_every: int = 250  # optimiser steps between checkpoints of the run folder
    output: str = ""  # run folder (checkpoints, log); default <cache>/pretrain/tiny_backbone
    export: str = ""  # where the finished backbone goes; default methods/weights/tiny_backbone (the shipped one)

    def __post_init__(self) -> None:
        for name in ("batch", "vae_steps", "unet_steps", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"pretrain setting {name} must be at least 1; got {getattr(self, name)}")


STAGES = ("vae", "unet")
NOT_RESULT_SETTINGS = ("log_every", "checkpoint_every", "output", "export")  # free to change on a resume


@dataclass
class Stage:
    """What ``_fit`` needs besides the module and its loss: where to checkpoint, how to log, the clock."""

    name: str
    checkpoints: StageCheckpoints
    clock: TrainingClock
    log: Callable[[dict], None]  # appends a row to the run's log


def _lr_lambda(warmup: int, total: int, final_ratio: float = 0.05):
    """Linear warm-up then exponential decay to ``final_ratio`` of the base rate at ``total``."""
    return lambda step: warmup_exponential(step, warmup, total, final_ratio)


def _vae_images(pool: dict, idx: torch.Tensor, kinds: torch.Tensor) -> torch.Tensor:
    """A batch mixing RGB (kind 0), depth (1) and normal (2) images, randomly flipped: [B,3,H,W] in [-1,1],
    channels-last in memory (as the uint8 pool is; the convolutions' rounding, and so the shipped backbone, depend
    on it). Each row is made only as its kind (a depth image costs a per-image quantile)."""
    makers = (lambda i: rgb_to_tensor(pool["rgb"][i]),
              lambda i: target_image("depth", pool["depth"][i], None, pool["valid"][i]),
              lambda i: target_image("normals", None, pool["normals"][i], pool["valid"][i]))
    images = torch.empty(len(idx), 3, *pool["rgb"].shape[1:3], memory_format=torch.channels_last)
    for kind, make in enumerate(makers):
        rows = (kinds == kind).nonzero().flatten()
        if len(rows):
            images[rows] = make(idx[rows])
    flip = torch.rand(len(idx)) < 0.5
    flipped = torch.where((kinds == 2).view(-1, 1, 1, 1), flip_horizontal(images, "normals"), flip_horizontal(images))
    return torch.where(flip.view(-1, 1, 1, 1), flipped, images)


def _fit(stage: Stage, module, lr: float, steps: int, batch_loss, cfg: PretrainConfig) -> float:
    """Adam with warm-up + exponential decay on ``batch_loss()`` for ``steps`` steps, from the stage's checkpoint
    if it has one; returns the loss EMA."""
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.warmup, steps))
    start, ema = stage.checkpoints.restore(stage.name, module, opt, sched, stage.clock)
    module.train()
    for step in range(start, steps):
        loss = batch_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % cfg.log_every == 0 or step == steps - 1:
            stage.log({"stage": stage.name, "step": step, "loss_ema": round(ema, 5), "lr": sched.get_last_lr()[0]})
        if (step + 1) % cfg.checkpoint_every == 0 or step == steps - 1:
            stage.checkpoints.save(stage.name, step + 1, module, opt, sched, ema, stage.clock)
    module.eval()
    return ema


def train_vae(vae, pool: dict, cfg: PretrainConfig, stage: Stage) -> dict:
    """L1 + L2 reconstruction (+ a small KL) on batches mixing RGB, depth and normal images."""
    n = len(pool["rgb"])

    def batch_loss():
        idx = torch.randint(0, n, (cfg.batch,))
        x = _vae_images(pool, idx, torch.randint(0, 3, (cfg.batch,)))
        post = vae.encode(x).latent_dist
        recon = vae.decode(post.sample()).sample
        return F.l1_loss(recon, x) + F.mse_loss(recon, x) + cfg.kl_weight * post.kl().mean()

    return {"vae_final_loss_ema": _fit(stage, vae, cfg.vae_lr, cfg.vae_steps, batch_loss, cfg)}


@torch.inference_mode()
def vae_reconstruction_report(vae, pool: dict) -> dict:
    """Round-trip errors on held-out (val) scenes: RGB and depth MAE in [-1,1] units; normals angular error."""
    rgb = rgb_to_tensor(pool["rgb"])
    depth = target_image("depth", pool["depth"], None, pool["valid"])
    normals = target_image("normals", None, pool["normals"], pool["valid"])
    valid = pool["valid"].unsqueeze(1)

    def roundtrip(x):
        return torch.cat([vae.decode(vae.encode(x[i:i + 64]).latent_dist.mode()).sample for i in range(0, len(x), 64)])

    rgb_err = (roundtrip(rgb) - rgb).abs().mean().item()
    d = roundtrip(depth).mean(1, keepdim=True)
    depth_err = (d - depth[:, :1]).abs()[valid].mean().item()
    cos = (normals_from_image(roundtrip(normals)) * normals).sum(1, keepdim=True).clamp(-1, 1)
    ang = torch.rad2deg(torch.acos(cos))[valid]
    return {"vae_rgb_mae_pm1": round(rgb_err, 4), "vae_depth_mae_pm1": round(depth_err, 4),
            "vae_normals_mean_deg": round(ang.mean().item(), 2), "vae_normals_median_deg": round(ang.median().item(), 2)}


def train_unet(backbone, latents: torch.Tensor, cfg: PretrainConfig, stage: Stage) -> dict:
    """Ordinary DDPM eps-prediction training on RGB latents [N,4,h,w] (diffusers index k in 0..999)."""
    alphabar = BridgeSchedule().alphabar[1:].float()  # [1000], diffusers index k = t - 1
    context = backbone.null_text.expand(cfg.batch, -1, -1)

    def batch_loss():
        z0 = latents[torch.randint(0, len(latents), (cfg.batch,))]
        k = torch.randint(0, 1000, (cfg.batch,))
        eps = torch.randn_like(z0)
        ab = alphabar[k].view(-1, 1, 1, 1)
        zk = ab.sqrt() * z0 + (1 - ab).sqrt() * eps
        return F.mse_loss(backbone.unet(zk, k, encoder_hidden_states=context).sample, eps)

    return {"unet_final_loss_ema": _fit(stage, backbone.unet, cfg.unet_lr, cfg.unet_steps, batch_loss, cfg)}


def check_export(folder: Path, settings: dict) -> None:
    """Refuse to replace a backbone pretrained with other settings (the shipped one by default): the same settings
    regenerate it; anything else goes elsewhere (``--set export=DIR``)."""
    path = folder / "training_summary.json"
    if not path.is_file():
        refuse_unrecorded_folder(folder, "training_summary.json", "--set export=DIR")
        return
    recorded = read_json_object(path, "pretrain again into another folder (--set export=DIR), or move this one "
                                      "away").get("config", {})
    change = settings_change({k: v for k, v in recorded.items() if k in settings}, json.loads(json.dumps(settings)))
    refuse_replacing(folder, "a backbone pretrained", change, "--set export=DIR")


def pretrain(cfg: PretrainConfig, command: str) -> dict:
    """Pretrain (or resume pretraining) in the run folder, then export the backbone; returns its summary."""
    out = Path(cfg.output or harness.pool.CACHE_DIR / "pretrain" / "tiny_backbone")
    settings = {k: v for k, v in asdict(cfg).items() if k not in NOT_RESULT_SETTINGS}
    export = Path(cfg.export or TINY_BACKBONE_DIR)
    restore_interrupted_swap(export)
    check_export(export, settings)  # before any training
    checkpoints = StageCheckpoints(out, STAGES, settings)
    resumed = checkpoints.open()
    log_path = out / "training_log.jsonl"
    if resumed is None:
        log_path.write_text("")
    else:
        checkpoints.trim_log(log_path, resumed)
    clock = TrainingClock()

    def log(row: dict) -> None:
        row = {**row, "elapsed_s": round(clock.elapsed(), 1)}
        print(json.dumps(row), flush=True)
        with log_path.open("a") as f:
            f.write(json.dumps(row) + "\n")

    if resumed is not None:
        clock.continue_from(resumed.elapsed_s)
        log({"event": "resume", "resumed_stage": resumed.stage, "steps_done": resumed.step})
    torch.manual_seed(cfg.seed)
    size = TINY_IMAGE_SIZE
    pool = render_pool("train", cfg.pool_count, cfg.seed, size)
    val = render_pool("val", cfg.val_count, cfg.seed, size)
    backbone = new_tiny_backbone(cfg.seed)
    summary = {"command": command, "config": asdict(cfg)}
    summary.update(train_vae(backbone.vae, pool, cfg, Stage("vae", checkpoints, clock, log)))
    summary.update(vae_reconstruction_report(backbone.vae, val))
    rgb = rgb_to_tensor(pool["rgb"])
    raw = encode_images(backbone.vae, torch.cat([rgb, flip_horizontal(rgb)]), 1.0)
    backbone.scaling_factor = float(1.0 / raw.std())
    summary["scaling_factor"] = backbone.scaling_factor
    summary.update(train_unet(backbone, raw * backbone.scaling_factor, cfg, Stage("unet", checkpoints, clock, log)))
    summary["train_time_s"] = round(clock.elapsed(), 1)
    summary["torch_threads"] = torch.get_num_threads()
    summary["machine"] = device_description("cpu")  # the CPU kind sets the rounding (and the losses' digits)
    if resumed is not None:
        summary["resumed_from"] = asdict(resumed)
    log({"stage": "done", **{k: v for k, v in summary.items() if k not in ("config",)}})
    def write(into: Path) -> None:
        save_backbone(backbone, into, summary)
        shutil.copy(log_path, into / "training_log.jsonl")

    write_folder_atomically(export, write)  # a kill here leaves the earlier export
    return summary


def pretrained_loss_at(backbone, latents: torch.Tensor, k: int, seed: int = 0) -> float:
    """Mean eps-MSE of the backbone UNet at diffusers index k (a check that pretraining learnt something)."""
    gen = torch.Generator().manual_seed(seed)
    alphabar = BridgeSchedule().alphabar[1:].float()
    eps = torch.randn(latents.shape, generator=gen)
    ab = alphabar[k]
    zk = math.sqrt(ab) * latents + math.sqrt(1 - ab) * eps
    kk = torch.full((len(latents),), k)
    with torch.inference_mode():
        pred = backbone.unet(zk, kk, encoder_hidden_states=backbone.null_text.expand(len(latents), -1, -1)).sample
    return F.mse_loss(pred, eps).item()
