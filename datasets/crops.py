"""Pure crops and evaluation masks of the depth protocol (protocol.md; Marigold's dataset classes).

Arrays are [H,W] or [H,W,C]; masks are bool [H,W]. Nothing here reads files.
"""
from __future__ import annotations

import numpy as np

KB_HEIGHT, KB_WIDTH = 352, 1216  # KITTI benchmark crop
NYU_EIGEN = (45, 471, 41, 601)  # rows 45:471, cols 41:601 of the 480 x 640 frame
NYU_SHAPE = (480, 640)
# KITTI crops as fractions of the KB-cropped frame: (row0, row1, col0, col1)
KITTI_FRACTIONS = {"eigen": (0.3324324, 0.91351351, 0.0359477, 0.96405229),
                   "garg": (0.40810811, 0.99189189, 0.03594771, 0.96405229)}


def kb_crop_box(height: int, width: int) -> tuple[int, int]:
    """(top, left) of the KITTI benchmark crop: the bottom 352 rows, 1216 columns centred."""
    if height < KB_HEIGHT or width < KB_WIDTH:
        raise ValueError(f"KB crop needs at least {KB_HEIGHT} x {KB_WIDTH} pixels, got {height} x {width}")
    return height - KB_HEIGHT, int((width - KB_WIDTH) / 2)


def kb_crop(image: np.ndarray) -> np.ndarray:
    """[H,W,...] -> [352,1216,...]."""
    top, left = kb_crop_box(*image.shape[:2])
    return image[top:top + KB_HEIGHT, left:left + KB_WIDTH]


def box_mask(shape: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[rows[0]:rows[1], cols[0]:cols[1]] = True
    return mask


def kitti_eval_mask(shape: tuple[int, int], crop: str = "eigen") -> np.ndarray:
    """Eigen (or Garg) crop of an [H,W] frame (the KB-cropped 352 x 1216 one): rows/cols int(fraction * size)."""
    if crop not in KITTI_FRACTIONS:
        raise ValueError(f"unknown KITTI evaluation crop {crop!r}; expected one of {sorted(KITTI_FRACTIONS)}")
    h, w = shape
    r0, r1, c0, c1 = KITTI_FRACTIONS[crop]
    return box_mask(shape, (int(r0 * h), int(r1 * h)), (int(c0 * w), int(c1 * w)))


def nyu_eigen_mask(shape: tuple[int, int]) -> np.ndarray:
    """NYUv2 Eigen crop: rows 45:471, cols 41:601 of the 480 x 640 frame (other sizes are an error)."""
    if tuple(shape) != NYU_SHAPE:
        raise ValueError(f"the NYUv2 Eigen crop is defined on 480 x 640 frames, got {shape[0]} x {shape[1]}")
    r0, r1, c0, c1 = NYU_EIGEN
    return box_mask(tuple(shape), (r0, r1), (c0, c1))


def range_mask(depth: np.ndarray, low: float, high: float) -> np.ndarray:
    """low < depth < high (exclusive, as Marigold); NaN is invalid."""
    with np.errstate(invalid="ignore"):
        return (depth > low) & (depth < high)
