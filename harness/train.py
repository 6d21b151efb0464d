"""Train DPBridge (`python -m harness train --method dpbridge_tiny --task depth`).

The paper's recipe (Section 5.2): Adam, warm-up then exponential decay, batch x accumulation = effective batch,
random horizontal flip (the normal's x flips too). accelerate handles device, mixed precision and accumulation.
Every batch, timestep and noise is drawn from a generator seeded by (seed, iteration, micro-step), so a run
resumed from its last checkpoint continues exactly as if it had never stopped.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from harness.manifest import stable_seed
from harness.pool import latent_pool, render_pool
from methods.backbones import TINY_IMAGE_SIZE, WEIGHTS_DIR, save_module_fp16
from methods.dpbridge import CONFIG_FILE, DPBridgeConfig, build_model


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. Paper: 30K iterations, batch 2 x 8 accumulation, lr lost from the text (3e-5 is
    Marigold's). The tiny world trains a 1.5 M-parameter UNet for minutes, so its defaults differ (recorded)."""

    iterations: int = 3000  # optimiser steps
    batch: int = 16  # per process, per micro-step
    grad_accum: int = 1  # effective batch = processes x batch x grad_accum
    lr: float = 5e-4
    warmup: int = 100
    lr_final_ratio: float = 0.01  # exponential decay reaches lr x this at the last iteration (Marigold's 0.01)
    seed: int = 0
    pool_count: int = 6000  # tiny-world training scenes (x2 with flips)
    mixed_precision: str = "no"  # "no" | "fp16" | "bf16"
    checkpoint_every: int = 250
    log_every: int = 50
    output: str = ""  # run folder (checkpoints, log); default cache/train/<method>_<task>
    export: str = ""  # where the final fp16 checkpoint goes; default methods/weights/dpbridge_tiny_<task>


def warmup_exponential(step: int, warmup: int, total: int, final_ratio: float) -> float:
    """Learning-rate factor: linear warm-up for ``warmup`` steps, then exponential decay reaching ``final_ratio``
    at step ``total`` (the paper's schedule; also the tiny backbone's)."""
    if step < warmup:
        return (step + 1) / warmup
    return final_ratio ** ((step - warmup) / max(total - warmup, 1))


def lr_factor(step: int, cfg: TrainConfig) -> float:
    return warmup_exponential(step, cfg.warmup, cfg.iterations, cfg.lr_final_ratio)


def draw_batch(latents: dict, n_rows: int, batch: int, gen: torch.Generator, num_timesteps: int = 1000):
    """Indices, DDPM times t ~ U{1..T-1} (never the singular T) and noise, all from ``gen``."""
    idx = torch.randint(0, n_rows, (batch,), generator=gen)
    t = torch.randint(1, num_timesteps, (batch,), generator=gen)
    noise = torch.randn((batch, *latents["x_0"].shape[1:]), generator=gen)
    return idx, t, noise


