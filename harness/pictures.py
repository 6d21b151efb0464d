"""Images in and out: reading a user's photo, 16-bit depth PNGs, colour-mapped depth, normals as RGB.

Pure array <-> array conversions (``depth_to_uint16``, ``colorize``, ``normals_to_rgb8``) are kept apart from
the few functions that touch files (``read_rgb``, ``write_png``, ``read_png16``).

Conventions written by ``python -m harness predict`` (README "Predictions on your own images"):
- depth 16-bit PNG: affine-invariant depth normalised per image to the full 16-bit range,
  ``v = round((d - d_min) / (d_max - d_min) * 65535)``: 0 = nearest pixel, 65535 = farthest. It is NOT metric;
  the ``.npy`` beside it holds the raw float32 prediction (larger = farther).
- colour-mapped depth: ``DEPTH_COLORMAP`` (``inferno_r``) over the same normalisation: near = bright yellow (warm),
  far = black. Chosen because it is perceptually uniform with monotonic lightness (order reads correctly in
  greyscale and for colour-blind readers), unlike the diverging ``Spectral`` some papers use.
- normals RGB: canonical camera frame (x right, y up, z toward the viewer), ``round((n + 1) / 2 * 255)``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

DEPTH_COLORMAP = "inferno_r"  # near = warm/bright; perceptually uniform (see module docstring)
ERROR_COLORMAP = "viridis"  # per-pixel error maps of `figures` (a different map than depth, so never confused)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class NotAnImageError(ValueError):
    """A file that cannot be decoded as an image (the message names it)."""


def read_rgb(path: Path) -> np.ndarray:
    """Any image file -> uint8 [H,W,3] (EXIF orientation applied; grey, palette and alpha converted to RGB)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I", "F"):  # 16-bit / float grey: scale to 8 bits, not clip
                a = np.asarray(im, dtype=np.float64)
                top = 65535.0 if im.mode.startswith("I") else max(float(a.max()), 1e-12)
                return np.repeat(np.round(np.clip(a / top, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise NotAnImageError(f"{path} is not an image that can be read ({type(err).__name__}: {err}); pass PNG, "
                              f"JPEG, BMP, TIFF or WebP files, or remove it from the inputs") from None


def check_image(path: Path) -> None:
    """Cheap header check that ``path`` decodes as an image; raises NotAnImageError naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise NotAnImageError(f"{path} is not an image that can be read ({type(err).__name__}: {err}); pass PNG, "
                              f"JPEG, BMP, TIFF or WebP files, or remove it from the inputs") from None


def normalise01(depth: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """[H,W] -> [H,W] float64 in [0,1] by the min and max over ``valid`` (all pixels when None); constant -> 0."""
    vals = depth[valid] if valid is not None else depth.ravel()
    if vals.size == 0:
        return np.zeros(depth.shape)
    lo, hi = float(vals.min()), float(vals.max())
    return np.clip((depth.astype(np.float64) - lo) / max(hi - lo, 1e-12), 0.0, 1.0)


def depth_to_uint16(depth: np.ndarray) -> np.ndarray:
    """[H,W] affine-invariant depth (larger = farther) -> uint16 [H,W], 0 = nearest, 65535 = farthest."""
    return np.round(normalise01(depth) * 65535.0).astype(np.uint16)


def colorize(values01: np.ndarray, cmap: str = DEPTH_COLORMAP, valid: np.ndarray | None = None) -> np.ndarray:
    """[H,W] in [0,1] -> uint8 [H,W,3] through a matplotlib colormap; pixels outside ``valid`` are grey."""
    from matplotlib import colormaps

    rgb = colormaps[cmap](np.clip(values01, 0.0, 1.0))[..., :3]
    out = np.round(rgb * 255).astype(np.uint8)
    if valid is not None:
        out[~valid] = 128
    return out


def normals_to_rgb8(normals: np.ndarray) -> np.ndarray:
    """[H,W,3] unit normals (x right, y up, z toward the viewer) -> uint8 [H,W,3] = round((n + 1) / 2 * 255)."""
    return np.round((np.clip(normals, -1.0, 1.0) + 1.0) / 2.0 * 255.0).astype(np.uint8)


def rgb8_to_normals(rgb: np.ndarray) -> np.ndarray:
    """Inverse of :func:`normals_to_rgb8` (then renormalised): uint8 [H,W,3] -> float32 [H,W,3] unit."""
    n = rgb.astype(np.float32) / 255.0 * 2.0 - 1.0
    return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-6)


def write_png(path: Path, array: np.ndarray) -> None:
    """uint8 [H,W] / [H,W,3] or uint16 [H,W] -> PNG (16-bit grey for uint16), written atomically."""
    import os

    from PIL import Image

    if array.dtype == np.uint16:
        image = Image.fromarray(array)  # 16-bit greyscale PNG
    elif array.dtype == np.uint8:
        image = Image.fromarray(array)
    else:
        raise ValueError(f"write_png({path}): expected uint8 or uint16, got {array.dtype}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.png")
    image.save(tmp)
    os.replace(tmp, path)


def read_png16(path: Path) -> np.ndarray:
    """A 16-bit greyscale PNG -> uint16 [H,W]; ValueError naming the file when it holds another bit depth."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode not in ("I;16", "I;16B", "I;16L", "I"):
            raise ValueError(f"{path}: expected a 16-bit greyscale PNG, got mode {im.mode}")
        return np.asarray(im).astype(np.uint16)
