"""Fixture writers: tiny-world content saved in each depth benchmark's native layout.

Written independently of the adapters under test: encodings follow ../shared/protocol.md directly (OpenCV
writes BGR, so RGB is flipped before encoding). Each writer returns ``{rgb relpath: (rgb uint8, depth float32
metres as stored, extra)}`` so tests can compare decoded samples with what was written.
"""
from __future__ import annotations

import tarfile
from pathlib import Path

import cv2
import numpy as np

from datasets.synthetic import render


def tiny(index: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Tiny-world (rgb uint8 [H,W,3], depth float32 [H,W] metres, 0 = none) rendered small, resized (nearest)."""
    s = render("test", index, 0, 24, 32)
    rgb = cv2.resize(s.rgb, (width, height), interpolation=cv2.INTER_NEAREST)
    depth = cv2.resize(np.where(s.valid, s.depth, 0).astype(np.float32), (width, height),
                       interpolation=cv2.INTER_NEAREST)
    return rgb, depth


def put(root: Path, relpath: str, data: bytes) -> None:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def png(array: np.ndarray) -> bytes:
    img = array[:, :, ::-1] if array.ndim == 3 else array
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(img))
    assert ok
    return buf.tobytes()


def jpg(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return buf.tobytes()


def make_tar(folder: Path, tar_path: Path, arcname: str = "") -> Path:
    with tarfile.open(tar_path, "w") as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=str(Path(arcname) / path.relative_to(folder)) if arcname else
                        str(path.relative_to(folder)))
    return tar_path


def write_nyu_archive(root: Path, count: int = 3) -> dict:
    """test/<scene>/rgb_NNNN.png, depth_NNNN.png (uint16 mm), filled_NNNN.png; a patch at 12 m, one at 0."""
    out = {}
    for k in range(count):
        rgb, depth = tiny(2 * k, 480, 640)
        depth[100:120, 200:240] = 12.0  # beyond 10 m: invalid
        depth[300:310, 300:310] = 0.0
        mm = np.round(depth * 1000).astype(np.uint16)
        scene, n = ["kitchen_0004", "office_0005"][k % 2], 2 * k + 1
        rel = f"test/{scene}/rgb_{n:04d}.png"
        put(root, rel, png(rgb))
        put(root, f"test/{scene}/depth_{n:04d}.png", png(mm))
        put(root, f"test/{scene}/filled_{n:04d}.png", png(mm))
        out[rel] = (rgb, mm.astype(np.float32) / np.float32(1000), n)
    return out


def write_nyu_mat(root: Path, archive: dict, total: int = 7) -> None:
    """nyu_depth_v2_labeled.mat (HDF5, MATLAB's transposed layout) + splits.mat holding ``archive``'s samples."""
    import h5py
    import scipy.io

    root.mkdir(parents=True, exist_ok=True)
    images = np.zeros((total, 3, 640, 480), np.uint8)
    raw = np.zeros((total, 640, 480), np.float32)
    names = ["bedroom_0001"] * total
    test = []
    for rel, (rgb, depth, n) in archive.items():
        images[n - 1] = rgb.transpose(2, 1, 0)
        raw[n - 1] = depth.T
        names[n - 1] = rel.split("/")[1]
        test.append(n)
    with h5py.File(root / "nyu_depth_v2_labeled.mat", "w") as f:
        f.create_dataset("images", data=images, chunks=(1, 3, 640, 480))
        f.create_dataset("rawDepths", data=raw, chunks=(1, 640, 480))
        f.create_dataset("depths", data=raw, chunks=(1, 640, 480))
        refs = f.create_dataset("scenes", (1, total), dtype=h5py.ref_dtype)
        for i, name in enumerate(names):
            chars = f.create_dataset(f"#refs#/s{i}", data=np.array([[ord(c)] for c in name], np.uint16))
            refs[0, i] = chars.ref
    scipy.io.savemat(root / "splits.mat", {"testNdxs": np.array(test, float)[:, None],
                                           "trainNdxs": np.array([2.0])[:, None]})


KITTI_FRAMES = [("2011_09_26", "2011_09_26_drive_0002_sync", "0000000069"),
                ("2011_09_26", "2011_09_26_drive_0002_sync", "0000000054"),
                ("2011_09_28", "2011_09_28_drive_0037_sync", "0000000010")]


def write_kitti(root: Path, gt_prefix: str = "") -> tuple[dict, str]:
    """Raw RGB 375 x 1242 + sparse uint16 GT (m x 256); returns (samples, list text) with one ``None`` line."""
    out, lines = {}, []
    for k, (date, drive, frame) in enumerate(KITTI_FRAMES):
        rgb_rel = f"{date}/{drive}/image_02/data/{frame}.png"
        gt_rel = f"{drive}/proj_depth/groundtruth/image_02/{frame}.png"
        rgb, depth = tiny(2 * k + 1, 375, 1242)
        sparse = np.zeros_like(depth)
        sparse[::3, ::2] = depth[::3, ::2]  # lidar-like sparsity
        sparse[200:210, 600:640] = 90.0  # beyond 80 m: invalid
        raw = np.round(sparse * 256).astype(np.uint16)
        put(root, rgb_rel, png(rgb))
        if k == 2:  # listed without GT
            lines.append(f"{rgb_rel} None 707.0493")
            continue
        put(root, gt_prefix + gt_rel, png(raw))
        lines.append(f"{rgb_rel} {gt_rel} 721.5377")
        out[rgb_rel] = (rgb, raw.astype(np.float32) / np.float32(256), 721.5377)
    return out, "\n".join(lines) + "\n"


ETH3D_FRAMES = [("office", "DSC_0219.JPG"), ("office", "DSC_0220.JPG"), ("courtyard", "DSC_0286.JPG")]


def write_eth3d(root: Path, layout: str = "archive", height: int = 40, width: int = 60) -> dict:
    """RGB JPEG + headerless float32 GT named .JPG (inf = none) in the archive or the original layout."""
    out = {}
    for k, (scene, image) in enumerate(ETH3D_FRAMES):
        rgb, depth = tiny(2 * k, height, width)
        depth[depth == 0] = np.inf
        depth[:5, :7] = np.inf
        if layout == "archive":
            rgb_rel = f"rgb/{scene}/images/dslr_images/{image}"
            gt_rel = f"depth/{scene}_dslr_depth/{scene}/ground_truth_depth/dslr_images/{image}"
        else:
            rgb_rel = f"{scene}/images/dslr_images/{image}"
            gt_rel = f"{scene}/ground_truth_depth/dslr_images/{image}"
        data = jpg(rgb)
        put(root, rgb_rel, data)
        put(root, gt_rel, depth.astype("<f4").tobytes())
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
        out[f"rgb/{scene}/images/dslr_images/{image}"] = (decoded, np.where(np.isinf(depth), 0, depth), None)
    return out


def write_scannet(root: Path, rgb_scale: float = 2, height: int = 48, width: int = 64) -> tuple[dict, str]:
    """<scene>/color/<frame>.jpg (rgb_scale x the depth size) + <scene>/depth/<frame>.png uint16 mm."""
    out, lines = {}, []
    for k, (scene, frame) in enumerate([("scene0406_02", "000300"), ("scene0088_02", "001100")]):
        rgb, depth = tiny(2 * k, int(height * rgb_scale), int(width * rgb_scale))
        depth = cv2.resize(depth, (width, height), interpolation=cv2.INTER_NEAREST)
        mm = np.round(depth * 1000).astype(np.uint16)
        data = jpg(rgb)
        put(root, f"{scene}/color/{frame}.jpg", data)
        put(root, f"{scene}/depth/{frame}.png", png(mm))
        lines.append(f"{scene}/color/{frame}.jpg {scene}/depth/{frame}.png")
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
        out[f"{scene}/color/{frame}.jpg"] = (decoded, mm.astype(np.float32) / np.float32(1000), None)
    return out, "\n".join(lines) + "\n"


def write_diode(root: Path, height: int = 48, width: int = 64) -> dict:
    """{indoors,outdoor}/scene_*/scan_*/<name>.png + _depth.npy (H,W,1) + _depth_mask.npy (H,W)."""
    out = {}
    names = [("indoors", "00021", "00189", "indoors_200_010"), ("outdoor", "00022", "00196", "outdoor_350_020"),
             ("outdoor", "00022", "00196", "outdoor_010_000")]
    for k, (kind, scene, scan, tail) in enumerate(names):
        rgb, depth = tiny(k, height, width)
        mask = depth > 0
        mask[:4] = False
        stem = f"{kind}/scene_{scene}/scan_{scan}/{scene}_{scan}_{tail}"
        put(root, stem + ".png", png(rgb))
        np.save(root / (stem + "_depth.npy"), depth[:, :, None])
        np.save(root / (stem + "_depth_mask.npy"), mask.astype(np.float32))
        out[stem + ".png"] = (rgb, depth, mask)
    return out


def write_ibims(root: Path, names=("corridor_01", "kitchen_02"), height: int = 48, width: int = 64) -> dict:
    """imagelist.txt, rgb/, depth/ (uint16, v / 65535 * 50 m), mask_invalid/, mask_transp/ (1 = valid)."""
    out = {}
    for k, name in enumerate(names):
        rgb, depth = tiny(2 * k, height, width)
        raw = np.round(np.clip(depth, 0, 50) / 50 * 65535).astype(np.uint16)
        invalid = np.ones((height, width), np.uint8)
        invalid[:6] = 0
        transp = np.ones((height, width), np.uint8)
        transp[:, :5] = 0
        put(root, f"rgb/{name}.png", png(rgb))
        put(root, f"depth/{name}.png", png(raw))
        put(root, f"mask_invalid/{name}.png", png(invalid))
        put(root, f"mask_transp/{name}.png", png(transp))
        out[f"rgb/{name}.png"] = (rgb, (raw.astype(np.float64) * 50 / 65535).astype(np.float32),
                                  (invalid == 1) & (transp == 1) & (raw != 0))
    put(root, "imagelist.txt", ("\n".join(names) + "\n").encode())
    return out


def write_sintel(root: Path, height: int = 44, width: int = 102) -> dict:
    """training/final/<scene>/frame_NNNN.png + training/depth/<scene>/frame_NNNN.dpt (tag, w, h, float32)."""
    import struct

    out = {}
    for k, (scene, frame) in enumerate([("alley_1", "frame_0001"), ("alley_1", "frame_0002"), ("cave_2", "frame_0001")]):
        rgb, depth = tiny(2 * k + 1, height, width)
        depth[depth == 0] = 1e4  # sky: huge depth, invalid
        put(root, f"training/final/{scene}/{frame}.png", png(rgb))
        put(root, f"training/clean/{scene}/{frame}.png", png(255 - rgb))
        put(root, f"training/depth/{scene}/{frame}.dpt",
            struct.pack("<fii", 202021.25, width, height) + depth.astype("<f4").tobytes())
        out[f"training/final/{scene}/{frame}.png"] = (rgb, depth, None)
    return out
