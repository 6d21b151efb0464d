"""Trivial reference predictors: the rows any real method must beat, scored with the same alignment.

constant: a flat depth map / camera-facing normals. ramp: depth growing linearly from the bottom row to the top
(the floor-to-horizon prior) / normals turning from up-facing (bottom) to camera-facing (top). train_mean: the
tiny world's mean training map (``python -m harness train --method train_mean --task depth|normals``).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from methods.fingerprint import weights_fingerprint

from methods.backbones import WEIGHTS_DIR, recorded_path
from methods.base import Method, OutputContract
from methods.registry import register


class _Trivial(Method):
    def __init__(self, task, options):
        super().__init__(task, options)

    @property
    def contract(self) -> OutputContract:
        kind = "normals" if self.task == "normals" else "depth"
        return OutputContract(kind=kind, affine_invariant=kind == "depth", stochastic=False)

    def describe(self) -> dict:
        return {"method": self.name, "variant": "default", "checkpoint": "-", "steps": 0, "eta": 0.0}


@register("constant")
class Constant(_Trivial):
    """Reference: a constant depth map / camera-facing normals (0, 0, 1)."""

    def predict(self, rgb, generators):
        b, _, h, w = rgb.shape
        if self.task == "depth":
            return torch.ones(b, 1, h, w)
        return torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(b, 3, h, w).clone()


def vertical_ramp(b: int, h: int, w: int) -> torch.Tensor:
    """[B,1,H,W]: 1 on the top row down to 0 on the bottom row (pixel centres)."""
    y = 1.0 - (torch.arange(h, dtype=torch.float32) + 0.5) / h
    return y.view(1, 1, h, 1).expand(b, 1, h, w).clone()


@register("ramp")
class Ramp(_Trivial):
    """Reference: depth ramp from the bottom row (near) to the top (far) / normals from up-facing to camera-facing."""

    def predict(self, rgb, generators):
        b, _, h, w = rgb.shape
        r = vertical_ramp(b, h, w)
        if self.task == "depth":
            return r
        up, facing = torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1), torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1)
        return F.normalize(r * facing + (1 - r) * up, dim=1)


def train_mean_path(task: str) -> Path:
    return WEIGHTS_DIR / f"train_mean_{task}.safetensors"


def read_mean(path: Path, task: str) -> torch.Tensor:
    """The ``mean`` tensor [C,h,w] of a train_mean .safetensors file, float32; a damaged file is named."""
    try:
        return load_file(str(path))["mean"].float()
    except Exception as err:  # safetensors raises its own error types (header, dtype) besides KeyError and OSError
        raise ValueError(f"{path}: not a readable train_mean .safetensors file ({type(err).__name__}: {err}); "
                         f"regenerate it with `python -m harness train --method train_mean --task {task}`") from None


@register("train_mean")
class TrainMean(_Trivial):
    """Reference: the tiny world's mean training depth (normalised) or normal map."""

    loads_checkpoint = True

    def __init__(self, task, options):
        super().__init__(task, options)
        path = Path(options.checkpoint) if options.checkpoint else train_mean_path(task)
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: regenerate it with "
                                    f"`python -m harness train --method train_mean --task {task}`")
        self.path = path
        self.mean = read_mean(path, task)  # [C,h,w]
        self.weights_fingerprint = weights_fingerprint(path)

    def predict(self, rgb, generators):
        b, _, h, w = rgb.shape
        m = F.interpolate(self.mean[None], size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        m = m.expand(b, -1, -1, -1).clone()
        return F.normalize(m, dim=1) if self.task == "normals" else m

    def describe(self) -> dict:
        return {**super().describe(), "checkpoint": recorded_path(self.path),
                "weights_fingerprint": self.weights_fingerprint}
