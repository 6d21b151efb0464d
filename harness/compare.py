"""`python -m harness compare RUN_A RUN_B`: paired differences (B - A) per metric with bootstrap 95% intervals.

Samples are paired by (dataset, sample id), so the interval reflects how the two methods differ on the same
images, which is much tighter than comparing two unpaired intervals. A difference is called distinguishable from
zero when its interval excludes 0.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from harness.metrics import DEPTH_METRICS, METRIC_INFO, NORMAL_THRESHOLDS
from harness.runio import read_jsonl
from harness.summary import BOOTSTRAP_DRAWS, BOOTSTRAP_SEED

# Pooled normal metrics as (numerator column, denominator column, scale): ratios of per-image sums.
POOLED_RATIOS = {"mean": ("sum_err", "n_valid", 1.0), **{k: (f"below_{k}", "n_valid", 100.0) for k in NORMAL_THRESHOLDS}}


def run_cells(folder: Path) -> dict[tuple[str, str], Path]:
    """(method, dataset) -> cell folder of a run."""
    manifest = json.loads((folder / "manifest.json").read_text())
    cells = {}
    for key in manifest["methods"]:
        method, _, dataset = key.partition("__")
        cells[(method, dataset)] = folder / key
    return cells


def pick(cells: dict, method: Optional[str], dataset: str, run: Path) -> Path:
    options = [m for (m, d) in cells if d == dataset and (method is None or m == method)]
    if len(options) != 1:
        raise ValueError(f"{run}: {len(options)} methods on {dataset} match; name one with --method-a/--method-b "
                         f"(present: {sorted(m for (m, d) in cells if d == dataset)})")
    return cells[(options[0], dataset)]


def paired_difference(a: pd.DataFrame, b: pd.DataFrame, task: str, aggregation: str = "pooled") -> list[dict]:
    """a, b: per-sample rows indexed by sample id (same ids). One dict per metric."""
    n = len(a)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    idx = rng.integers(0, n, size=(BOOTSTRAP_DRAWS, n))
    out = []
    if task == "depth" or aggregation == "per_image":
        metrics = DEPTH_METRICS if task == "depth" else [m for m in METRIC_INFO["normals"]]
        for m in metrics:
            d = b[m].to_numpy(float) - a[m].to_numpy(float)
            out.append(_row(m, a[m].mean(), b[m].mean(), d.mean(), d[idx].mean(1)))
        return out
    for m, (num, den, scale) in POOLED_RATIOS.items():
        na, nb = a[num].to_numpy(float), b[num].to_numpy(float)
        da, db = a[den].to_numpy(float), b[den].to_numpy(float)
        va, vb = scale * na.sum() / da.sum(), scale * nb.sum() / db.sum()
        boot = scale * (nb[idx].sum(1) / db[idx].sum(1) - na[idx].sum(1) / da[idx].sum(1))
        out.append(_row(m, va, vb, vb - va, boot))
    return out


def _row(metric, va, vb, diff, boot) -> dict:
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"metric": metric, "a": float(va), "b": float(vb), "b_minus_a": float(diff), "ci_low": float(lo),
            "ci_high": float(hi), "distinguishable": bool(lo > 0 or hi < 0)}


def compare(run_a: Path, run_b: Path, method_a: Optional[str] = None, method_b: Optional[str] = None) -> pd.DataFrame:
    cells_a, cells_b = run_cells(Path(run_a)), run_cells(Path(run_b))
    datasets = sorted({d for _, d in cells_a} & {d for _, d in cells_b})
    if not datasets:
        raise ValueError(f"{run_a} and {run_b} share no dataset")
    manifest = json.loads((Path(run_a) / "manifest.json").read_text())
    rows = []
    for ds in datasets:
        fa, fb = pick(cells_a, method_a, ds, run_a), pick(cells_b, method_b, ds, run_b)
        a = pd.DataFrame([r for r in read_jsonl(fa / "rows.jsonl") if not r.get("failed")]).set_index("id")
        b = pd.DataFrame([r for r in read_jsonl(fb / "rows.jsonl") if not r.get("failed")]).set_index("id")
        common = a.index.intersection(b.index)
        if len(common) < len(a) or len(common) < len(b):
            raise ValueError(f"{ds}: the runs scored different samples ({len(a)} vs {len(b)}, {len(common)} shared); "
                             f"paired comparison needs the same sample list")
        protocol = manifest["datasets"][ds]["protocol"]
        task, aggregation = protocol["task"], protocol.get("normals_aggregation", "pooled")
        for r in paired_difference(a.loc[common], b.loc[common], task, aggregation):
            rows.append({"dataset": ds, "method_a": fa.name.split("__")[0], "method_b": fb.name.split("__")[0],
                         "n_samples": len(common), **r})
    return pd.DataFrame(rows)
