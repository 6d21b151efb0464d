"""Sample against posterior mean: where a DPBridge checkpoint's error comes from, on tiny-world scenes.

For the first ``count`` scenes of a split it measures, in latent space (mean squared error to the map latent x_0):

* ``posterior_mean``: the network's x0 estimate from a true bridge state x_t ~ q(x_t | x_0, x_T) at time t. This is
  what the training loss teaches; it should fall as t falls (x_t carries more of x_0).
* ``sample``: the latent Algorithm 2 returns after N steps: one draw from the model's p(x_0 | image).
* ``ensemble``: the mean of K such draws (successive draws of each scene's generator, as ``--ensemble K`` does).

For independent draws x, x' of one distribution E||x - x'||^2 = 2 Var, so a calibrated model's single sample has
about twice the error of its posterior mean, and the mean of K samples (1 + 1/K) times. A large sample / mean ratio
is the model's uncertainty, not a broken sampler.

    python -m harness diagnose [--task depth] [--checkpoint DIR] [--count 32] [--steps 1,2,5,10] [--ensemble 6]
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from harness.summary import BOOTSTRAP_DRAWS, BOOTSTRAP_SEED

POSTERIOR_TIMES = (999, 900, 700, 500, 300, 100, 1)  # DDPM time t (diffusers index k = t - 1)
WORLD_SEED = 0  # the tiny world's scene seed, as `run` renders it by default (the split picks the scenes)


@dataclass(frozen=True)
class DiagnoseConfig:
    task: str = "depth"
    checkpoint: Optional[str] = None  # a trained DPBridge folder; None = the shipped dpbridge_tiny of the task
    split: str = "val"  # the tiny world's split (never tune on "test")
    count: int = 32
    times: tuple[int, ...] = POSTERIOR_TIMES
    steps: tuple[int, ...] = (1, 2, 5, 10)
    ensemble: int = 6  # draws averaged, at the largest of ``steps``
    eta: float = 0.0
    seed: int = 0


def scene_latents(model, task: str, split: str, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_T, x_0) [count,4,h,w]: image and map latents of the split's first scenes at the model's resolution."""
    from harness.pool import render_pool
    from methods.targets import rgb_to_tensor, target_image

    pool = render_pool(split, count, WORLD_SEED, model.cfg.processing_res, cache=False)
    target = target_image(task, pool["depth"], pool["normals"], pool["valid"])
    return model.encode(rgb_to_tensor(pool["rgb"])), model.encode(target)


def latent_mse(estimate: torch.Tensor, x_0: torch.Tensor) -> np.ndarray:
    """Per-scene mean squared error [B] of latents [B,4,h,w]."""
    return ((estimate.float() - x_0.float()) ** 2).mean(dim=(1, 2, 3)).double().numpy()


def scene_intervals(per_scene: np.ndarray, first: np.ndarray) -> dict:
    """Bootstrap 95% intervals over scenes [N] of the mean MSE and of its ratio to the first estimate's mean MSE
    (paired: both means from the same resampled scenes); NaN with fewer than 2 scenes."""
    n = len(per_scene)
    if n < 2:
        return dict.fromkeys(("ci_low", "ci_high", "ratio_ci_low", "ratio_ci_high"), float("nan"))
    idx = np.random.default_rng(BOOTSTRAP_SEED).integers(0, n, size=(BOOTSTRAP_DRAWS, n))
    means = per_scene[idx].mean(1)
    ratios = means / first[idx].mean(1)
    (lo, hi), (rlo, rhi) = np.percentile(means, [2.5, 97.5]), np.percentile(ratios, [2.5, 97.5])
    return {"ci_low": float(lo), "ci_high": float(hi), "ratio_ci_low": float(rlo), "ratio_ci_high": float(rhi)}


def posterior_mean_mse(model, x_T: torch.Tensor, x_0: torch.Tensor, t: int, gen: torch.Generator) -> np.ndarray:
    """Per-scene MSE [B] of the network's x0 estimate from x_t ~ q(x_t | x_0, x_T) at DDPM time t (1 <= t <= T-1)."""
    t_vec = torch.full((x_0.shape[0],), t, dtype=torch.int64)
    noise = torch.randn(x_0.shape, generator=gen)
    x_t = model.schedule.q_sample(x_0, x_T, t_vec, noise)
    x0_hat = model.schedule.x0_from_eps(x_t, x_T, model.eps(x_t, x_T, t_vec), t_vec)
    return latent_mse(x0_hat, x_0)


