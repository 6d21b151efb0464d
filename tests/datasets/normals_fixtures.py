"""Fixture writers: tiny-world content saved in DSINE's evaluation layout (PNG / EXR normals, x-left).

Written independently of the adapters under test: the encodings follow ../shared/protocol.md directly
(PNG ``(n + 1) / 2 * 255`` rounded, stored by OpenCV in BGR order; EXR float R, G, B; x flipped from the tiny
world's canonical x-right frame unless ``frame="canonical"`` asks for the wrong, unflipped file).
"""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import cv2
import numpy as np

from datasets.base import Sample
from datasets.synthetic import intrinsics, make_scene, render
from exr_writer import write_exr

# adapter name -> (dsine folder, sample path of index i, normals extension)
LAYOUTS = {
    "nyuv2_normals": ("nyuv2", lambda i: f"test/{i:06d}_img.png", ".png"),
    "scannet_normals": ("scannet", lambda i: f"scene{i % 2:04d}_00/{10 * i:06d}_img.png", ".png"),
    "ibims_normals": ("ibims", lambda i: f"ibims/room_{i + 1:02d}_img.png", ".exr"),
    "sintel_normals": ("sintel", lambda i: f"{['alley_1', 'cave_2'][i % 2]}/frame_{i + 1:04d}_img.png", ".exr"),
}


def to_file_frame(normals: np.ndarray, frame: str) -> np.ndarray:
    """Canonical (x right) -> DSINE's x-left file frame; ``frame="canonical"`` writes them unflipped (wrong)."""
    return normals * np.array([-1.0, 1.0, 1.0], np.float32) if frame == "dsine" else normals.copy()


def normal_png(normals: np.ndarray, valid: np.ndarray, frame: str = "dsine") -> bytes:
    v = np.clip(np.round((to_file_frame(normals, frame) + 1) / 2 * 255), 0, 255).astype(np.uint8)
    v[~valid] = 0
    ok, buf = cv2.imencode(".png", v[:, :, ::-1].copy())
    assert ok
    return buf.tobytes()


def normal_exr(normals: np.ndarray, valid: np.ndarray, frame: str = "dsine", compression: str = "zip") -> bytes:
    n = np.where(valid[..., None], to_file_frame(normals, frame), 0).astype(np.float32)
    return write_exr(n, compression)


def upsampled(s: Sample, scale: int) -> Sample:
    """Nearest-neighbour enlargement of a tiny-world sample (native-size fixtures at little rendering cost)."""
    big = lambda a: np.repeat(np.repeat(a, scale, 0), scale, 1)  # noqa: E731
    return Sample(s.id, big(s.rgb), big(s.valid), big(s.depth), big(s.normals), dict(s.meta))


def write_dsine(folder: Path, adapter: str, count: int = 3, height: int = 24, width: int = 32,
                frame: str = "dsine", compression: str = "zip", scale: int = 1) -> dict:
    """Write ``count`` tiny-world samples under ``folder`` (= dsine_eval/<name>); returns {id: tiny-world Sample}.

    ``scale`` > 1 enlarges each rendered sample (intrinsics stay those of height x width)."""
    _, path_of, ext = LAYOUTS[adapter]
    truth = {}
    for i in range(count):
        s = upsampled(render("test", i, 0, height, width), scale)
        sid = path_of(i)
        stem = folder / sid[: -len("_img.png")]
        stem.parent.mkdir(parents=True, exist_ok=True)
        ok, buf = cv2.imencode(".png", s.rgb[:, :, ::-1].copy())
        assert ok
        (folder / sid).write_bytes(buf.tobytes())
        data = (normal_png(s.normals, s.valid, frame) if ext == ".png"
                else normal_exr(s.normals, s.valid, frame, compression))
        Path(f"{stem}_normal{ext}").write_bytes(data)
        bio = io.BytesIO()
        np.save(bio, intrinsics(make_scene("test", i, 0), height, width))
        Path(f"{stem}_intrins.npy").write_bytes(bio.getvalue())
        truth[sid] = s
    return truth


def make_tar(folder: Path, tar_path: Path, arcname: str = "") -> Path:
    """An uncompressed tar of ``folder`` (members below ``arcname`` when given)."""
    with tarfile.open(tar_path, "w") as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                rel = path.relative_to(folder).as_posix()
                tar.add(path, arcname=f"{arcname}/{rel}" if arcname else rel)
    return tar_path
