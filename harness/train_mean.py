"""The train_mean reference predictor: the tiny world's mean training map (depth normalised per image as the
models' targets are, or mean normal vectors renormalised). `python -m harness train --method train_mean`."""
from __future__ import annotations

import json

import torch
from safetensors.torch import save_file

from harness.pool import render_pool
from methods.backbones import TINY_IMAGE_SIZE
from methods.targets import target_image
from methods.trivial import train_mean_path


def fit_train_mean(task: str, count: int = 4000, seed: int = 0, command: str = "") -> dict:
    pool = render_pool("train", count, seed, TINY_IMAGE_SIZE)
    images = target_image(task, pool["depth"], pool["normals"], pool["valid"])  # [N,3,H,W]
    valid = pool["valid"].unsqueeze(1).float()
    if task == "depth":
        mean = (images[:, :1] * valid).sum(0) / valid.sum(0).clamp_min(1)  # [1,H,W], valid pixels only
    else:
        mean = torch.nn.functional.normalize((images * valid).sum(0), dim=0)  # [3,H,W]
    path = train_mean_path(task)
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = {"command": command, "task": task, "pool_count": count, "seed": seed, "resolution": TINY_IMAGE_SIZE}
    save_file({"mean": mean.to(torch.float16).contiguous()}, str(path), metadata={"summary": json.dumps(summary)})
    return summary
