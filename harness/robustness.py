"""`python -m harness robustness`: Table 4, the methods under input noise, beside their clean scores.

A robustness study is a run (harness.run) with extra cells: for every (method, dataset) pair, one cell per noise
condition, its predictions cached under ``<method>__<dataset>__<noise>-<level>/`` beside the clean cell
``<method>__<dataset>/``. The study uses the run folder of the same settings (``results/runs/run-<key>``, or
``--output``), so clean predictions made by ``run`` with the same settings, or by an earlier study with other
noises, are reused, and only missing cells are computed; a clean cell the folder lacks is copied from a finished
run of the same settings but more methods (harness.clean_cells), such as the default `run`'s. Written into that
folder:

    robustness.json       the conditions evaluated so far (noise, level, parameter) and the seeding rule; a later
                          study in the folder adds its conditions, and its tables list them all
    robustness.csv        tidy summary rows (perturbation, level columns), readable by `python -m harness tables`
    table4.csv, table4.md one row per (method, noise, level) plus the clean row, key metrics per dataset
    table4.png            key metric against level, one panel per (dataset, noise)
    paired.csv            noisy minus clean on the same images, per key metric: the per-image mean difference
                          and its paired bootstrap 95% interval (``distinguishable`` when it excludes 0), its
                          p-value and Holm's adjustment over every row of the file (``distinguishable_holm``)
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Optional

import pandas as pd

from harness.clean_cells import copy_clean_cells
from harness.distributed import gather
from harness.evaluate import evaluate_pairs
from harness.perturb import Condition
from harness.run import (RunConfig, build_plan, claim_folder, forget_rows_to_redo, manifest_record, output_folder,
                         summarize_run)
from harness.runio import atomic_write_text
from harness.tables import format_cell, header, list_note, settings_note

TABLE_METRICS = {"depth": ("abs_rel", "delta1"), "normals": ("mean", "a11_25")}  # the paper's Table 4 columns
DEFAULT_METHODS = ("dpbridge_tiny",)  # the trivial references ignore their input: noise cannot move them


def robustness(cfg: RunConfig, conditions: list[Condition], output: Optional[str] = None, progress: bool = True,
               roots=None, donors: Optional[Path] = None) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    """Evaluate clean and every condition; returns the folder, the tidy summary and the Table 4 layout.
    ``roots``: dataset roots for benchmarks read from files (harness.dataroots), as for `run`. ``donors``: where
    finished runs of more methods are looked for, whose clean cells are copied (harness.clean_cells; None:
    results/runs)."""
    folder = output_folder(cfg, output)
    plan = build_plan(cfg, folder, roots)
    saved = sorted({p.method.name for _, pairs in plan for p in pairs if p.method.reads_saved_predictions})
    if saved:
        raise ValueError(f"{', '.join(saved)}: saved predictions cannot be re-made from noisy inputs; a "
                         f"robustness study needs methods that predict (drop them from --methods)")
    conditions = earlier_conditions(folder, conditions) + conditions  # read by every process before any writes
    record = manifest_record(cfg, plan)
    claim_folder(folder, record)
    copy_clean_cells(cfg, plan, record, folder, donors, progress)
    full = [(ds, pairs + [replace(p, folder=p.folder.with_name(f"{p.folder.name}__{c.label}"), noise=c)
                          for c in conditions for p in pairs]) for ds, pairs in plan]
    forget_rows_to_redo(full, cfg.retry_failed)
    for ds, pairs in full:  # each sample is loaded once per batch for its clean and noisy cells
        evaluate_pairs(pairs, ds, cfg.seed, cfg.batch_size, progress=progress)
    if not gather(folder, [(p.folder, ds.ids()) for ds, pairs in full for p in pairs]):
        return folder, None, None  # launched on several processes (harness.distributed): the first summarises
    record_conditions(folder, conditions, cfg.seed)
    summary = summarize_run(cfg, full)
    atomic_write_text(folder / "robustness.csv", summary.to_csv(index=False))
    table = table4(summary, conditions)
    atomic_write_text(folder / "table4.csv", table.to_csv(index=False))
    atomic_write_text(folder / "table4.md", table4_markdown(summary, conditions))
    from harness.plots import plot_robustness

    plot_robustness(summary, conditions, TABLE_METRICS, folder / "table4.png")
    atomic_write_text(folder / "paired.csv", paired_to_clean(full).to_csv(index=False))
    return folder, summary, table


def earlier_conditions(folder: Path, conditions: list[Condition]) -> list[Condition]:
    """The conditions an earlier study evaluated in this folder (robustness.json) that ``conditions`` lacks: Table
    4 and robustness.csv list every condition of the folder, their cached cells scored again, not re-predicted."""
    path = folder / "robustness.json"
    if not path.is_file():
        return []
    from harness.perturb import perturbation

    labels, recorded = {c.label for c in conditions}, []
    for entry in json.loads(path.read_text())["conditions"]:
        try:
            recorded.append(Condition(entry["noise"], perturbation(entry["noise"]).check(entry["level"])))
        except (KeyError, ValueError) as err:
            raise ValueError(f"{path} lists condition {entry.get('label')!r}, which is not valid now ({err}); remove "
                             f"it from that file, or choose another --output") from None
    return [c for c in recorded if c.label not in labels]


def paired_to_clean(full) -> pd.DataFrame:
    """Noisy minus clean over the images both cells scored (TABLE_METRICS, per-image means, paired bootstrap), with
    p-values Holm-adjusted over all of its rows (harness.multiplicity)."""
    from harness.compare import paired_difference
    from harness.multiplicity import with_holm

    records = []
    for ds, pairs in full:
        clean = {p.folder.name: p for p in pairs if p.noise is None}
        for pair in (p for p in pairs if p.noise is not None):
            base = clean[pair.folder.name[: -len(f"__{pair.noise.label}")]]
            a, b = _scored_rows(base.folder), _scored_rows(pair.folder)
            ids = a.index.intersection(b.index)
            task = ds.spec.task
            for row in paired_difference(a.loc[ids], b.loc[ids], task, "per_image"):
                if row["metric"] in TABLE_METRICS[task]:
                    records.append({"method": pair.method.name, "variant": getattr(pair.method, "variant", "default"),
                                    "dataset": ds.name, "task": task, "noise": pair.noise.name,
                                    "level": pair.noise.level, "n_samples": len(ids), "aggregation": "per_image",
                                    **row})
    return with_holm(pd.DataFrame(records))


def _scored_rows(folder: Path) -> pd.DataFrame:
    """A cell's per-sample rows that were scored (failed samples left out), indexed by sample id, sorted."""
    from harness.distributed import read_rows
    from harness.failures import is_failed

    return pd.DataFrame([r for r in read_rows(folder) if not is_failed(r)]).set_index("id").sort_index()


