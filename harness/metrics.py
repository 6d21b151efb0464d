"""Depth and surface-normal metrics (protocol.md, "Metrics"): pure numpy, float64 internally, no I/O.

Depth (Marigold's ``metric.py``): each metric over the valid pixels of ONE image, then a plain mean over
images (:func:`aggregate_depth`), never pooled over pixels. Normals (DSINE's ``compute_normal_error`` /
``compute_normal_metrics``): per-pixel angular errors, aggregated either ``pooled`` over all valid pixels of
the dataset (the default) or ``per_image`` (metrics per image, then a plain mean): :class:`NormalAccumulator`.

No rounding anywhere here; a NaN, a non-positive depth or an empty mask raises ValueError naming the sample.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Sequence

import numpy as np

# ----------------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class MetricInfo:
    """How one metric reads: ``direction`` "lower"/"higher" is better; ``label`` for tables;
    ``paper_x100``: papers print the value multiplied by 100 (AbsRel, delta_k); ``unit`` of the raw value."""

    name: str
    task: str  # "depth" | "normals"
    direction: str  # "lower" | "higher"
    label: str
    paper_x100: bool = False
    unit: str = ""


def _info(task: str, rows: Sequence[tuple]) -> Dict[str, MetricInfo]:
    return {r[0]: MetricInfo(r[0], task, *r[1:]) for r in rows}


# METRIC_INFO[task][name]; "rmse" exists in both tasks (metres vs degrees), hence keyed by task first.
METRIC_INFO: Dict[str, Dict[str, MetricInfo]] = {
    "depth": _info("depth", [
        ("abs_rel", "lower", "AbsRel", True, ""),
        ("sq_rel", "lower", "SqRel", False, "m"),
        ("rmse", "lower", "RMSE", False, "m"),
        ("rmse_log", "lower", "RMSE log", False, ""),
        ("log10", "lower", "log10", False, ""),
        ("delta1", "higher", "δ1", True, ""),
        ("delta2", "higher", "δ2", True, ""),
        ("delta3", "higher", "δ3", True, ""),
        ("i_rmse", "lower", "iRMSE", False, "1/m"),
        ("silog", "lower", "SILog", False, ""),  # already x100 by definition
    ]),
    "normals": _info("normals", [
        ("mean", "lower", "Mean", False, "deg"),
        ("median", "lower", "Median", False, "deg"),
        ("rmse", "lower", "RMSE", False, "deg"),
        ("a5", "higher", "5°", False, "%"),
        ("a7_5", "higher", "7.5°", False, "%"),
        ("a11_25", "higher", "11.25°", False, "%"),
        ("a22_5", "higher", "22.5°", False, "%"),
        ("a30", "higher", "30°", False, "%"),
    ]),
}
DEPTH_METRICS = tuple(METRIC_INFO["depth"])  # output order of depth_metrics
NORMAL_METRICS = tuple(METRIC_INFO["normals"])  # output order of normal_metrics
NORMAL_THRESHOLDS = {"a5": 5.0, "a7_5": 7.5, "a11_25": 11.25, "a22_5": 22.5, "a30": 30.0}  # degrees, strict <
NORMAL_AGGREGATIONS = ("pooled", "per_image")
COS_EPS = 1e-8  # as torch.cosine_similarity: each norm clamped to >= eps


def _where(fn: str, sample: str) -> str:
    return f"{fn}({sample})" if sample else fn


# ----------------------------------------------------------------------------------------------- depth


def depth_metrics(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray, *, sample: str = "") -> Dict[str, float]:
    """Depth metrics of one image over its mask pixels; ``{name: float}`` in :data:`DEPTH_METRICS` order.

    pred: [H,W] aligned depth, metres; gt: [H,W] metres; mask: [H,W] bool. With ``p``, ``g`` the mask pixels:
    abs_rel mean(|p-g|/g); sq_rel mean((p-g)^2/g); rmse sqrt(mean((p-g)^2)); rmse_log sqrt(mean((ln p-ln g)^2));
    log10 mean(|log10 p - log10 g|); delta_k mean(max(p/g, g/p) < 1.25^k) (strict, a fraction in 0..1);
    i_rmse sqrt(mean((1/p-1/g)^2)); silog 100 sqrt(mean(d^2) - mean(d)^2), d = ln p - ln g (computed as the
    centred variance mean((d - mean d)^2), equal up to rounding and never negative).
    Raises ValueError ("no valid pixel") on an empty mask, and on non-finite or non-positive pred or gt there.
    """
    where = _where("depth_metrics", sample)
    pred, gt, mask = np.asarray(pred), np.asarray(gt), np.asarray(mask, dtype=bool)
    if pred.ndim != 2 or pred.shape != gt.shape or pred.shape != mask.shape:
        raise ValueError(f"{where}: pred {pred.shape}, gt {gt.shape}, mask {mask.shape} must be one [H,W] shape")
    p = pred[mask].astype(np.float64)  # [N] metres
    g = gt[mask].astype(np.float64)  # [N] metres
    if p.size == 0:
        raise ValueError(f"{where}: no valid pixel in the mask")
    for name, v in (("prediction", p), ("ground truth", g)):
        bad = ~np.isfinite(v)
        if bad.any():
            raise ValueError(f"{where}: the {name} has {int(bad.sum())} non-finite values (NaN/inf) on the mask")
        if np.any(v <= 0):
            raise ValueError(
                f"{where}: the {name} has {int(np.sum(v <= 0))} values <= 0 on the mask (min {v.min():.6g}); "
                "depth must be positive (align and clip the prediction first)"
            )
    diff = p - g
    log_diff = np.log(p) - np.log(g)
    ratio = np.maximum(p / g, g / p)
    out = {
        "abs_rel": np.mean(np.abs(diff) / g),
        "sq_rel": np.mean(diff**2 / g),
        "rmse": np.sqrt(np.mean(diff**2)),
        "rmse_log": np.sqrt(np.mean(log_diff**2)),
        "log10": np.mean(np.abs(np.log10(p) - np.log10(g))),
        "delta1": np.mean(ratio < 1.25),
        "delta2": np.mean(ratio < 1.25**2),
        "delta3": np.mean(ratio < 1.25**3),
        "i_rmse": np.sqrt(np.mean((1.0 / p - 1.0 / g) ** 2)),
        "silog": 100.0 * np.sqrt(np.mean((log_diff - np.mean(log_diff)) ** 2)),
    }
    return {k: float(v) for k, v in out.items()}


def aggregate_depth(per_image: Iterable[Mapping[str, float]]) -> Dict[str, float]:
    """Plain mean over images of per-image metric dicts (all must have the same keys)."""
    rows = list(per_image)
    if not rows:
        raise ValueError("aggregate_depth: no images to aggregate")
    keys = list(rows[0])
    for i, r in enumerate(rows):
        if set(r) != set(keys):
            raise ValueError(f"aggregate_depth: image {i} has metrics {sorted(r)}, image 0 has {sorted(keys)}")
    return {k: float(np.mean(np.array([r[k] for r in rows], dtype=np.float64))) for k in keys}


# ----------------------------------------------------------------------------------------------- normals


def angular_error_deg(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray, *, sample: str = "") -> np.ndarray:
    """Per-pixel angle in degrees between pred and gt normals on the mask: [N] float64, row-major order.

    pred, gt: [H,W,3] (any length; pred need not be unit); mask: [H,W] bool.
    ``acos(clamp(cos_sim, -1, 1))`` with cos_sim as ``torch.cosine_similarity`` (each norm clamped to
    ``>= 1e-8``): a zero-length vector gives cos 0, i.e. an error of exactly 90 degrees.
    Raises ValueError on an empty mask or non-finite values on it.
    """
    where = _where("angular_error_deg", sample)
    pred, gt, mask = np.asarray(pred), np.asarray(gt), np.asarray(mask, dtype=bool)
    if pred.ndim != 3 or pred.shape[-1] != 3 or pred.shape != gt.shape or pred.shape[:2] != mask.shape:
        raise ValueError(f"{where}: pred {pred.shape}, gt {gt.shape} must be [H,W,3] and mask {mask.shape} [H,W]")
    p = pred[mask].astype(np.float64)  # [N,3]
    g = gt[mask].astype(np.float64)  # [N,3]
    if p.shape[0] == 0:
        raise ValueError(f"{where}: no valid pixel in the mask")
    for name, v in (("prediction", p), ("ground truth", g)):
        bad = ~np.all(np.isfinite(v), axis=1)
        if bad.any():
            raise ValueError(f"{where}: the {name} has {int(bad.sum())} non-finite normals on the mask")
    pn = np.maximum(np.linalg.norm(p, axis=1), COS_EPS)  # [N]
    gn = np.maximum(np.linalg.norm(g, axis=1), COS_EPS)  # [N]
    cos = np.sum((p / pn[:, None]) * (g / gn[:, None]), axis=1)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _check_errors(errors: np.ndarray, where: str) -> np.ndarray:
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    if e.size == 0:
        raise ValueError(f"{where}: no valid pixel (empty error array)")
    if not np.all(np.isfinite(e)):
        raise ValueError(f"{where}: {int(np.sum(~np.isfinite(e)))} non-finite angular errors")
    return e


def normal_metrics(errors_deg: np.ndarray) -> Dict[str, float]:
    """DSINE's metrics of a 1-D array of angular errors (degrees): mean, median, rmse, and a5 ... a30 =
    percent (0..100) of errors strictly below 5, 7.5, 11.25, 22.5, 30 degrees."""
    e = _check_errors(errors_deg, "normal_metrics")
    out = {"mean": np.mean(e), "median": np.median(e), "rmse": np.sqrt(np.mean(e**2))}
    for k, thr in NORMAL_THRESHOLDS.items():
        out[k] = 100.0 * np.mean(e < thr)
    return {k: float(out[k]) for k in NORMAL_METRICS}


class NormalAccumulator:
    """Accumulates per-image angular errors; gives both aggregations without a second pass.

    ``pooled()``: mean, rmse and the thresholds come from exact running float64 sums and integer counts;
    the median needs every error, so the errors are kept as ``store_dtype`` arrays: 8 bytes/pixel in float64
    (the default, exact; e.g. NYUv2 654 x ~250k valid pixels ~ 1.3 GB, plus one copy while taking the
    median), or 4 bytes/pixel with ``store_dtype=np.float32`` (median then exact to float32 rounding,
    ~1e-5 degree). ``per_image()``: :func:`normal_metrics` per image (kept as small dicts), then a plain mean.
    """

    def __init__(self, store_dtype=np.float64):
        self.store_dtype = np.dtype(store_dtype)
        self._errors: List[np.ndarray] = []
        self._per_image: List[Dict[str, float]] = []
        self._n = 0
        self._sum = 0.0
        self._sumsq = 0.0
        self._below = {k: 0 for k in NORMAL_THRESHOLDS}

    def add(self, errors_deg: np.ndarray, *, sample: str = "") -> Dict[str, float]:
        """Add one image's errors [N] (degrees); returns that image's :func:`normal_metrics`."""
        e = _check_errors(errors_deg, _where("NormalAccumulator.add", sample))
        self._errors.append(e.astype(self.store_dtype, copy=True))
        self._n += e.size
        self._sum += float(np.sum(e))
        self._sumsq += float(np.sum(e**2))
        for k, thr in NORMAL_THRESHOLDS.items():
            self._below[k] += int(np.count_nonzero(e < thr))
        m = normal_metrics(e)
        self._per_image.append(m)
        return m

    def merge(self, other: "NormalAccumulator") -> None:
        """Fold another accumulator (e.g. another process' shard) into this one."""
        self._errors.extend(e.astype(self.store_dtype) for e in other._errors)
        self._per_image.extend(other._per_image)
        self._n += other._n
        self._sum += other._sum
        self._sumsq += other._sumsq
        for k in self._below:
            self._below[k] += other._below[k]

    @property
    def n_images(self) -> int:
        return len(self._per_image)

    @property
    def n_pixels(self) -> int:
        return self._n

    def pooled(self) -> Dict[str, float]:
        if self._n == 0:
            raise ValueError("NormalAccumulator.pooled: no image was added")
        out = {
            "mean": self._sum / self._n,
            "median": float(np.median(np.concatenate(self._errors))),
            "rmse": float(np.sqrt(self._sumsq / self._n)),
        }
        for k in NORMAL_THRESHOLDS:
            out[k] = 100.0 * self._below[k] / self._n
        return {k: float(out[k]) for k in NORMAL_METRICS}

    def per_image(self) -> Dict[str, float]:
        if not self._per_image:
            raise ValueError("NormalAccumulator.per_image: no image was added")
        return aggregate_depth(self._per_image)  # the same plain mean over per-image dicts

    def result(self, aggregation: str = "pooled") -> Dict[str, float]:
        if aggregation == "pooled":
            return self.pooled()
        if aggregation == "per_image":
            return self.per_image()
        raise ValueError(f"unknown normals aggregation {aggregation!r}; expected one of {NORMAL_AGGREGATIONS}")


def aggregate_normals(per_image_errors: Iterable[np.ndarray], aggregation: str = "pooled") -> Dict[str, float]:
    """Aggregate a sequence of per-image error arrays: ``pooled`` or ``per_image`` (see NormalAccumulator)."""
    if aggregation not in NORMAL_AGGREGATIONS:
        raise ValueError(f"unknown normals aggregation {aggregation!r}; expected one of {NORMAL_AGGREGATIONS}")
    acc = NormalAccumulator()
    for e in per_image_errors:
        acc.add(e)
    return acc.result(aggregation)


def metric_info(task: str, name: str) -> MetricInfo:
    """Look up :data:`METRIC_INFO`; an unknown name fails listing the known ones."""
    try:
        return METRIC_INFO[task][name]
    except KeyError:
        known = {t: sorted(v) for t, v in METRIC_INFO.items()}
        raise KeyError(f"unknown metric {task!r}/{name!r}; known: {known}") from None
