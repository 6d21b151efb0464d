"""Pure conversions between native GT encodings and the canonical frame (no file I/O).

Canonical normals (``datasets.base``): camera frame, x right, y up, z toward the viewer, unit length;
invalid pixels hold (0, 0, 1). DSINE's evaluation files are x-left, y-up, z toward the viewer
(``../shared/protocol.md``), so converting either way multiplies x by -1. HyperSim's ``normal_cam`` is
already x-right, y-up, z-back (= toward the viewer) but some normals face away from the camera.
Also here: HyperSim distance-to-depth, normal orientation and HDR tone mapping (Sintel ``.dpt`` is in
``datasets.decode``).
"""
from __future__ import annotations

import numpy as np

DSINE_TO_CANONICAL = np.array([-1.0, 1.0, 1.0], np.float32)  # per-axis sign; its own inverse
INVALID_NORMAL = np.array([0.0, 0.0, 1.0], np.float32)
_PNG_LEVELS = (np.arange(256, dtype=np.float32) / 255.0 * 2.0 - 1.0).astype(np.float32)  # byte -> v/255*2-1
HYPERSIM_FOCAL_PX = 886.81  # HyperSim's focal length in pixels at its native 1024 x 768
HYPERSIM_WIDTH = 1024


def unit_normals(n: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """[H,W,3] -> float32 unit vectors on valid pixels, INVALID_NORMAL elsewhere (and where |n| = 0)."""
    n = np.asarray(n, np.float32)
    norm = np.sqrt(np.einsum("...i,...i->...", n, n))  # [H,W]
    ok = valid & (norm > 0)
    norm[~ok] = 1.0
    out = n / norm[..., None]
    out[~ok] = INVALID_NORMAL  # also replaces NaN / inf stored at invalid pixels
    return out


def dsine_png_to_canonical(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DSINE ``_normal.png`` content, uint8 [H,W,3] in RGB order -> (canonical unit normals, valid).

    DSINE decodes ``v / 255 * 2 - 1`` and calls a pixel valid when its three bytes sum to more than 0.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"DSINE normal PNG must be 8-bit, 3 channels; got {rgb.dtype} {rgb.shape}")
    valid = (rgb[..., 0] | rgb[..., 1] | rgb[..., 2]) != 0  # the byte sum is > 0 exactly when a byte is nonzero
    n = _PNG_LEVELS[rgb] * DSINE_TO_CANONICAL  # [H,W,3] float32 in DSINE's frame, x flipped
    return unit_normals(n, valid), valid


def canonical_to_dsine_png(normals: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Inverse of :func:`dsine_png_to_canonical` up to 8-bit quantisation; invalid pixels are (0, 0, 0)."""
    v = np.round((normals * DSINE_TO_CANONICAL + 1.0) / 2.0 * 255.0)
    v = np.clip(v, 0, 255).astype(np.uint8)
    v[valid & (v.astype(np.int32).sum(-1) == 0)] = 1  # keep a valid pixel valid (sum > 0)
    v[~valid] = 0
    return v


def dsine_exr_to_canonical(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DSINE ``_normal.exr`` content, float [H,W,3] in RGB order -> (canonical unit normals, valid |n| > 0.5)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or not np.issubdtype(rgb.dtype, np.floating):
        raise ValueError(f"DSINE normal EXR must be float with 3 channels; got {rgb.dtype} {rgb.shape}")
    n = rgb.astype(np.float32)
    valid = np.einsum("...i,...i->...", n, n) > 0.25  # |n| > 0.5
    return unit_normals(n * DSINE_TO_CANONICAL, valid), valid


def canonical_to_dsine_exr(normals: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Inverse of :func:`dsine_exr_to_canonical` (exact: a sign flip); invalid pixels are (0, 0, 0)."""
    return np.where(valid[..., None], normals * DSINE_TO_CANONICAL, 0.0).astype(np.float32)


def pixel_ray_offsets(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre offsets from the image centre, x right and y down, in pixels: ([1,W], [H,1])."""
    x = np.arange(width, dtype=np.float64)[None, :] + 0.5 - width / 2.0
    y = np.arange(height, dtype=np.float64)[:, None] + 0.5 - height / 2.0
    return x, y


def hypersim_focal_px(width: int) -> float:
    """HyperSim's focal length for an image ``width`` pixels wide (886.81 at the native 1024)."""
    return HYPERSIM_FOCAL_PX * width / HYPERSIM_WIDTH


def hypersim_distance_to_depth(distance: np.ndarray, focal_px: float) -> np.ndarray:
    """Distance to the camera centre [H,W] (metres, NaN = none) -> planar depth ``dist * f / sqrt(x^2+y^2+f^2)``."""
    x, y = pixel_ray_offsets(*distance.shape)
    factor = (focal_px / np.sqrt(x * x + y * y + focal_px * focal_px)).astype(np.float32)  # [H,W], float64 math
    return np.asarray(distance, np.float32) * factor


def orient_toward_camera(normals: np.ndarray, focal_px: float) -> np.ndarray:
    """Flip normals [H,W,3] (x right, y up, z back) that face away from the camera (n . ray > 0).

    The ray through a pixel is (x, -y, -f) for centre offsets x (right) and y (down)."""
    x, y = (a.astype(np.float32) for a in pixel_ray_offsets(*normals.shape[:2]))
    n = np.asarray(normals, np.float32)
    facing_away = n[..., 0] * x - n[..., 1] * y - n[..., 2] * np.float32(focal_px) > 0  # [H,W]
    return n * (1 - 2 * facing_away.astype(np.float32))[..., None]


def hypersim_tonemap(hdr: np.ndarray, valid: np.ndarray, percentile: float = 90.0, target: float = 0.8,
                     gamma: float = 1 / 2.2) -> np.ndarray:
    """HDR linear RGB [H,W,3] -> uint8: scale so the ``percentile`` brightness of the valid pixels maps to
    ``target`` after the ``gamma`` curve, clip to [0,1], x 255 truncated: HyperSim's tone mapping as Marigold's
    preprocessing applies it (float64, ``(clip(x, 0, 1) * 255).astype(uint8)``).

    Brightness is 0.3 R + 0.59 G + 0.11 B. No valid pixel: scale 1; a percentile below 1e-4: scale 0 (a black
    frame), as HyperSim's code does. NaN -> 0.
    """
    hdr = np.asarray(hdr, np.float64)
    brightness = hdr[..., 0] * 0.3 + hdr[..., 1] * 0.59 + hdr[..., 2] * 0.11
    values = brightness[valid & np.isfinite(brightness)]
    if values.size == 0:
        scale = 1.0
    else:
        current = float(np.percentile(values, percentile))
        scale = target ** (1.0 / gamma) / current if current >= 1e-4 else 0.0
    with np.errstate(invalid="ignore"):  # 0 x inf in a black frame: NaN, then 0
        ldr = np.fmax(hdr * scale, 0.0) ** gamma  # fmax turns NaN into 0
    return (np.minimum(ldr, 1.0) * 255).astype(np.uint8)
