"""`python -m harness ablate`: Table 3 (fine-tuning x DAN x image consistency, plus math.md's open choices) and
the bridges-from-scratch / noise-to-map baselines, evaluated from shipped checkpoints at several step counts.

Each (step count, row) is one ordinary resumable run folder (``<output>/steps<N>/<row>``); the table is assembled
from their summaries, so a killed ablation continues where it stopped, a row added later never re-runs the others,
and a new metric never re-runs a model. Every row
records its checkpoint's training budget (iterations): rows are comparable only at equal budgets, and the shipped
default DPBridge-tiny (trained longer) is printed as a reference row, never as the grid's "full" row.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd

from harness.distributed import processes
from harness.run import RESULTS_DIR, RunConfig, run
from harness.runio import atomic_write_text
from harness.tables import format_cell, header
from methods.ablation import ABLATION_VARIANTS, variant_settings

BASELINES = ("i2sb", "bbdm", "marigold_tiny")
REFERENCE = "dpbridge_tiny"  # the shipped default checkpoint (longer budget), a reference row
ABLATION_BUDGET = 1000  # iterations every grid row and baseline is trained for (`--train`)
TABLE_METRICS = ("abs_rel", "delta1")  # Table 3's columns


@dataclass(frozen=True)
class AblateConfig:
    variants: tuple[str, ...] = tuple(ABLATION_VARIANTS)
    baselines: tuple[str, ...] = BASELINES
    reference: bool = True  # also evaluate the shipped default checkpoint
    steps: tuple[int, ...] = (10, 50)
    dataset: str = "synthetic"  # the tiny world's depth test split: its indoor / outdoor groups stand in for
    #                             Table 3's NYUv2 / KITTI columns
    count: Optional[int] = None
    seed: int = 0
    batch_size: int = 8
    iterations: int = ABLATION_BUDGET  # training budget of `--train`


def method_specs(cfg: AblateConfig) -> list[str]:
    specs = [f"dpbridge_tiny[{v}]" for v in cfg.variants] + list(cfg.baselines)
    return specs + ([REFERENCE] if cfg.reference else [])


def checkpoint_of(spec: str) -> Path:
    from harness.registry import method_class, parse_method_spec

    parsed = parse_method_spec(spec)
    return method_class(spec).shipped_checkpoint("depth", parsed.option or "default")


def train_command(spec: str, iterations: int) -> str:
    from harness.registry import parse_method_spec

    parsed = parse_method_spec(spec)
    variant = f" --variant {parsed.option}" if parsed.option else ""
    return f"python -m harness train --method {parsed.name} --task depth{variant} --set iterations={iterations}"


def missing_checkpoints(cfg: AblateConfig) -> list[str]:
    return [s for s in method_specs(cfg) if not (checkpoint_of(s) / "trained_config.json").is_file()]


def regenerate(specs: list[str], iterations: int, train_settings: Optional[dict] = None) -> None:
    """Train each missing checkpoint at the ablation budget (resumable: cache/train/ablation/<row>);
    ``train_settings``: other TrainConfig fields (tests use tiny batches)."""
    from harness.trainables import trained_method_config
    from harness.registry import parse_method_spec
    from harness.train import TrainConfig, train

    for spec in specs:
        parsed = parse_method_spec(spec)
        method_cfg, export = trained_method_config(parsed.name, "depth", parsed.option, [])
        output = f"cache/train/ablation/{parsed.option or parsed.name}"
        settings = {"iterations": iterations, "output": output, "export": str(export), **(train_settings or {})}
        train(method_cfg, TrainConfig(**settings), train_command(spec, iterations), method_name=parsed.name)


def design_columns(spec: str) -> dict:
    """What a row is: fine-tuned?, DAN, image consistency, process, training budget."""
    from harness.registry import parse_method_spec

    parsed = parse_method_spec(spec)
    folder = checkpoint_of(spec)
    config = json.loads((folder / "trained_config.json").read_text())["method_config"]
    summary_path = folder / "training_summary.json"
    iterations = json.loads(summary_path.read_text())["train_config"]["iterations"] if summary_path.is_file() else None
    out = {"row": parsed.option or parsed.name, "process": parsed.name, "finetune": bool(config.get("finetune")),
           "dan": config.get("dan", "-"), "image_consistency": config.get("image_consistency", "-"),
           "train_iterations": iterations, "checkpoint": str(folder)}
    if parsed.option:
        out["about"] = ABLATION_VARIANTS[parsed.option][1]
        wanted = variant_settings(parsed.option)
        if {k: config.get(k) for k in wanted} != wanted:
            raise ValueError(f"{folder} was not trained with the settings of variant {parsed.option} ({wanted}); "
                             f"retrain it with `{train_command(spec, ABLATION_BUDGET)}`")
    else:
        out["about"] = "shipped default checkpoint (reference)" if parsed.name == REFERENCE else "baseline"
    return out


def ablate(cfg: AblateConfig, output: Optional[str] = None, train_missing: bool = False,
           progress: bool = True, train_settings: Optional[dict] = None) -> tuple[Path, pd.DataFrame]:
    """Evaluate every row at every step count; returns the folder and the tidy Table 3 rows."""
    missing = missing_checkpoints(cfg)
    if missing and not train_missing:
        lines = "\n".join(f"  {s}: {checkpoint_of(s)}  (regenerate: {train_command(s, cfg.iterations)})"
                          for s in missing)
        raise FileNotFoundError(f"{len(missing)} ablation checkpoint(s) missing:\n{lines}\nRun `python -m harness "
                                f"ablate --train` to train them ({cfg.iterations} iterations each), or choose rows "
                                f"with --variants / --baselines.")
    if missing:
        regenerate(missing, cfg.iterations, train_settings)
    folder = Path(output) if output else RESULTS_DIR / "runs" / "ablate"
    specs = method_specs(cfg)
    design = {s: design_columns(s) for s in specs}
    tables = []
    for steps in cfg.steps:
        for spec in specs:  # one run folder per row: rows added later never re-run the others
            run_cfg = RunConfig(methods=(spec,), datasets=(cfg.dataset,), steps=steps, seed=cfg.seed,
                                batch_size=cfg.batch_size, count=cfg.count)
            _, summary = run(run_cfg, str(folder / f"steps{steps}" / design[spec]["row"]), progress=progress)
            if summary is not None:  # None: launched on several processes and not the first (harness.distributed)
                tables.append(table_rows(summary, [spec], design))
    if not processes().is_main:
        return folder, None
    table = pd.concat(tables, ignore_index=True)
    atomic_write_text(folder / "table3.csv", table.to_csv(index=False))
    atomic_write_text(folder / "table3.md", render_markdown(table))
    return folder, table


def table_rows(summary: pd.DataFrame, specs: list[str], design: dict) -> pd.DataFrame:
    """Summary rows of Table 3's metrics, with the design columns of the row they belong to."""
    from harness.registry import parse_method_spec

    keep = summary[summary.metric.isin(TABLE_METRICS)].copy()
    rows = []
    for spec in specs:
        parsed = parse_method_spec(spec)
        variant = parsed.option or "default"
        part = keep[(keep.method == parsed.name) & (keep.variant == variant)]
        if part.empty:
            raise ValueError(f"the run has no rows for {spec}; its summary holds "
                             f"{sorted(set(zip(keep.method, keep.variant)))}")
        for r in part.to_dict("records"):
            rows.append({**design[spec], **{k: r[k] for k in ("dataset", "group", "steps", "metric", "value",
                                                              "ci_low", "ci_high", "n_samples", "seed", "eta",
                                                              "list_fingerprint")}})
    return pd.DataFrame(rows)