def record_conditions(folder: Path, conditions: list[Condition], seed: int) -> None:
    """Write the conditions evaluated in this folder (earlier studies' first: ``earlier_conditions``) to
    robustness.json, once their cells are complete."""
    path = folder / "robustness.json"
    record = {"conditions": [{"label": c.label, **c.describe()} for c in conditions], "seed": seed,
              "seeding": "numpy default_rng(harness.perturb.noise_seed(seed, noise, sample_id)); the same for "
                         "every level of a noise (common random numbers)",
              "applied": "to the uint8 RGB at the dataset's native resolution, on the [0,1] scale, clipped to "
                         "[0,1] and rounded back to uint8, before resizing to the processing resolution"}
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def level_label(noise: str, level: float) -> str:
    return "clean" if noise == "none" else Condition(noise, level).table_label


def _rows(summary: pd.DataFrame, conditions: list[Condition]):
    """(method label, steps, noise, level, cells) in table order: per method, clean then the conditions."""
    df = summary[summary["group"] == "all"]
    order = [("none", 0.0)] + [(c.name, c.level) for c in conditions]
    for (method, variant, steps), cells in df.groupby(["method", "variant", "steps"], sort=False):
        label = method if variant == "default" else f"{method} [{variant}]"
        for noise, level in order:
            sel = cells[(cells["perturbation"] == noise) & ((cells["level"].astype(float) - level).abs() < 1e-12)]
            yield label, steps, noise, level, sel


