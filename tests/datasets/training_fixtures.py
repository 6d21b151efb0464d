"""Fixture writers for the training sets: tiny-world content in Virtual KITTI 2's and HyperSim's native files.

Independent of the adapters: distances come from the tiny world's own camera rays (|ray| with z = -1 times the
planar depth), centimetres from metres by rounding, the sky as 65535.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np

from datasets.synthetic import camera_rays, intrinsics, make_scene, render

VKITTI_SHAPE = (375, 1242)  # Virtual KITTI 2 frames (KB crop -> 352 x 1216)


def vkitti_paths(i: int) -> tuple[str, str]:
    scene, variation, cam = ["Scene01", "Scene02"][i % 2], "clone", f"Camera_{i % 2}"
    base = f"{scene}/{variation}/frames"
    return f"{base}/rgb/{cam}/rgb_{i:05d}.jpg", f"{base}/depth/{cam}/depth_{i:05d}.png"


def write_vkitti(folder: Path, count: int = 2, depth_folder: Path = None) -> dict:
    """Outdoor tiny-world frames upsampled (nearest, x15) to 375 x 1242, a 90 m patch added; returns
    {rgb path: (depth m, sky mask)}."""
    truth = {}
    for i in range(count):
        s = render("test", 2 * i + 1, 0, 25, 83)  # odd index = outdoor (sky, far points)
        big = lambda a: np.repeat(np.repeat(a, 15, 0), 15, 1)[: VKITTI_SHAPE[0], : VKITTI_SHAPE[1]]  # noqa: E731
        rgb, depth, hit = big(s.rgb), big(s.depth), big(s.valid)
        cm = np.where(hit, np.round(depth * 100), 65535).astype(np.uint16)
        cm[300:310, 600:700] = 9000  # 90 m: beyond Virtual KITTI's 80 m cap, not sky
        rgb_path, depth_path = vkitti_paths(i)
        for root, rel, data in ((folder, rgb_path, cv2.imencode(".jpg", rgb[:, :, ::-1].copy())[1]),
                                (depth_folder or folder, depth_path, cv2.imencode(".png", cm)[1])):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data.tobytes())
        truth[rgb_path] = (cm.astype(np.float32) / 100, cm == 65535)
    return truth


def hypersim_paths(scene: str, cam: str, frame: int) -> dict:
    base = f"{scene}/images/scene_{cam}"
    return {"color": f"{base}_final_hdf5/frame.{frame:04d}.color.hdf5",
            "depth_meters": f"{base}_geometry_hdf5/frame.{frame:04d}.depth_meters.hdf5",
            "normal_cam": f"{base}_geometry_hdf5/frame.{frame:04d}.normal_cam.hdf5",
            "render_entity_id": f"{base}_geometry_hdf5/frame.{frame:04d}.render_entity_id.hdf5"}


def _h5(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("dataset", data=array)


def write_hypersim(folder: Path, count: int = 2, height: int = 24, width: int = 32, dtype=np.float32,
                   away_fraction: float = 0.5, z_forward: bool = False, scale: int = 1) -> dict:
    """Indoor tiny-world frames as HyperSim HDF5; returns {color path: (tiny Sample, focal px)}.

    A random ``away_fraction`` of the normals is stored facing away (HyperSim's files do this); ``z_forward``
    writes them in a wrong convention (z negated) to check that it is caught. Pixels without a hit get NaN distance.
    ``scale`` > 1 enlarges every array (for speed measurements only: the geometry is then not consistent).
    """
    truth = {}
    rng = np.random.default_rng(0)
    for i in range(count):
        s = render("test", 2 * i, 0, height, width)
        rays = camera_rays(make_scene("test", 2 * i, 0), height, width).reshape(height, width, 3)
        distance = np.where(s.valid, s.depth * np.linalg.norm(rays, axis=-1), np.nan)
        normals = np.where(rng.random((height, width, 1)) < away_fraction, -s.normals, s.normals)
        if z_forward:
            normals = normals * np.array([1, 1, -1.0])
        hdr = (s.rgb.astype(np.float64) / 255) ** 2.2 * 3.7  # linear, arbitrary exposure
        entity = np.where(s.valid, 1 + np.arange(height * width).reshape(height, width) % 7, -1).astype(np.int32)
        hdr, distance, normals, entity = (np.repeat(np.repeat(a, scale, 0), scale, 1)
                                          for a in (hdr, distance, normals, entity))
        paths = hypersim_paths(f"ai_001_{i + 1:03d}", "cam_00", i)
        _h5(folder / paths["color"], hdr.astype(dtype))
        _h5(folder / paths["depth_meters"], distance.astype(dtype))
        _h5(folder / paths["normal_cam"], normals.astype(dtype))
        _h5(folder / paths["render_entity_id"], entity)  # int32, -1 where a ray hits nothing
        truth[paths["color"]] = (s, float(intrinsics(make_scene("test", 2 * i, 0), height, width)[0, 0]))
    return truth
