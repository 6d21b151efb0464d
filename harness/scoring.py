"""One sample's prediction -> its per-sample row (pure: arrays in, dict out).

Depth: resize to GT, align (mode from the method's output contract), clip to the dataset range, metrics.
Normals: resize to GT, renormalise, angular errors; the row keeps the per-image metrics and the sums that
pooled aggregation needs, and the errors themselves are returned for the exact pooled median.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from datasets.base import DatasetSpec, Sample
from harness.align import align_depth, stride_for_max_side
from harness.metrics import NORMAL_THRESHOLDS, angular_error_deg, depth_metrics, normal_metrics
from methods.base import OutputContract


def alignment_for(contract: OutputContract, spec: DatasetSpec, dataset: str = "the dataset") -> str:
    """The alignment the protocol applies to this method's output on this dataset (recorded in every row).

    The method's output kind picks the space (protocol.md): affine-invariant depth is fitted in depth space,
    disparity in disparity space. The dataset's ``alignment`` can only switch the fit off ("none": metric
    evaluation) or insist on disparity space, which a depth output cannot honour: that is refused, naming the fix.
    """
    if spec.task == "normals" or contract.kind == "normals":
        return "none"
    if not contract.affine_invariant or spec.alignment == "none":
        return "none"
    if contract.kind == "disparity":
        return "least_squares_disparity"
    if spec.alignment == "least_squares_disparity":
        raise ValueError(f"{dataset} asks for alignment least_squares_disparity, but the method outputs affine-"
                         f"invariant depth, which is fitted in depth space (protocol.md, Alignment). Set the "
                         f"dataset's alignment to least_squares (spec.json or --dataset-set alignment=least_squares), "
                         f"or evaluate a method that outputs disparity.")
    return "least_squares"


def resize_to(pred: np.ndarray, height: int, width: int) -> np.ndarray:
    """[C,h,w] -> [C,H,W] float32, bilinear with antialias (the protocol's resize back to GT resolution)."""
    if pred.shape[1:] == (height, width):
        return pred.astype(np.float32)
    t = torch.from_numpy(pred.astype(np.float32))[None]
    return F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False, antialias=True)[0].numpy()


def aligned_depth(pred: np.ndarray, sample: Sample, spec: DatasetSpec, alignment: str) -> tuple[np.ndarray, dict]:
    """pred [1,h,w] -> ([H,W] at GT resolution, aligned to the GT as the protocol fits it; the fit's info)."""
    h, w = sample.depth.shape
    full = resize_to(pred, h, w)[0]
    stride = stride_for_max_side((h, w), spec.fit_max_side) if spec.fit_max_side else None  # ETH3D: 1024
    return align_depth(full, sample.depth, sample.valid, alignment, spec.clip_min, spec.clip_max, stride,
                       sample=sample.id)


def score_depth(pred: np.ndarray, sample: Sample, spec: DatasetSpec, alignment: str) -> dict:
    """pred [1,h,w] at processing resolution -> row of depth metrics plus the fitted scale/shift."""
    if not np.isfinite(pred).all():
        raise ValueError(f"sample {sample.id}: the prediction contains NaN or inf")
    aligned, info = aligned_depth(pred, sample, spec, alignment)
    row = depth_metrics(aligned, sample.depth, sample.valid, sample=sample.id)
    row.update(scale=info["scale"], shift=info["shift"], n_valid=int(sample.valid.sum()))
    return row


def score_normals(pred: np.ndarray, sample: Sample) -> tuple[dict, np.ndarray]:
    """pred [3,h,w] -> (row, angular errors [N] in degrees over valid pixels)."""
    if not np.isfinite(pred).all():
        raise ValueError(f"sample {sample.id}: the prediction contains NaN or inf")
    h, w = sample.valid.shape
    full = resize_to(pred, h, w).transpose(1, 2, 0)  # [H,W,3]
    errors = angular_error_deg(full, sample.normals, sample.valid, sample=sample.id)
    row = normal_metrics(errors)
    row.update(n_valid=int(errors.size), sum_err=float(errors.sum()), sum_sq_err=float((errors ** 2).sum()))
    row.update({f"below_{k}": int((errors < thr).sum()) for k, thr in NORMAL_THRESHOLDS.items()})
    return row, errors
