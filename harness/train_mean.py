"""The train_mean reference predictor: the tiny world's mean training map (depth normalised per image as the
models' targets are, or mean normal vectors renormalised). `python -m harness train --method train_mean`, with
``--set pool_count=N``, ``--set seed=S`` and ``--set export=FILE`` (default: the shipped file, which is replaced only
by a fit with the same settings)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from harness.manifest import refuse_replacing, settings_change
from harness.pool import render_pool
from methods.backbones import TINY_IMAGE_SIZE
from methods.targets import target_image
from methods.trivial import train_mean_path

SETTINGS = {"pool_count": int, "seed": int, "export": str}  # what `train --method train_mean --set` takes


def train_mean_settings(pairs: Optional[list[str]]) -> dict:
    """``["pool_count=100", ...]`` -> typed settings; an unknown key names the ones train_mean takes."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or key not in SETTINGS:
            raise ValueError(f"--set {pair}: train_mean takes {', '.join(f'{k}=...' for k in SETTINGS)}")
        out[key] = SETTINGS[key](value)
    return out


def _check_export(path: Path, summary: dict) -> None:
    if not path.is_file():
        return
    with safe_open(str(path), "pt") as f:
        recorded = json.loads((f.metadata() or {}).get("summary", "{}"))
    settings = {k: v for k, v in summary.items() if k != "command"}
    change = settings_change({k: recorded.get(k) for k in settings}, settings)
    refuse_replacing(path, "a train_mean fitted", change, "--set export=FILE")


def fit_train_mean(task: str, pool_count: int = 4000, seed: int = 0, command: str = "",
                   export: Optional[str] = None) -> dict:
    if pool_count < 1:
        raise ValueError(f"--set pool_count={pool_count}: must be >= 1")
    path = Path(export) if export else train_mean_path(task)
    summary = {"command": command, "task": task, "pool_count": pool_count, "seed": seed,
               "resolution": TINY_IMAGE_SIZE}
    _check_export(path, summary)  # before rendering the pool
    pool = render_pool("train", pool_count, seed, TINY_IMAGE_SIZE)
    images = target_image(task, pool["depth"], pool["normals"], pool["valid"])  # [N,3,H,W]
    valid = pool["valid"].unsqueeze(1).float()
    if task == "depth":
        mean = (images[:, :1] * valid).sum(0) / valid.sum(0).clamp_min(1)  # [1,H,W], valid pixels only
    else:
        mean = torch.nn.functional.normalize((images * valid).sum(0), dim=0)  # [3,H,W]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")  # renamed over the export when whole: a kill never leaves half a file
    save_file({"mean": mean.to(torch.float16).contiguous()}, str(tmp), metadata={"summary": json.dumps(summary)})
    os.replace(tmp, path)
    return {**summary, "export": str(path)}
