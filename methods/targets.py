"""Dense maps <-> the 3-channel images the VAE encodes (math.md section 5). Pure tensor math.

Depth: per-image affine normalisation 2 (d - d_2%) / (d_98% - d_2%) - 1 over valid pixels, clipped to [-1, 1],
repeated to 3 channels; decoded as the channel mean. Invalid pixels (sky, beyond range) get +1 (far).
Normals: the 3 components in [-1, 1] (canonical frame); decoded by renormalising to unit length.
"""
from __future__ import annotations

import torch

DEPTH_LOW_PCT, DEPTH_HIGH_PCT = 0.02, 0.98


def normalise_depth(depth: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """depth, valid: [B,H,W] (metres, bool) -> [B,3,H,W] in [-1,1]."""
    out = torch.ones_like(depth)
    for i in range(depth.shape[0]):
        vals = depth[i][valid[i]]
        if vals.numel() < 2:
            raise ValueError(f"depth map {i} of the batch has fewer than 2 valid pixels: cannot normalise it")
        lo, hi = torch.quantile(vals.float(), torch.tensor([DEPTH_LOW_PCT, DEPTH_HIGH_PCT])).tolist()
        scaled = 2 * (depth[i] - lo) / max(hi - lo, 1e-6) - 1
        out[i] = torch.where(valid[i], scaled.clamp(-1, 1), torch.ones_like(scaled))
    return out.unsqueeze(1).repeat(1, 3, 1, 1)


def depth_from_image(image: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] decoded image -> [B,1,H,W] affine-invariant depth in [-1,1] (channel mean)."""
    return image.mean(dim=1, keepdim=True).clamp(-1, 1)


def normals_to_image(normals: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """normals [B,H,W,3] unit, valid [B,H,W] -> [B,3,H,W]; invalid pixels face the camera (0,0,1)."""
    img = normals.permute(0, 3, 1, 2).clone()
    facing = torch.tensor([0.0, 0.0, 1.0], dtype=img.dtype).view(1, 3, 1, 1)
    return torch.where(valid.unsqueeze(1), img, facing.expand_as(img))


def normals_from_image(image: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] decoded image -> [B,3,H,W] unit normals."""
    return torch.nn.functional.normalize(image, dim=1, eps=1e-6)


def rgb_to_tensor(rgb_uint8: torch.Tensor) -> torch.Tensor:
    """[B,H,W,3] uint8 -> [B,3,H,W] float32 in [-1,1]."""
    return rgb_uint8.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def target_image(task: str, depth: torch.Tensor | None, normals: torch.Tensor | None,
                 valid: torch.Tensor) -> torch.Tensor:
    """The VAE-ready [B,3,H,W] image of a batch's depth or normals."""
    if task == "depth":
        return normalise_depth(depth, valid)
    if task == "normals":
        return normals_to_image(normals, valid)
    raise ValueError(f"unknown task {task!r}: expected 'depth' or 'normals'")


def flip_horizontal(image: torch.Tensor, task: str | None = None) -> torch.Tensor:
    """Flip [B,C,H,W] left-right; for a normals image also negate x (the normal's x flips with the image)."""
    out = image.flip(-1)
    if task == "normals":
        out = out.clone()
        out[:, 0] = -out[:, 0]
    return out
