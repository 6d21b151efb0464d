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

from harness.distributed import read_rows
from harness.manifest import settings_change
from harness.metrics import DEPTH_METRICS, METRIC_INFO, NORMAL_THRESHOLDS
from harness.summary import BOOTSTRAP_DRAWS, BOOTSTRAP_SEED

# Pooled normal metrics as (numerator column, denominator column, scale): ratios of per-image sums.
POOLED_RATIOS = {"mean": ("sum_err", "n_valid", 1.0), **{k: (f"below_{k}", "n_valid", 100.0) for k in NORMAL_THRESHOLDS}}


# dataset entries of a manifest that may differ between two runs of the same images: how many were taken (the
# sample ids are compared one by one) and where the files were found
WHERE_AND_HOW_MANY = ("count", "subset_of", "root", "base", "list_origin")


def finished_manifest(folder: Path) -> dict:
    """A run's manifest; refuses a folder that is not a run, or a run that has not finished (no summary.csv)."""
    path = folder / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} holds no run (no manifest.json)")
    if not (folder / "summary.csv").is_file():
        raise ValueError(f"{folder} is an unfinished run (no summary.csv): run its command again to finish it "
                         f"before comparing")
    return json.loads(path.read_text())


def same_images(ds: str, manifest_a: dict, manifest_b: dict, run_a, run_b) -> None:
    """Refuse two runs that read ``ds`` with different settings (e.g. the tiny world's seed or size): their sample
    ids would match while their images do not."""
    a, b = ({k: v for k, v in m["datasets"][ds].items() if k not in WHERE_AND_HOW_MANY}
            for m in (manifest_a, manifest_b))
    change = settings_change(a, b)
    if change:
        raise ValueError(f"{run_a} and {run_b} read {ds} with different settings ({change}): the same sample ids "
                         f"are different images, so they cannot be paired")


def cell_settings(manifest: dict, cell: str) -> dict:
    """What produced a cell's numbers, as compare's columns name them."""
    described = manifest["methods"][cell]
    return {"steps": described.get("steps", 0), "seed": manifest.get("seed"), "eta": described.get("eta", 0.0),
            "checkpoint": described.get("checkpoint", "-"), "dtype": manifest.get("dtype")}


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
    """One row per (dataset, metric): both values, B - A with its paired interval, and the settings of each side
    (run folder, steps, seed, eta, checkpoint, dtype). Both runs must be finished and have read the same images."""
    manifest_a, manifest_b = finished_manifest(Path(run_a)), finished_manifest(Path(run_b))
    cells_a, cells_b = run_cells(Path(run_a)), run_cells(Path(run_b))
    datasets = sorted({d for _, d in cells_a} & {d for _, d in cells_b})
    if not datasets:
        raise ValueError(f"{run_a} and {run_b} share no dataset")
    manifest = manifest_a
    rows = []
    for ds in datasets:
        same_images(ds, manifest_a, manifest_b, run_a, run_b)
        fa, fb = pick(cells_a, method_a, ds, run_a), pick(cells_b, method_b, ds, run_b)
        sides = {f"{k}_{side}": v for side, m, f in (("a", manifest_a, fa), ("b", manifest_b, fb))
                 for k, v in {"run": f.parent.name, **cell_settings(m, f.name)}.items()}
        a = pd.DataFrame([r for r in read_rows(fa) if not r.get("failed")]).set_index("id")
        b = pd.DataFrame([r for r in read_rows(fb) if not r.get("failed")]).set_index("id")
        common = a.index.intersection(b.index)
        if len(common) < len(a) or len(common) < len(b):
            raise ValueError(f"{ds}: the runs scored different samples ({len(a)} vs {len(b)}, {len(common)} shared); "
                             f"paired comparison needs the same sample list")
        protocol = manifest["datasets"][ds]["protocol"]
        task, aggregation = protocol["task"], protocol.get("normals_aggregation", "pooled")
        for r in paired_difference(a.loc[common], b.loc[common], task, aggregation):
            rows.append({"dataset": ds, "method_a": fa.name.split("__")[0], "method_b": fb.name.split("__")[0],
                         "n_samples": len(common), **r, **sides})
    return pd.DataFrame(rows)
