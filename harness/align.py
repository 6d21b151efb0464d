"""Least-squares scale/shift alignment of affine-invariant depth (protocol.md, "Alignment").

Pure numpy, float64 internally, no I/O. Follows Marigold's reference evaluation
(``align_depth_least_square`` and the ``least_square_disparity`` branch of its ``eval.py``):

- ``least_squares``: ``(s, t) = argmin sum_mask (s p + t - g)^2`` in depth space, applied to the whole
  prediction, then clipped to ``[clip_min, clip_max]`` and to ``>= 1e-6``.
- ``least_squares_disparity``: the prediction is a disparity; fit it to ``1/g`` on the mask pixels where
  ``g > 0`` and ``p > 0`` (Marigold's non-negative masks), apply to the whole prediction, clip the aligned
  disparity to ``>= 1e-3``, invert, then clip as above.
- ``none``: the prediction is already metric depth; only the clips are applied.

Subsampled fit (ETH3D): ``fit_stride=(sy, sx)`` fits on the pixels ``[::sy, ::sx]`` of the mask (the grid starts
at pixel (0, 0)); :func:`stride_for_max_side` gives the smallest strides that leave at most ``max_side`` samples
per side (ETH3D 4032x6048 at 1024 -> (4, 6) -> a 1008 x 1008 grid). This thins *both* axes; Marigold's
``nn.Upsample`` on a 3-D tensor effectively thins only the width. Record ``fit_stride`` with the numbers; the
effect on them is negligible.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

ALIGN_MODES = ("least_squares", "least_squares_disparity", "none")
DEPTH_FLOOR = 1e-6  # metres, final clip after alignment (Marigold)
DISPARITY_FLOOR = 1e-3  # aligned disparity floor before inversion (Marigold)


def _check_shapes(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray, where: str) -> None:
    if pred.ndim != 2 or pred.shape != gt.shape or pred.shape != mask.shape:
        raise ValueError(
            f"{where}: pred, gt and mask must be 2-D arrays of one shape [H,W]; got pred {pred.shape}, "
            f"gt {gt.shape}, mask {mask.shape}"
        )


def stride_for_max_side(shape: Tuple[int, int], max_side: int = 1024) -> Tuple[int, int]:
    """Smallest ``(sy, sx)`` so that ``[::sy, ::sx]`` of an ``[H,W]`` image has at most ``max_side`` per side."""
    if max_side < 1:
        raise ValueError(f"stride_for_max_side: max_side must be >= 1, got {max_side}")
    h, w = int(shape[0]), int(shape[1])
    return max(1, math.ceil(h / max_side)), max(1, math.ceil(w / max_side))


def fit_scale_shift(
    pred: np.ndarray,
    gt: np.ndarray,
    mask: np.ndarray,
    stride: Optional[Tuple[int, int]] = None,
    *,
    sample: str = "",
) -> Tuple[float, float]:
    """Least squares ``(s, t) = argmin sum_{mask} (s * pred + t - gt)^2``; returns python floats.

    pred, gt: [H,W] (any float dtype, computed in float64); mask: [H,W] bool (the fit pixels);
    stride: optional ``(sy, sx)``: fit only on the mask pixels of the grid ``[::sy, ::sx]``.

    Solved with ``numpy.linalg.lstsq`` on the centred design ``[p - mean(p), 1]`` (numerically stable; the
    same minimiser as Marigold's ``lstsq`` on ``[p, 1]``). A prediction that is constant on the fit pixels
    has no unique scale: it returns ``scale = 0.0, shift = mean(gt)`` (finite; the aligned values on the mask
    equal those of any other minimiser, only pixels off the mask can differ).
    Raises ValueError with fewer than 2 fit pixels or non-finite values on them.
    """
    where = f"fit_scale_shift({sample})" if sample else "fit_scale_shift"
    pred, gt, mask = np.asarray(pred), np.asarray(gt), np.asarray(mask, dtype=bool)
    _check_shapes(pred, gt, mask, where)
    if stride is not None:
        sy, sx = (int(v) for v in stride)
        if sy < 1 or sx < 1:
            raise ValueError(f"{where}: stride must be positive integers, got {stride}")
        pred, gt, mask = pred[::sy, ::sx], gt[::sy, ::sx], mask[::sy, ::sx]
    p = pred[mask].astype(np.float64)  # [N]
    g = gt[mask].astype(np.float64)  # [N]
    if p.size < 2:
        raise ValueError(
            f"{where}: the fit needs at least 2 valid pixels, the mask has {p.size}"
            + (f" (after stride {stride})" if stride is not None else "")
        )
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{where}: the prediction has {int(np.sum(~np.isfinite(p)))} non-finite values on the mask")
    if not np.all(np.isfinite(g)):
        raise ValueError(f"{where}: the ground truth has {int(np.sum(~np.isfinite(g)))} non-finite values on the mask")
    if np.ptp(p) == 0.0:  # constant prediction: scale undetermined -> 0, shift = mean gt
        return 0.0, float(np.mean(g))
    p_mean = float(np.mean(p))
    design = np.stack([p - p_mean, np.ones_like(p)], axis=1)  # [N,2]
    (scale, shift_c), *_ = np.linalg.lstsq(design, g, rcond=None)
    scale = float(scale)
    shift = float(shift_c) - scale * p_mean
    if not (math.isfinite(scale) and math.isfinite(shift)):
        raise ValueError(f"{where}: degenerate system, got scale={scale}, shift={shift}")
    return scale, shift


def align_depth(
    pred: np.ndarray,
    gt: np.ndarray,
    mask: np.ndarray,
    mode: str,
    clip_min: float,
    clip_max: float,
    fit_stride: Optional[Tuple[int, int]] = None,
    *,
    sample: str = "",
) -> Tuple[np.ndarray, dict]:
    """Align a prediction to metric depth (protocol.md), return ``(depth [H,W] float64, info)``.

    pred: [H,W] affine-invariant depth (``least_squares``), disparity (``least_squares_disparity``) or metric
    depth (``none``) at GT resolution; gt: [H,W] metres; mask: [H,W] bool valid pixels (fit pixels);
    clip_min/clip_max: the dataset's clip range in metres (``clip_max`` may be ``inf``);
    fit_stride: ``(sy, sx)`` subsampled fit grid (see :func:`stride_for_max_side`) or None.
    info: ``{"scale", "shift", "mode", "fit_stride"}`` (scale 1, shift 0 for ``none``).
    Raises ValueError on an unknown mode, a non-finite prediction anywhere, or a fit that
    :func:`fit_scale_shift` rejects.
    """
    where = f"align_depth({sample})" if sample else "align_depth"
    if mode not in ALIGN_MODES:
        raise ValueError(f"{where}: unknown alignment mode {mode!r}; expected one of {ALIGN_MODES}")
    if not clip_min <= clip_max:
        raise ValueError(f"{where}: clip_min {clip_min} > clip_max {clip_max}")
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    _check_shapes(pred, gt, mask, where)
    if not np.all(np.isfinite(pred)):
        raise ValueError(f"{where}: the prediction has {int(np.sum(~np.isfinite(pred)))} non-finite values")

    if mode == "least_squares":
        scale, shift = fit_scale_shift(pred, gt, mask, fit_stride, sample=sample)
        depth = scale * pred + shift  # [H,W] metres
    elif mode == "least_squares_disparity":
        fit_mask = mask & (gt > 0) & (pred > 0)  # Marigold: gt and predicted disparity non-negative
        gt_disp = np.zeros_like(gt)
        np.divide(1.0, gt, out=gt_disp, where=gt > 0)  # [H,W] 1/m
        scale, shift = fit_scale_shift(pred, gt_disp, fit_mask, fit_stride, sample=sample)
        disp = np.maximum(scale * pred + shift, DISPARITY_FLOOR)  # [H,W] 1/m
        depth = 1.0 / disp
    else:
        scale, shift = 1.0, 0.0
        depth = pred.copy()
    depth = np.clip(depth, clip_min, clip_max)
    depth = np.maximum(depth, DEPTH_FLOOR)
    info = {
        "scale": float(scale),
        "shift": float(shift),
        "mode": mode,
        "fit_stride": None if fit_stride is None else (int(fit_stride[0]), int(fit_stride[1])),
    }
    return depth, info
