"""PNG figures of the robustness and latency studies (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from harness.metrics import METRIC_INFO  # noqa: E402
from harness.runio import atomic_save_figure  # noqa: E402


def _axis_label(task: str, metric: str) -> str:
    info = METRIC_INFO[task][metric]
    arrow = "lower" if info.direction == "lower" else "higher"
    return f"{info.label}{' x100' if info.paper_x100 else ''} ({arrow} is better)"


def _scale(task: str, metric: str) -> float:
    return 100.0 if METRIC_INFO[task][metric].paper_x100 else 1.0


def plot_robustness(summary: pd.DataFrame, conditions, metrics: dict, path: Path) -> None:
    """One panel per (dataset, noise): the dataset's first key metric against the level (clean first), one line
    per method, bars = bootstrap 95% intervals."""
    df = summary[summary["group"] == "all"]
    datasets = list(dict.fromkeys(df["dataset"]))
    noises = list(dict.fromkeys(c.name for c in conditions))
    fig, axes = plt.subplots(len(datasets), len(noises), figsize=(3.2 * len(noises), 2.8 * len(datasets)),
                             squeeze=False)
    for i, dataset in enumerate(datasets):
        rows = df[df["dataset"] == dataset]
        task = rows["task"].iloc[0]
        metric = metrics[task][0]
        for j, noise in enumerate(noises):
            ax = axes[i][j]
            levels = [c.level for c in conditions if c.name == noise]
            for method, cell in rows[rows["metric"] == metric].groupby("method", sort=False):
                ys, los, his = [], [], []
                for noise_name, level in [("none", 0.0)] + [(noise, v) for v in levels]:
                    hit = cell[(cell["perturbation"] == noise_name) &
                               ((cell["level"].astype(float) - level).abs() < 1e-12)]
                    k = _scale(task, metric)
                    v, lo, hi = (hit[["value", "ci_low", "ci_high"]].iloc[0] * k) if len(hit) else (float("nan"),) * 3
                    ys.append(v), los.append(v - lo), his.append(hi - v)
                ax.errorbar(range(len(ys)), ys, yerr=[los, his], marker="o", capsize=2, label=method)
            ax.set_xticks(range(len(levels) + 1), ["clean"] + [f"{v:.3g}" for v in levels], fontsize=7)
            ax.set_title(f"{dataset}: {noise}", fontsize=9)
            if j == 0:
                ax.set_ylabel(_axis_label(task, metric), fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=110)
    plt.close(fig)


def plot_latency(table: pd.DataFrame, path: Path, title: str) -> None:
    """Left: median per-image latency against steps; then per dataset its quality metric against steps; one line
    per method (log-scaled steps)."""
    datasets = list(dict.fromkeys(table["dataset"]))
    fig, axes = plt.subplots(1, 1 + len(datasets), figsize=(4.0 * (1 + len(datasets)), 3.4), squeeze=False)
    ax = axes[0][0]
    for (method, dataset), cell in table.groupby(["method", "dataset"], sort=False):
        ax.plot(cell["steps"], cell["latency_median_ms"], marker="o", label=f"{method} / {dataset}")
    ax.set_xscale("log")
    ax.set_xlabel("sampling steps")
    ax.set_ylabel("median latency per image (ms)")
    ax.legend(fontsize=7)
    for ax, dataset in zip(axes[0][1:], datasets):
        rows = table[table["dataset"] == dataset]
        task, metric = rows["task"].iloc[0], rows["metric"].iloc[0]
        for method, cell in rows.groupby("method", sort=False):
            k = _scale(task, metric)
            ax.errorbar(cell["steps"], cell["value"] * k, yerr=[(cell["value"] - cell["ci_low"]) * k,
                                                                 (cell["ci_high"] - cell["value"]) * k],
                        marker="o", capsize=2, label=method)
        ax.set_xscale("log")
        ax.set_xlabel("sampling steps")
        ax.set_ylabel(_axis_label(task, metric), fontsize=8)
        ax.set_title(dataset, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=110)
    plt.close(fig)
