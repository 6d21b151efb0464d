"""Training pools: tiny-world samples rendered once (and their VAE latents encoded once), cached on disk.

Rendering is fast enough to do on the fly, but the frozen VAE makes every latent a pure function of its image,
so encoding each image once (both flips) and sampling batches from the cache is what makes CPU training cheap.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from harness.runio import atomic_torch_save

CACHE_DIR = Path(os.environ.get("HARNESS_CACHE", Path(__file__).resolve().parents[1] / "cache"))


def render_pool(split: str, count: int, seed: int, size: int, cache: bool = True) -> dict[str, torch.Tensor]:
    """rgb uint8 [N,H,W,3], depth float32 [N,H,W] m, normals float32 [N,H,W,3], valid bool [N,H,W]."""
    from datasets.synthetic import render

    path = CACHE_DIR / f"pool_{split}_{count}_{seed}_{size}_{renderer_fingerprint()}.pt"
    if cache and path.is_file():
        return torch.load(path)
    samples = [render(split, i, seed=seed, height=size, width=size) for i in range(count)]
    pool = {
        "rgb": torch.from_numpy(np.stack([s.rgb for s in samples])),
        "depth": torch.from_numpy(np.stack([s.depth for s in samples]).astype(np.float32)),
        "normals": torch.from_numpy(np.stack([s.normals for s in samples]).astype(np.float32)),
        "valid": torch.from_numpy(np.stack([s.valid for s in samples])),
        "outdoor": torch.tensor([s.meta.get("scene_type") == "outdoor" for s in samples]),
    }
    if cache:
        atomic_torch_save(pool, path)
    return pool


def renderer_fingerprint() -> str:
    """Hash of the tiny world's source, so a changed renderer never reuses a stale pool."""
    root = Path(__file__).resolve().parents[1] / "datasets"
    h = hashlib.sha256()
    for path in sorted(root.glob("synthetic*.py")):
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def module_fingerprint(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.inference_mode()
def encode_images(vae: torch.nn.Module, images: torch.Tensor, scaling_factor: float, batch: int = 64) -> torch.Tensor:
    """[N,3,H,W] in [-1,1] -> [N,4,h,w] latents (posterior mode x scaling factor)."""
    out = [vae.encode(images[i:i + batch]).latent_dist.mode() * scaling_factor for i in range(0, len(images), batch)]
    return torch.cat(out)


def latent_pool(pool: dict, task: str, vae: torch.nn.Module, scaling_factor: float, key: str) -> dict:
    """Latents of RGB and of the task's target map, both orientations, cached by (pool key, VAE fingerprint).

    Returns x_T [2N,4,h,w] (RGB latents), x_0 [2N,4,h,w] (target latents), target [2N,3,H,W] (the target image
    the image-consistency loss compares to) and valid [2N,1,H,W]; rows N..2N-1 are the horizontal flips.
    """
    from methods.targets import flip_horizontal, rgb_to_tensor, target_image

    meta = {"key": key, "task": task, "vae": module_fingerprint(vae), "scaling": scaling_factor}
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
    path = CACHE_DIR / f"latents_{task}_{digest}.pt"
    if path.is_file():
        return torch.load(path)
    rgb = rgb_to_tensor(pool["rgb"])
    target = target_image(task, pool["depth"], pool["normals"], pool["valid"])
    valid = pool["valid"].unsqueeze(1)
    rgb = torch.cat([rgb, flip_horizontal(rgb)])
    target = torch.cat([target, flip_horizontal(target, task)])
    valid = torch.cat([valid, valid.flip(-1)])
    out = {"x_T": encode_images(vae, rgb, scaling_factor), "x_0": encode_images(vae, target, scaling_factor),
           "target": target.to(torch.float16), "valid": valid, "meta": meta}
    atomic_torch_save(out, path)
    return out