def sampled_latents(model, x_T: torch.Tensor, steps: int, eta: float, generators: list[torch.Generator],
                    members: int = 1) -> torch.Tensor:
    """Mean of ``members`` sampler outputs [B,4,h,w], each scene drawing from its own generator."""
    return sum(model.member_latents(x_T, steps, eta, generators, members)) / members


def scene_generators(seed: int, count: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed * 1_000_003 + i) for i in range(count)]


@torch.inference_mode()
def diagnose(cfg: DiagnoseConfig) -> list[dict]:
    """Rows {kind, t, steps, members, latent_mse, ratio_to_first_estimate, their bootstrap 95% intervals over the
    scenes (ci_low, ci_high, ratio_ci_low, ratio_ci_high), settings}; the ratio is to the posterior-mean MSE at the
    largest t (the estimate the sampler's first step makes from the image)."""
    from harness.registry import load_entries
    from methods.backbones import WEIGHTS_DIR
    from methods.dpbridge import load_checkpoint
    from methods.fingerprint import weights_fingerprint

    bad = [f"{flag} {value}" for flag, value in (("--count", cfg.count), ("--ensemble", cfg.ensemble)) if value < 1]
    bad += [f"{flag} (empty)" for flag, values in (("--steps", cfg.steps), ("--times", cfg.times)) if not values]
    if bad:
        raise ValueError(f"diagnose needs --count >= 1, --ensemble >= 1 and at least one step count and one time; "
                         f"got {', '.join(bad)}")
    folder = Path(cfg.checkpoint) if cfg.checkpoint else WEIGHTS_DIR / f"dpbridge_tiny_{cfg.task}"
    load_entries()  # every trainable registered, so another method's folder is named as such
    try:
        model = load_checkpoint(folder).eval()
    except ValueError as err:
        raise ValueError(f"{err}: diagnose measures DPBridge checkpoints (bridge posterior means); pass a "
                         f"dpbridge folder, e.g. {WEIGHTS_DIR / f'dpbridge_tiny_{cfg.task}'}") from err
    if model.cfg.task != cfg.task:
        raise ValueError(f"checkpoint {folder} was trained for {model.cfg.task}, not {cfg.task}")
    for steps in cfg.steps:
        model.check_steps(steps)
    x_T, x_0 = scene_latents(model, cfg.task, cfg.split, cfg.count)
    gen = torch.Generator().manual_seed(cfg.seed)
    rows = [{"kind": "posterior_mean", "t": t, "steps": 0, "members": 1,
             "latent_mse": posterior_mean_mse(model, x_T, x_0, t, gen)} for t in cfg.times]
    for steps in cfg.steps:
        out = sampled_latents(model, x_T, steps, cfg.eta, scene_generators(cfg.seed, cfg.count))
        rows.append({"kind": "sample", "t": 0, "steps": steps, "members": 1, "latent_mse": latent_mse(out, x_0)})
    if cfg.ensemble > 1:
        steps = max(cfg.steps)
        out = sampled_latents(model, x_T, steps, cfg.eta, scene_generators(cfg.seed, cfg.count), cfg.ensemble)
        rows.append({"kind": "ensemble", "t": 0, "steps": steps, "members": cfg.ensemble,
                     "latent_mse": latent_mse(out, x_0)})
    first = rows[max(range(len(cfg.times)), key=lambda i: cfg.times[i])]["latent_mse"]  # per scene [count]
    settings = {"checkpoint": str(folder), "weights_fingerprint": weights_fingerprint(folder), "task": cfg.task,
                "split": cfg.split, "world_seed": WORLD_SEED, "count": cfg.count, "eta": cfg.eta, "seed": cfg.seed,
                "processing_res": model.cfg.processing_res, "dtype": "float32", "device": "cpu"}
    return [{**row, "latent_mse": float(row["latent_mse"].mean()),
             "ratio_to_first_estimate": float(row["latent_mse"].mean() / first.mean()),
             **scene_intervals(row["latent_mse"], first), **settings} for row in rows]
