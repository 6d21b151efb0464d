"""`python -m harness compare RUN_A RUN_B`: paired differences (B - A) per metric with bootstrap 95% intervals.

Samples are paired by (dataset, sample id), so the interval reflects how the two methods differ on the same
images, which is much tighter than comparing two unpaired intervals. A difference is called distinguishable from
zero when its interval excludes 0; with fewer than 2 shared samples there is no interval (NaN) and nothing is
distinguishable. Each row also has a two-sided ``p_value`` from the same bootstrap and ``p_holm``, Holm's
adjustment over every row of the comparison (harness.multiplicity): ``distinguishable_holm`` keeps the chance of
any false "distinguishable" among them under 5%. Pooled normals give mean, rmse and the thresholds as ratios of
per-image sums; their median cannot be pooled from per-image rows and is left out. The ``unit`` column gives each
metric's raw unit (depth's AbsRel and delta are fractions, which papers print x100; normals' thresholds are
percent).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from harness.distributed import read_rows
from harness.evaluate import SIZE_FIT_BEFORE_OPTION
from harness.manifest import settings_change
from harness.metrics import DEPTH_METRICS, METRIC_INFO, NORMAL_THRESHOLDS
from harness.multiplicity import two_sided_p, with_holm
from harness.runio import read_json_object
from harness.summary import BOOTSTRAP_DRAWS, BOOTSTRAP_SEED, MIN_PAIRED, groups_of

RUN_FOLDER_FIX = "the run cannot be read; run its command again with a new --output"

# Pooled normal metrics as (numerator column, denominator column, scale, then): then(scale * ratio of per-image sums)
POOLED_RATIOS = {"mean": ("sum_err", "n_valid", 1.0, None), "rmse": ("sum_sq_err", "n_valid", 1.0, np.sqrt),
                 **{k: (f"below_{k}", "n_valid", 100.0, None) for k in NORMAL_THRESHOLDS}}


# dataset entries of a manifest that may differ between two runs of the same images: how many were taken (the
# sample ids are compared one by one) and where the files were found
WHERE_AND_HOW_MANY = ("count", "subset_of", "subset_of_fingerprint", "root", "base", "list_origin", "list_fingerprint")


# what the terminal shows; settings_lines names the rest
RESULT_COLUMNS = ("dataset", "group", "method_a", "method_b", "n_samples", "metric", "unit", "a", "b", "b_minus_a",
                  "ci_low", "ci_high", "distinguishable", "p_value", "p_holm", "distinguishable_holm")


def settings_lines(table: pd.DataFrame) -> list[str]:
    """Each side's settings in a few lines: those both sides share once, then those that differ (A -> B)."""
    names = [c[:-2] for c in table.columns if c.endswith("_a") and f"{c[:-2]}_b" in table and c != "method_a"]
    shared, differ = [], []
    for name in names:
        a, b = (", ".join(sorted({str(v) for v in table[f"{name}_{side}"]})) for side in "ab")
        (shared if a == b else differ).append(f"{name} {a}" if a == b else f"{name}: {a} -> {b}")
    return ["settings of both sides: " + "; ".join(shared)] + (["settings that differ (A -> B): " + "; ".join(differ)]
                                                                if differ else [])


def finished_manifest(folder: Path) -> dict:
    """A run's manifest; refuses a folder that is not a run, or a run that has not finished (no summary.csv)."""
    path = folder / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} holds no run (no manifest.json)")
    if not (folder / "summary.csv").is_file():
        raise ValueError(f"{folder} is an unfinished run (no summary.csv): run its command again to finish it "
                         f"before comparing")
    return read_json_object(path, RUN_FOLDER_FIX)


def same_images(ds: str, manifest_a: dict, manifest_b: dict, run_a, run_b) -> None:
    """Refuse two runs that read ``ds`` with different settings (e.g. the tiny world's seed or size): their sample
    ids would match while their images do not."""
    a, b = ({k: v for k, v in m["datasets"][ds].items() if k not in WHERE_AND_HOW_MANY}
            for m in (manifest_a, manifest_b))
    change = settings_change(a, b)
    if change:
        raise ValueError(f"{run_a} and {run_b} read {ds} with different settings ({change}): the same sample ids "
                         f"are different images, so they cannot be paired")


def cell_settings(manifest: dict, cell: str, dataset: str) -> dict:
    """What produced a cell's numbers, as compare's columns name them ("-" where the manifest predates a field)."""
    described = manifest["methods"][cell]
    return {"variant": described.get("variant", "default"), "steps": described.get("steps", 0),
            "seed": manifest.get("seed"), "eta": described.get("eta", 0.0),
            "ensemble_size": described.get("ensemble_size", 1), "checkpoint": described.get("checkpoint", "-"),
            "weights_fingerprint": described.get("weights_fingerprint", "-"), "dtype": manifest.get("dtype"),
            "device": manifest.get("device", "-"), "processing_res": described.get("processing_res", "-"),
            "alignment": described.get("alignment", "-"),
            "size_fit": manifest.get("config", {}).get("size_fit", SIZE_FIT_BEFORE_OPTION),
            "list_fingerprint": manifest["datasets"][dataset].get("list_fingerprint", "-"),
            "git_commit": manifest.get("git_commit", "-")}  # the code as the run folder was started


