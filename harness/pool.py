"""Training pools: tiny-world samples rendered once (and their VAE latents encoded once), cached on disk.

Rendering is fast enough to do on the fly, but the frozen VAE makes every latent a pure function of its image,
so encoding each image once (both flips) and sampling batches from the cache is what makes CPU training cheap.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from harness.prefetch import usable_cpus
from harness.runio import atomic_torch_save

CACHE_DIR = Path(os.environ.get("HARNESS_CACHE", Path(__file__).resolve().parents[1] / "cache"))
RENDER_CHUNK = 200  # scenes per task handed to a render worker


def render_pool(split: str, count: int, seed: int, size: int, cache: bool = True,
                workers: int | None = None) -> dict[str, torch.Tensor]:
    """Scenes 0..count-1 as tensors: rgb uint8 [N,H,W,3], depth float32 [N,H,W] m, normals float32 [N,H,W,3],
    valid bool [N,H,W], outdoor bool [N]. Rendered by ``workers`` processes (default: one per usable CPU); every
    scene is a pure function of (split, index, seed, size), so the pool is the same for any number of workers."""
    path = CACHE_DIR / f"pool_{split}_{count}_{seed}_{size}_{renderer_fingerprint()}.pt"
    if cache and path.is_file():
        return torch.load(path)
    arrays = render_arrays(split, count, seed, size, usable_cpus() if workers is None else workers)
    pool = {k: torch.from_numpy(v) for k, v in arrays.items()}
    if cache:
        atomic_torch_save(pool, path)
    return pool


def render_arrays(split: str, count: int, seed: int, size: int, workers: int = 1,
                  chunk: int = RENDER_CHUNK) -> dict[str, np.ndarray]:
    """Scenes 0..count-1 of ``split`` stacked as ``datasets.render_chunks.render_stack`` stacks them, in chunks of
    ``chunk`` scenes rendered by ``workers`` processes (1: in this process)."""
    from datasets.render_chunks import render_stack

    if count < 1:
        raise ValueError(f"a pool of {split} scenes needs at least one scene; got count={count}")
    ranges = [(start, min(start + chunk, count)) for start in range(0, count, chunk)]
    if workers <= 1 or len(ranges) <= 1:
        parts = [render_stack(split, start, stop, seed, size) for start, stop in ranges]
    else:
        parts = _render_in_processes(split, seed, size, ranges, min(workers, len(ranges)))
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def _render_in_processes(split: str, seed: int, size: int, ranges: list[tuple[int, int]],
                         workers: int) -> list[dict[str, np.ndarray]]:
    """The chunks ``ranges`` (in order), worker w rendering chunks w, w + workers, ... (``datasets.render_chunks``)."""
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory(prefix="render_") as tmp:
        procs = [subprocess.Popen([sys.executable, "-m", "datasets.render_chunks", split, str(seed), str(size), tmp,
                                   *(f"{a}:{b}" for a, b in ranges[w::workers])],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for w in range(workers)]
        try:
            for proc in procs:
                _, err = proc.communicate()
                if proc.returncode != 0:
                    raise RuntimeError(f"a render worker failed (exit {proc.returncode}) on {split} scenes "
                                       f"(seed {seed}, {size} px):\n{err[-3000:]}")
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
        return [dict(np.load(Path(tmp) / f"{start}.npz")) for start, _ in ranges]


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
