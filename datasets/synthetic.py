"""The tiny world: procedurally rendered indoor rooms and outdoor streets with exact depth and normals.

``render(split, index, seed, height, width)`` ray-casts one scene (numpy, vectorised over pixels and
primitives): planar depth in metres, unit normals in the canonical camera frame (x right, y up, z toward the
viewer, facing the camera), RGB from procedural textures with Lambertian shading, one directional light,
ambient and cast shadows. Even indices are indoor (depths ~1-11 m, NYUv2-like), odd ones outdoor (ground,
buildings, cars, trees; valid up to 80 m, KITTI-like; sky and anything farther are invalid).
The scene and camera depend only on (split, index, seed); intrinsics scale with the resolution.
"""
from __future__ import annotations

import re
from typing import Optional

import numpy as np

from datasets.base import Dataset, DatasetSpec, Sample
from datasets.registry import register
from datasets.synthetic_scene import BLEND, CHECKER, ROAD, STRIPES, Scene, intersect, sample_scene, surface

SPLIT_CODE = {"train": 1, "val": 2, "test": 3}
DEFAULT_COUNT = {"train": 2000, "val": 100, "test": 200}
MAX_DEPTH = 80.0
MIN_DEPTH = 1e-3


def scene_kind(index: int) -> str:
    return "indoor" if index % 2 == 0 else "outdoor"


def make_scene(split: str, index: int, seed: int = 0) -> Scene:
    if split not in SPLIT_CODE:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_CODE)}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), SPLIT_CODE[split], int(index)]))
    return sample_scene(rng, scene_kind(index))


def intrinsics(scene: Scene, height: int, width: int) -> np.ndarray:
    """Pinhole K for this resolution: focal from the vertical fov, principal point at the image centre."""
    f = 0.5 * height / np.tan(np.radians(scene.fov_deg) / 2)
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])


def camera_rays(scene: Scene, height: int, width: int) -> np.ndarray:
    """Camera-frame rays [H*W,3] with z = -1 (so the ray parameter is the planar depth)."""
    K = intrinsics(scene, height, width)
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    x, y = (u - K[0, 2]) / K[0, 0], -(v - K[1, 2]) / K[1, 1]
    return np.stack([x.ravel(), y.ravel(), -np.ones(x.size)], 1)


_CORNER = np.array([dx * 127.1 + dy * 311.7 + dz * 74.7 for dx in (0, 1) for dy in (0, 1) for dz in (0, 1)],
                   np.float32)


def value_noise(p: np.ndarray, seed: float) -> np.ndarray:
    """Smooth 3-D value noise in [0,1] at points p [N,3] (sin-hash lattice, smoothstep trilinear; float32)."""
    i = np.floor(p)
    f = (p - i).astype(np.float32)
    u = f * f * (3 - 2 * f)
    h = (np.fmod(i @ np.array([127.1, 311.7, 74.7]) + seed * 13.13, 6283.185307179586)).astype(np.float32)
    v = np.sin(h[:, None] + _CORNER) * np.float32(437.5453)
    v = (v - np.floor(v)).reshape(-1, 2, 2, 2)  # corners (dx, dy, dz)
    v = v[..., 0] + u[:, 2, None, None] * (v[..., 1] - v[..., 0])
    v = v[..., 0] + u[:, 1, None] * (v[..., 1] - v[..., 0])
    return (v[:, 0] + u[:, 0] * (v[:, 1] - v[:, 0])).astype(np.float64)


def albedo(s: Scene, idx: np.ndarray, tex: np.ndarray) -> np.ndarray:
    """Procedural albedo [N,3] of hits on primitives idx with texture coordinates tex."""
    pat, sc, amp = s.mat_pattern[idx], s.mat_scale[idx][:, None], s.mat_amp[idx][:, None]
    a, b = s.mat_a[idx], s.mat_b[idx]
    q = tex / sc + 0.37
    noise = (0.65 * value_noise(q * 2.0, s.noise_seed) + 0.35 * value_noise(q * 7.3, s.noise_seed + 1))[:, None]
    checker = (np.floor(q).sum(1) % 2)[:, None]
    stripe = (np.sin(2 * np.pi * np.take_along_axis(q, s.mat_axis[idx][:, None], 1)) > 0).astype(float)
    mix = np.where((pat == CHECKER)[:, None], checker, np.where((pat == STRIPES)[:, None], stripe, 0.0))
    mix = np.where((pat == BLEND)[:, None], np.clip(noise * 1.6 - 0.3, 0, 1), mix)
    col = a * (1 - mix) + b * mix
    road = pat == ROAD
    if road.any():
        x, z = tex[road, 0], tex[road, 2]
        on = (np.abs(x) < s.road_half)[:, None]
        line = ((np.abs(x) < 0.12) & ((z % 6.0) < 3.0))[:, None]
        col[road] = np.where(line, 0.85, np.where(on, a[road], b[road]))
    return col * (1 + amp * (noise - 0.5) * 2 * np.where((pat == BLEND)[:, None], 0.3, 1.0))


