"""A robustness study's clean cells taken from a finished `run` of more methods, instead of predicted again.

`python -m harness run` (five methods by default) and `python -m harness robustness` (DPBridge-tiny alone) have
different run keys, so their folders differ. A clean cell the study lacks, ``<method>__<dataset>/``, is copied from
a finished run folder under ``results/runs/`` whose settings are the study's but for the method list, and whose
manifest describes that cell and its dataset exactly as the study's does (weights fingerprint, steps, sample list,
batch size...): the same samples in the same batches from the same generators, so the copied predictions are
the ones the study would have made. The copy records where it came from (``copied_from.json`` in the cell).
"""
from __future__ import annotations

import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Optional

from harness import run as run_module
from harness.distributed import ROWS, processes
from harness.runio import atomic_write_text

COPIED_FROM = "copied_from.json"


def key_without_methods(config: dict):
    """The run key of a manifest's config once its method list is left out (None: not a run's config)."""
    try:
        return run_module.config_key(run_module.recorded_config({**config, "methods": ()}))
    except (KeyError, TypeError):
        return None


def finished_runs(cfg, root: Path, folder: Path) -> list[tuple[Path, dict]]:
    """(folder, manifest) of the finished runs (summary.csv written) under ``root`` that differ from ``cfg`` at
    most in their methods, by folder name; ``folder`` itself is left out."""
    mine, found = run_module.config_key(replace(cfg, methods=())), []
    for path in sorted(root.glob("*/manifest.json")) if root.is_dir() else []:
        if path.parent.resolve() == folder.resolve() or not (path.parent / "summary.csv").is_file():
            continue
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if key_without_methods(manifest.get("config", {})) == mine:
            found.append((path.parent, manifest))
    return found


def as_json(value):
    """``value`` as it reads back from a manifest (tuples become lists), so entries compare like with like."""
    return json.loads(json.dumps(value))


def describes_the_same_cell(record: dict, manifest: dict, cell: str, dataset: str) -> bool:
    """The two manifests give the cell (method settings, weights) and its dataset (sample list) the same entries."""
    return (cell in manifest.get("methods", {}) and manifest["methods"][cell] == as_json(record["methods"][cell])
            and manifest.get("datasets", {}).get(dataset) == as_json(record["datasets"][dataset]))


def donor_of(cell: str, dataset: str, donors: list[tuple[Path, dict]], record: dict):
    """(run folder, manifest) of the first donor that holds scored rows of ``cell`` described as ``record`` does."""
    return next(((run, manifest) for run, manifest in donors
                 if describes_the_same_cell(record, manifest, cell, dataset) and has_rows(run / cell)), None)


def copy_clean_cells(cfg, plan, record: dict, folder: Path, root: Optional[Path] = None,
                     progress: bool = True) -> list[str]:
    """Copy every clean cell of ``plan`` that ``folder`` lacks from a finished run under ``root`` (None:
    results/runs; the first run, by name, that describes the cell the same); returns the cells copied. The first
    process copies, the others wait."""
    copied = []
    if processes().is_main:
        donors = finished_runs(cfg, root if root is not None else run_module.RESULTS_DIR / "runs", folder)
        for ds, pairs in plan:
            for pair in (p for p in pairs if p.noise is None and is_empty(p.folder)):
                found = donor_of(pair.folder.name, ds.name, donors, record)
                if found is None:
                    continue
                run, manifest = found
                copy_cell(run / pair.folder.name, pair.folder, manifest.get("git_commit"))
                copied.append(pair.folder.name)
                if progress:
                    print(f"{pair.folder.name}: clean predictions copied from {run}", file=sys.stderr)
    processes().barrier()
    return copied


def is_empty(cell: Path) -> bool:
    """Nothing predicted or scored there yet (absent, or an empty folder)."""
    return not cell.exists() or not any(cell.iterdir())


def has_rows(cell: Path) -> bool:
    return (cell / ROWS).is_file() and (cell / ROWS).stat().st_size > 0


def copy_cell(source: Path, target: Path, commit=None) -> None:
    """Copy a cell folder whole, then move it into place: a kill leaves no half cell (only a hidden partial copy,
    replaced by the next try). ``commit``: the source run's recorded git commit, kept with the copy."""
    partial = target.with_name(f".{target.name}.copying")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial)
    origin = {"run": str(source.parent), "cell": source.name, "git_commit": commit}
    atomic_write_text(partial / COPIED_FROM, json.dumps(origin) + "\n")
    if target.exists():  # empty (is_empty): nothing is lost
        target.rmdir()
    partial.rename(target)
