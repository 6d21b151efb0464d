"""Per-sample rows -> tidy summary rows with bootstrap 95% confidence intervals over samples.

Depth (and per-image normals): the mean over images; the interval resamples images. Pooled normals: mean, RMSE
and the thresholds are ratios of per-image sums (exact; the interval resamples images and recomputes the
ratio); the pooled median comes from every stored error and has no interval (NaN).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from harness.metrics import DEPTH_METRICS, NORMAL_METRICS, NORMAL_THRESHOLDS, NormalAccumulator

BOOTSTRAP_DRAWS = 2000
BOOTSTRAP_SEED = 0
# A paired comparison (compare, claims, robustness) of fewer images: no interval, no p-value, nothing
# distinguishable. The percentile bootstrap of a mean is too narrow on few images: on zero-mean normal differences
# its 95% interval excluded zero in 49% of 1000 trials at n = 2, 15% at 5, 9.5% at 10, 5.6% at 20 (5.7% at 50).
MIN_PAIRED = 20


def interval_settings() -> dict:
    """How every interval of a run is computed, for its manifest."""
    return {"method": "percentile bootstrap over images", "level": 0.95, "draws": BOOTSTRAP_DRAWS,
            "seed": BOOTSTRAP_SEED, "min_paired_samples": MIN_PAIRED}


def bootstrap_ci(values: np.ndarray, weights: Optional[np.ndarray] = None, draws: int = BOOTSTRAP_DRAWS,
                 seed: int = BOOTSTRAP_SEED, statistic=None) -> tuple[float, float]:
    """Percentile 95% interval of the mean of ``values`` [N] (or of sum(values)/sum(weights)) over resampled images."""
    n = len(values)
    if n < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(draws, n))
    if weights is None:
        stats = values[idx].mean(axis=1)
    else:
        stats = values[idx].sum(axis=1) / weights[idx].sum(axis=1)
    if statistic is not None:
        stats = statistic(stats)
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return float(lo), float(hi)


def summarize_depth(rows: list[dict]) -> dict[str, tuple[float, float, float]]:
    """metric -> (mean over images, ci_low, ci_high)."""
    out = {}
    for m in DEPTH_METRICS:
        v = np.array([r[m] for r in rows], dtype=np.float64)
        out[m] = (float(v.mean()), *bootstrap_ci(v))
    return out


def summarize_normals(rows: list[dict], errors: list[np.ndarray], aggregation: str) -> dict:
    """metric -> (value, ci_low, ci_high) under ``aggregation`` ("pooled" or "per_image")."""
    if aggregation == "per_image":
        return {m: (float(np.mean([r[m] for r in rows])), *bootstrap_ci(np.array([r[m] for r in rows]))) for m in
                NORMAL_METRICS}
    acc = NormalAccumulator(store_dtype=np.float32)
    for e, r in zip(errors, rows):
        acc.add(e, sample=r["id"])
    pooled = acc.pooled()
    n = np.array([r["n_valid"] for r in rows], dtype=np.float64)
    out = {"mean": (pooled["mean"], *bootstrap_ci(np.array([r["sum_err"] for r in rows]), n)),
           "median": (pooled["median"], float("nan"), float("nan")),
           "rmse": (pooled["rmse"], *bootstrap_ci(np.array([r["sum_sq_err"] for r in rows]), n, statistic=np.sqrt))}
    for k in NORMAL_THRESHOLDS:
        lo, hi = bootstrap_ci(np.array([r[f"below_{k}"] for r in rows], dtype=np.float64), n)
        out[k] = (pooled[k], 100 * lo, 100 * hi)
    return out


def groups_of(rows: list[dict]) -> dict[str, list[int]]:
    """'all' plus each non-empty group label (e.g. indoor / outdoor) -> row indices."""
    out = {"all": list(range(len(rows)))}
    for label in sorted({r.get("group", "") for r in rows} - {""}):
        out[label] = [i for i, r in enumerate(rows) if r.get("group") == label]
    return out