def _columns(summary: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(dataset, task, metric) in the summary's dataset order."""
    out = []
    for dataset, task in summary[["dataset", "task"]].drop_duplicates().itertuples(index=False):
        out += [(dataset, task, m) for m in TABLE_METRICS[task]]
    return out


def table4(summary: pd.DataFrame, conditions: list[Condition]) -> pd.DataFrame:
    """Wide Table 4: one row per (method, noise, level); per (dataset, metric) the value and its 95% interval,
    in the paper's units (AbsRel and delta1 x100, degrees, percent)."""
    from harness.metrics import METRIC_INFO

    columns, records = _columns(summary), []
    for label, steps, noise, level, sel in _rows(summary, conditions):
        record = {"method": label, "steps": steps, "noise": noise, "level": level,
                  "level_label": level_label(noise, level), **row_settings(sel)}
        for dataset, task, metric in columns:
            hit = sel[(sel["dataset"] == dataset) & (sel["metric"] == metric)]
            k = 100.0 if METRIC_INFO[task][metric].paper_x100 else 1.0
            for suffix, field in (("", "value"), (" ci_low", "ci_low"), (" ci_high", "ci_high")):
                record[f"{dataset} {metric}{suffix}"] = float(hit[field].iloc[0]) * k if len(hit) else float("nan")
        records.append(record)
    return pd.DataFrame(records)


SHARED_SETTINGS = ("seed", "eta", "ensemble_size", "dtype", "device", "size_fit")
PER_DATASET_SETTINGS = {"checkpoint": "checkpoints", "processing_res": "processing_res", "alignment": "alignment",
                        "aggregation": "aggregation", "list_fingerprint": "list_fingerprint"}  # summary -> table column


def row_settings(cells: pd.DataFrame) -> dict:
    """The settings behind one Table 4 row: the summary columns its cells share, and those of each dataset named
    per dataset ("synthetic: 64; synthetic_normals: 64")."""
    out = {col: ", ".join(sorted({str(v) for v in cells[col]})) for col in SHARED_SETTINGS if col in cells}
    for col, name in PER_DATASET_SETTINGS.items():
        if col in cells:
            pairs = cells[["dataset", col]].drop_duplicates().itertuples(index=False)
            out[name] = "; ".join(f"{d}: {v}" for d, v in pairs)
    return out


def table4_markdown(summary: pd.DataFrame, conditions: list[Condition]) -> str:
    columns = _columns(summary)
    head = "| method | steps | noise | level | " + " | ".join(f"{d} {header(t, m)}" for d, t, m in columns) + " |"
    lines = [head, "|---|---|---|---|" + "---|" * len(columns)]
    for label, steps, noise, level, sel in _rows(summary, conditions):
        cells = []
        for dataset, task, metric in columns:
            hit = sel[(sel["dataset"] == dataset) & (sel["metric"] == metric)]
            cells.append("-" if hit.empty else format_cell(task, metric, *hit[["value", "ci_low", "ci_high"]].iloc[0]))
        lines.append(f"| {label} | {steps or '-'} | {noise if noise != 'none' else 'clean'} | "
                     f"{level_label(noise, level)} | " + " | ".join(cells) + " |")
    everything = summary[summary["group"] == "all"]
    n = int(everything["n_samples"].min()) if len(summary) else 0
    return (f"**Table 4: robustness to input noise** (n = {n} images per cell; ± = half-width of the bootstrap 95% "
            f"interval over images; noise on the [0,1] RGB scale, math.md section 6)\n\n" + "\n".join(lines)
            + list_note(everything) + settings_note(everything) + "\n")