def sky(s: Scene, d: np.ndarray) -> np.ndarray:
    """Sky colour [N,3] for world directions d: zenith/horizon gradient with soft cloud noise."""
    dn = d / np.linalg.norm(d, axis=1, keepdims=True)
    e = np.sqrt(np.clip(dn[:, 1:2], 0, 1))
    col = s.sky_horizon * (1 - e) + s.sky_zenith * e
    cloud = value_noise(dn * 6.0 / np.maximum(dn[:, 1:2], 0.15), s.noise_seed + 2)[:, None]
    return col * (1 - 0.5 * np.clip(cloud * 2 - 0.9, 0, 1)) + 0.5 * np.clip(cloud * 2 - 0.9, 0, 1)


def render(split: str, index: int, seed: int = 0, height: int = 64, width: int = 64, *,
           shadows: bool = True) -> Sample:
    """Render tiny-world sample (split, index, seed) at height x width; see the module docstring."""
    s = make_scene(split, index, seed)
    dc = camera_rays(s, height, width)
    d = dc @ s.cam_R.T
    o = s.cam_pos[None]
    tile = ((np.arange(height) // 4)[:, None] * ((width + 3) // 4) + np.arange(width) // 4).ravel()
    t, idx = intersect(s, o, d, tile)
    hit = np.isfinite(t)
    rgb = np.zeros((len(t), 3))
    n_world = np.zeros((len(t), 3))
    if hit.any():
        th, ih, dh = t[hit], idx[hit], d[hit]
        p = o + th[:, None] * dh
        n, tex = surface(s, p, ih)
        n = np.where((np.einsum("nj,nj->n", n, dh) > 0)[:, None], -n, n)
        n_world[hit] = n
        lam = np.clip(n @ s.light_dir, 0, None)
        if shadows:
            lit = lam > 0
            if lit.any():
                eps = 1e-3 * (1 + th[lit, None] * 0.01)
                occ, _ = intersect(s, p[lit] + n[lit] * eps, np.broadcast_to(s.light_dir, (lit.sum(), 3)),
                                   tile[hit][lit], planes=False, any_hit=True)
                lam[np.flatnonzero(lit)[np.isfinite(occ)]] = 0.0
        col = albedo(s, ih, tex) * (s.ambient_col + s.light_col * lam[:, None])
        if np.isfinite(s.fog_dist):
            f = np.exp(-th * np.linalg.norm(dh, axis=1) / s.fog_dist)[:, None]
            col = col * f + s.sky_horizon * (1 - f)
        rgb[hit] = col
    if (~hit).any():
        rgb[~hit] = sky(s, d[~hit])
    valid = hit & (t > MIN_DEPTH) & (t < MAX_DEPTH)
    depth = np.where(valid, t, 0.0).astype(np.float32)
    n_cam = n_world @ s.cam_R
    n_cam[~valid] = (0.0, 0.0, 1.0)
    rgb8 = np.round(np.clip(rgb, 0, 1) ** (1 / 2.2) * 255).astype(np.uint8)
    H, W = height, width
    return Sample(id=f"{split}/{index:05d}", rgb=rgb8.reshape(H, W, 3), valid=valid.reshape(H, W),
                  depth=depth.reshape(H, W), normals=n_cam.astype(np.float32).reshape(H, W, 3),
                  meta={"scene_type": s.kind, "split": split, "index": index})


class _TinyWorld(Dataset):
    task = "depth"
    cli_settings = ("split", "seed", "height", "width")  # `run --dataset-set split=val` (tune there, never on test)

    def __init__(self, split: str = "test", count: Optional[int] = None, seed: int = 0,
                 height: int = 64, width: int = 64):
        if split not in SPLIT_CODE:
            raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_CODE)}")
        self.split, self.seed, self.height, self.width = split, int(seed), int(height), int(width)
        self.count = DEFAULT_COUNT[split] if count is None else int(count)
        if self.count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        self.spec = DatasetSpec(task=self.task, min_depth=MIN_DEPTH, max_depth=MAX_DEPTH, clip_min=MIN_DEPTH,
                                clip_max=MAX_DEPTH, processing_res=None,
                                alignment="least_squares" if self.task == "depth" else "none",
                                normals_aggregation="pooled")

    def ids(self) -> list[str]:
        return [f"{self.split}/{i:05d}" for i in range(self.count)]

    def load(self, sample_id: str) -> Sample:
        m = re.fullmatch(r"([a-z]+)/(\d{5,})", sample_id)
        if m is None or m.group(1) != self.split or not 0 <= int(m.group(2)) < self.count:
            raise ValueError(f"unknown sample id {sample_id!r} for {self.name} split {self.split!r} "
                             f"(ids {self.split}/00000..{self.split}/{max(self.count - 1, 0):05d})")
        return render(self.split, int(m.group(2)), self.seed, self.height, self.width)

    def describe(self) -> dict:
        return {**super().describe(), "split": self.split, "seed": self.seed,
                "resolution": [self.height, self.width]}


@register("synthetic")
class SyntheticDepth(_TinyWorld):
    """Tiny-world depth benchmark (planar depth, metres, least-squares alignment)."""

    task = "depth"


@register("synthetic_normals")
class SyntheticNormals(_TinyWorld):
    """Tiny-world surface-normal benchmark (camera-frame unit normals)."""

    task = "normals"
