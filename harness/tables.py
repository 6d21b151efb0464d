"""Tidy rows -> Markdown: one table per task, methods as rows, (dataset, group) x metrics as columns."""
from __future__ import annotations

import math

import pandas as pd

from harness.metrics import METRIC_INFO

KEY_METRICS = {"depth": ("abs_rel", "delta1"), "normals": ("mean", "median", "a11_25", "a22_5", "a30")}


def format_cell(task: str, metric: str, value: float, lo: float, hi: float) -> str:
    """Value as papers print it (AbsRel and delta x100), with the half-width of its 95% interval."""
    info = METRIC_INFO[task][metric]
    k = 100.0 if info.paper_x100 else 1.0
    text = f"{value * k:.1f}"
    if not (math.isnan(lo) or math.isnan(hi)):
        text += f" ±{(hi - lo) * k / 2:.1f}"
    return text


def header(task: str, metric: str) -> str:
    info = METRIC_INFO[task][metric]
    arrow = "↓" if info.direction == "lower" else "↑"
    return f"{info.label}{' ×100' if info.paper_x100 else ''} {arrow}"


def markdown_tables(summary: pd.DataFrame) -> str:
    """One Markdown table per (task, aggregation): a row per (method, dataset, group), key metrics as columns.

    A "missing" column (samples without a saved prediction, on the dataset's "all" row) appears when any row of
    the table has some (``--allow-missing``), and a "failed" column likewise for samples recorded as failed
    (``--continue-on-error``). Below each table: the sample lists and the settings behind its numbers.
    """
    parts = []
    for (task, aggregation), df in summary.groupby(["task", "aggregation"], sort=False):
        metrics = [m for m in KEY_METRICS[task] if m in set(df["metric"])]
        counted = [c for c in ("n_missing", "n_failed") if c in df and bool((df[c] > 0).any())]
        extra = "".join(f" {c[2:]} |" for c in counted)
        lines = [f"| method | dataset | subset | n |{extra} steps | " + " | ".join(header(task, m) for m in metrics)
                 + " |", "|---|---|---|---|" + "---|" * (len(counted) + 1 + len(metrics))]
        keys = ["method", "variant", "dataset", "group", "steps"]
        for (method, variant, dataset, group, steps), cell in df.groupby(keys, sort=False):
            values = {r.metric: format_cell(task, r.metric, r.value, r.ci_low, r.ci_high) for r in cell.itertuples()}
            label = method if variant == "default" else f"{method} [{variant}]"
            members = int(cell["ensemble_size"].iloc[0]) if "ensemble_size" in cell else 1
            label += f" (mean of {members} samples)" if members > 1 else ""
            gone = "".join(f" {cell[c].iloc[0] if group == 'all' else '-'} |" for c in counted)
            lines.append(f"| {label} | {dataset} | {group} | {cell['n_samples'].iloc[0]} |{gone} {steps or '-'} | "
                         + " | ".join(values.get(m, "-") for m in metrics) + " |")
        align = ", ".join(sorted(set(df["alignment"])))
        parts.append(f"**{task}** (aggregation: {aggregation}; alignment: {align}; ± = half-width of the percentile "
                     f"bootstrap 95% interval over images)\n\n" + "\n".join(lines) + list_note(df) + settings_note(df))
    return "\n\n".join(parts) + "\n"


def settings_note(df: pd.DataFrame) -> str:
    """Lines naming the settings behind a table's numbers (every row of summary.csv has them): those its rows
    share (size_fit: how the processing size met the network's multiple), then each method's checkpoint and
    processing resolution."""
    shared = [f"{col} {', '.join(sorted({_setting(v) for v in df[col]}))}"
              for col in ("seed", "eta", "dtype", "device", "size_fit") if col in df]
    methods = []
    cols = [c for c in ("method", "variant", "checkpoint", "processing_res") if c in df]
    for r in df[cols].drop_duplicates().to_dict("records"):
        label = r["method"] if r.get("variant", "default") == "default" else f"{r['method']} [{r['variant']}]"
        where = f" `{r['checkpoint']}`" if str(r.get("checkpoint", "-")) not in ("-", "nan") else ""
        res = r.get("processing_res")
        size = "" if res is None else (" at native size" if int(res) == 0 else f" at {int(res)} px")
        methods.append(label + where + size)
    return ("\n\nsettings: " + "; ".join(shared) if shared else "") + (
        "\n\nmethods (checkpoint, long side processed): " + "; ".join(methods) if methods else "")


def _setting(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def list_note(df: pd.DataFrame) -> str:
    """A line naming each dataset's sample-list fingerprint (protocol.md), so a table says which list it used."""
    if "list_fingerprint" not in df:
        return ""
    with_split = df if "split" in df else df.assign(split="test")
    pairs = with_split[["dataset", "list_fingerprint", "split"]].drop_duplicates()
    # a split other than the benchmark's test split is named (tuning runs on the tiny world's val split)
    return "\n\nsample lists (fingerprint): " + ", ".join(
        f"{d} `{f}`" + ("" if s == "test" else f" ({s} split)") for d, f, s in pairs.itertuples(index=False))