def run_cells(folder: Path) -> dict[tuple[str, str], Path]:
    """(method, dataset) -> cell folder of a run."""
    manifest = read_json_object(folder / "manifest.json", RUN_FOLDER_FIX)
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
            out.append(_row(task, m, a[m].mean(), b[m].mean(), d.mean(), d[idx].mean(1), n))
        return out
    for m, (num, den, scale, then) in POOLED_RATIOS.items():
        if num not in a or num not in b:  # rows scored before the column was recorded
            continue
        then = then or (lambda x: x)
        na, nb = a[num].to_numpy(float), b[num].to_numpy(float)
        da, db = a[den].to_numpy(float), b[den].to_numpy(float)
        va, vb = then(scale * na.sum() / da.sum()), then(scale * nb.sum() / db.sum())
        boot = then(scale * nb[idx].sum(1) / db[idx].sum(1)) - then(scale * na[idx].sum(1) / da[idx].sum(1))
        out.append(_row(task, m, va, vb, vb - va, boot, n))
    return out


def _row(task, metric, va, vb, diff, boot, n: int) -> dict:
    """One metric's comparison; fewer than MIN_PAIRED samples give no interval and nothing distinguishable."""
    lo, hi = np.percentile(boot, [2.5, 97.5]) if n >= MIN_PAIRED else (np.nan, np.nan)
    info = METRIC_INFO[task][metric]
    unit = info.unit or ("fraction (papers print x100)" if info.paper_x100 else "-")
    return {"metric": metric, "unit": unit, "a": float(va), "b": float(vb), "b_minus_a": float(diff),
            "ci_low": float(lo), "ci_high": float(hi), "distinguishable": bool(lo > 0 or hi < 0),
            "p_value": two_sided_p(float(diff), boot) if n >= MIN_PAIRED else float("nan")}


def compare(run_a: Path, run_b: Path, method_a: Optional[str] = None, method_b: Optional[str] = None) -> pd.DataFrame:
    """One row per (dataset, group, metric): both values, B - A with its paired interval, and the settings of each
    side (run folder, cell_settings); the groups are "all" and each sample group (e.g. indoor / outdoor), as in the
    summary. Both runs must be finished and have read the same images. A shared dataset on
    which a named method did not run (it serves another task) is left out and listed in ``table.attrs["skipped"]``."""
    manifest_a, manifest_b = finished_manifest(Path(run_a)), finished_manifest(Path(run_b))
    cells_a, cells_b = run_cells(Path(run_a)), run_cells(Path(run_b))
    datasets = sorted({d for _, d in cells_a} & {d for _, d in cells_b})
    if not datasets:
        raise ValueError(f"{run_a} and {run_b} share no dataset")
    manifest = manifest_a
    rows, skipped = [], []
    for ds in datasets:
        same_images(ds, manifest_a, manifest_b, run_a, run_b)
        named = ((method_a, cells_a, run_a), (method_b, cells_b, run_b))
        absent = [f"{m} not in {run} there" for m, cells, run in named
                  if m is not None and (m, ds) not in cells and any(c == m for c, _ in cells)]
        if absent:  # a named method that serves another task of the runs (e.g. a depth-only one beside normals)
            skipped.append(f"{ds} ({'; '.join(absent)})")
            continue
        fa, fb = pick(cells_a, method_a, ds, run_a), pick(cells_b, method_b, ds, run_b)
        sides = {f"{k}_{side}": v for side, m, f in (("a", manifest_a, fa), ("b", manifest_b, fb))
                 for k, v in {"run": str(f.parent), **cell_settings(m, f.name, ds)}.items()}
        a = pd.DataFrame([r for r in read_rows(fa) if not r.get("failed")]).set_index("id")
        b = pd.DataFrame([r for r in read_rows(fb) if not r.get("failed")]).set_index("id")
        common = a.index.intersection(b.index).sort_values()  # the resampling does not follow the rows' write order
        if len(common) < len(a) or len(common) < len(b):
            raise ValueError(f"{ds}: the runs scored different samples ({len(a)} vs {len(b)}, {len(common)} shared); "
                             f"paired comparison needs the same sample list")
        protocol = manifest["datasets"][ds]["protocol"]
        task, aggregation = protocol["task"], protocol.get("normals_aggregation", "pooled")
        shared = a.loc[common]
        labels = shared["group"].fillna("").astype(str) if "group" in shared else pd.Series("", index=common)
        for group, idx in groups_of([{"group": g} for g in labels]).items():
            ids = common[idx]
            for r in paired_difference(a.loc[ids], b.loc[ids], task, aggregation):
                rows.append({"dataset": ds, "group": group, "method_a": fa.name.split("__")[0],
                             "method_b": fb.name.split("__")[0], "n_samples": len(ids), **r, **sides})
    if not rows:
        raise ValueError(f"{run_a} and {run_b}: no shared dataset has both methods (skipped: {', '.join(skipped)})")
    table = with_holm(pd.DataFrame(rows))
    table.attrs["skipped"] = skipped  # shared datasets left out, each with why
    return table