def _log(path: Path, row: dict) -> None:
    print(json.dumps(row), flush=True)
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def _save_state(accelerator, out: Path, iteration: int, config: dict) -> None:
    """Checkpoint to out/checkpoint (written to a temp folder, then swapped in: a kill never leaves half a one)."""
    tmp, final = out / "checkpoint.tmp", out / "checkpoint"
    shutil.rmtree(tmp, ignore_errors=True)
    accelerator.save_state(str(tmp))
    (tmp / "iteration.json").write_text(json.dumps({"iteration": iteration, "method_config": config}))
    old = out / "checkpoint.old"
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def train(method_cfg: DPBridgeConfig, cfg: TrainConfig, command: str, method_name: str = "dpbridge_tiny") -> dict:
    from accelerate import Accelerator

    out = Path(cfg.output or Path("cache") / "train" / f"{method_name}_{method_cfg.task}")
    out.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(gradient_accumulation_steps=cfg.grad_accum, mixed_precision=cfg.mixed_precision)
    model = build_model(method_cfg, seed=cfg.seed)
    pool = render_pool("train", cfg.pool_count, cfg.seed, TINY_IMAGE_SIZE)
    latents = latent_pool(pool, method_cfg.task, model.vae, model.scaling_factor,
                          key=f"train_{cfg.pool_count}_{cfg.seed}_{TINY_IMAGE_SIZE}")
    n_rows = len(latents["x_0"])
    opt = torch.optim.Adam(model.unet.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, cfg))
    model.unet, opt, sched = accelerator.prepare(model.unet, opt, sched)
    model.vae.to(accelerator.device)
    model.null_text = model.null_text.to(accelerator.device)

    start = 0
    if (out / "checkpoint" / "iteration.json").is_file():
        state = json.loads((out / "checkpoint" / "iteration.json").read_text())
        if state.get("method_config") != asdict(method_cfg):
            raise ValueError(f"{out}/checkpoint was trained with another method config ({state.get('method_config')});"
                             f" resume with the same settings or choose another --set output=DIR")
        accelerator.load_state(str(out / "checkpoint"))
        start = state["iteration"]
    log_path = out / "training_log.jsonl"
    if start == 0:
        log_path.write_text("")
    effective = accelerator.num_processes * cfg.batch * cfg.grad_accum
    if accelerator.is_main_process:
        _log(log_path, {"event": "start", "iteration": start, "effective_batch": effective,
                        "world_size": accelerator.num_processes, "device": str(accelerator.device)})
    started, ema = time.time(), {}
    model.unet.train()
    for it in range(start, cfg.iterations):
        for micro in range(cfg.grad_accum):
            gen = torch.Generator().manual_seed(hash_seed(cfg.seed, it, micro, accelerator.process_index))
            idx, t, noise = draw_batch(latents, n_rows, cfg.batch, gen)
            dev = accelerator.device
            with accelerator.accumulate(model.unet):
                with accelerator.autocast():
                    losses = model.loss(latents["x_T"][idx].to(dev), latents["x_0"][idx].to(dev),
                                        latents["target"][idx].float().to(dev), latents["valid"][idx].to(dev),
                                        t.to(dev), noise.to(dev))
                accelerator.backward(losses["loss"])
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
        for k, v in losses.items():
            ema[k] = v.item() if k not in ema else 0.98 * ema[k] + 0.02 * v.item()
        done = it + 1
        if accelerator.is_main_process and (it % cfg.log_every == 0 or done == cfg.iterations):
            _log(log_path, {"iteration": it, **{f"{k}_ema": round(v, 5) for k, v in ema.items()},
                            "lr": sched.get_last_lr()[0], "elapsed_s": round(time.time() - started, 1)})
        if done % cfg.checkpoint_every == 0 or done == cfg.iterations:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                _save_state(accelerator, out, done, asdict(method_cfg))
    accelerator.wait_for_everyone()
    summary = {"command": command, "method": method_name, "method_config": asdict(method_cfg),
               "train_config": asdict(cfg), "effective_batch": effective, "world_size": accelerator.num_processes,
               "final_loss_ema": {k: round(v, 5) for k, v in ema.items()},
               "train_time_s_this_session": round(time.time() - started, 1), "torch_threads": torch.get_num_threads()}
    if accelerator.is_main_process:
        export(accelerator.unwrap_model(model.unet), method_cfg, summary, log_path,
               Path(cfg.export or WEIGHTS_DIR / f"{method_name}_{method_cfg.task}"))
    return summary


def hash_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across runs and platforms)."""
    return stable_seed(repr(parts))


def export(unet, method_cfg: DPBridgeConfig, summary: dict, log_path: Path, folder: Path) -> None:
    """The shipped checkpoint: fp16 UNet + config + summary + the training log."""
    save_module_fp16(unet, folder / "unet")
    (folder / CONFIG_FILE).write_text(json.dumps({"method_config": asdict(method_cfg)}, indent=2) + "\n")
    (folder / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    shutil.copy(log_path, folder / "training_log.jsonl")