def render_markdown(table: pd.DataFrame) -> str:
    """One table per step count: rows as Table 3 (design checks), (group x metric) columns with 95% intervals."""
    parts = []
    groups = [g for g in ("all", "indoor", "outdoor") if g in set(table.group)]
    for steps, df in table.groupby("steps", sort=True):
        cols = [(g, m) for g in groups for m in TABLE_METRICS]
        head = "| row | FT | DAN | IC | iters | " + " | ".join(f"{g} {header('depth', m)}" for g, m in cols) + " |"
        lines = [head, "|---|---|---|---|---|" + "---|" * len(cols)]
        for row, cell in df.groupby("row", sort=False):
            first = cell.iloc[0]
            values = {(r.group, r.metric): format_cell("depth", r.metric, r.value, r.ci_low, r.ci_high)
                      for r in cell.itertuples()}
            lines.append(f"| {row} | {'✓' if first.finetune else '-'} | {first.dan} | {first.image_consistency} | "
                         f"{first.train_iterations} | " + " | ".join(values.get(c, "-") for c in cols) + " |")
        parts.append(f"**{steps} steps** (dataset {df.dataset.iloc[0]}, n = {int(df.n_samples.max())}, seed "
                     f"{int(df.seed.iloc[0])}, eta {df.eta.iloc[0]}; ± = half-width of the bootstrap 95% interval "
                     f"over images)\n\n" + "\n".join(lines))
    legend = "\n".join(f"- `{row}`: {about}" for row, about in
                       table.drop_duplicates("row")[["row", "about"]].itertuples(index=False))
    return "\n\n".join(parts) + "\n\nRows:\n" + legend + "\n"
