"""The paper's Tables 1-4 from the published numbers (results/paper/*.csv), with measured runs added as extra rows.

A table is a DataFrame: descriptor columns (method, source = "published" | "measured", model_type / ft, dan, ic /
noise, level), one column per "dataset/metric" in the paper's order, printed as the paper prints it (AbsRel and
delta1 x100, normals in degrees and percent), then for Tables 1-2 ``avg_rank`` (recomputed over every row of the
table, published and measured together, ranking the values at one decimal as printed) and ``printed_avg_rank`` (the
paper's, published rows only). Measured rows come from runs' summary.csv (group "all"; perturbation "none" for
Tables 1-3, the perturbed rows for Table 4) and are named "<method> (measured)".
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterable, Optional

import pandas as pd

from harness.metrics import METRIC_INFO
from harness.ranks import avg_rank, format_rank
from harness.runio import atomic_write_text

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
PAPER_DIR = RESULTS_DIR / "paper"
TABLES_DIR = RESULTS_DIR / "tables"
TABLE_FILES = {1: "table1_depth.csv", 2: "table2_normals.csv", 3: "table3_ablation.csv", 4: "table4_robustness.csv"}
TITLES = {1: "Table 1: zero-shot affine-invariant depth", 2: "Table 2: zero-shot surface normals",
          3: "Table 3: ablation of the design components (depth)", 4: "Table 4: robustness to input noise (SD1.5)"}
DESCRIPTORS = {1: ["model_type"], 2: ["model_type"], 3: ["ft", "dan", "ic"], 4: ["noise", "level", "level_label"]}
_DEPTH, _NORMALS = ("abs_rel", "delta1"), ("mean", "a11_25")
COLUMNS = {  # the paper's column order: (dataset, metric)
    1: [(d, m) for d in ("nyuv2", "kitti", "eth3d", "scannet", "diode") for m in _DEPTH],
    2: [(d, m) for d in ("nyuv2_normals", "scannet_normals", "ibims_normals", "sintel_normals") for m in _NORMALS],
    3: [(d, m) for d in ("nyuv2", "kitti") for m in _DEPTH],
    4: [(d, m) for d in ("nyuv2", "kitti") for m in _DEPTH] + [(d, m) for d in ("nyuv2_normals", "ibims_normals")
                                                              for m in _NORMALS],
}
RANKED = (1, 2)
DATASET_LABELS = {"nyuv2": "NYUv2", "kitti": "KITTI", "eth3d": "ETH3D", "scannet": "ScanNet", "diode": "DIODE",
                  "nyuv2_normals": "NYUv2", "scannet_normals": "ScanNet", "ibims_normals": "iBims-1",
                  "sintel_normals": "Sintel"}
MEASURED_ROW0 = 1000  # row ids of measured rows start here (published rows are 1..n)


def load_published(n: int, folder: Optional[Path] = None) -> pd.DataFrame:
    """The tidy published rows of Table ``n`` (one per method x dataset x metric, values as printed)."""
    if n not in TABLE_FILES:
        raise KeyError(f"no Table {n}; the paper has Tables {', '.join(map(str, TABLE_FILES))}")
    table = pd.read_csv(Path(folder or PAPER_DIR) / TABLE_FILES[n])
    table["source"] = "published"
    return table


def load_runs(runs: Iterable[str]) -> pd.DataFrame:
    """The summary.csv of each run folder (or a summary.csv path itself), concatenated, with a ``run`` column."""
    paths = {}  # resolved summary.csv -> as given (a run given twice counts once)
    for run in runs:
        path = Path(run)
        path = path / "summary.csv" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"{run}: no summary.csv (give a run folder written by `python -m harness run`)")
        paths.setdefault(path.resolve(), path)
    names = [p.parent.name for p in paths.values()]
    if len(set(names)) < len(names):  # two folders of one name: name runs by their folder path
        names = [str(p.parent) for p in paths.values()]
    frames = [read_summary(p).assign(run=name) for p, name in zip(paths.values(), names)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


SUMMARY_COLUMNS = ("method", "dataset", "metric", "value")  # what a summary.csv must have to enter a table


def read_summary(path: Path) -> pd.DataFrame:
    """A run's summary.csv (or robustness.csv); refuses, naming the file, one that is empty, not CSV, or lacks
    the columns the tables read."""
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path} is empty: run the run's command again to rewrite it") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a summary CSV ({str(err).splitlines()[0]}); give a run folder or its "
                         f"summary.csv") from None
    missing = [c for c in SUMMARY_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {', '.join(missing)} of a summary written by `python -m harness "
                         f"run`; give a run folder or its summary.csv")
    if df.empty:
        raise ValueError(f"{path} holds no rows: run the run's command again to rewrite it")
    return df


def measured_settings(n: int, measured: pd.DataFrame) -> list[str]:
    """One line per measured entry of Table ``n`` (run, method, variant, steps): the settings its numbers carry in
    summary.csv, and how many samples each dataset gave."""
    rows = measured_rows(n, measured, COLUMNS[n])
    if rows.empty:
        return []
    df = measured[measured.get("group", pd.Series("all", index=measured.index)).astype(str) == "all"]
    df = df[df["dataset"].isin(set(rows["dataset"]))]
    keys = [c for c in ("run", "method", "variant", "steps") if c in df.columns]
    lines = []
    for entry, cell in df.groupby(keys, sort=False):
        first = cell.iloc[0]
        settings = ", ".join(f"{c} {first[c]}" for c in ("seed", "eta", "dtype", "checkpoint", "processing_res",
                                                          "size_fit") if c in cell.columns)
        counts = ", ".join(f"{d} n={int(k)}" for d, k in cell.groupby("dataset")["n_samples"].first().items()) \
            if "n_samples" in cell.columns else ""
        lines.append(f"{' / '.join(str(x) for x in entry)}: " + "; ".join(x for x in (settings, counts) if x))
    return lines


def runs_outside(measured: pd.DataFrame) -> list[str]:
    """The runs none of whose rows lands in any of the four tables (e.g. a tiny-world run)."""
    if measured.empty:
        return []
    inside = {r for n in TABLE_FILES for r in _runs_in(n, measured)}
    return sorted(set(measured["run"]) - inside)


def _runs_in(n: int, measured: pd.DataFrame) -> set:
    wanted = set(COLUMNS[n])
    df = measured[measured.get("group", pd.Series("all", index=measured.index)).astype(str) == "all"]
    return {r for r, d, m in zip(df["run"], df["dataset"], df["metric"]) if (d, m) in wanted}


def _paper_value(task: str, dataset: str, metric: str, value: float) -> float:
    """A summary.csv value as the paper prints it (AbsRel and delta1 fractions x100)."""
    if task not in METRIC_INFO:  # no task column: tell it by the dataset's name
        task = "normals" if str(dataset).endswith("_normals") else "depth"
    info = METRIC_INFO[task].get(metric)
    return value * 100.0 if info is not None and info.paper_x100 else value


def measured_rows(n: int, measured: pd.DataFrame, columns: list[tuple[str, str]]) -> pd.DataFrame:
    """``measured`` (summary.csv rows) -> tidy rows of Table ``n`` in the paper's units, one row id per measured
    entry (run, method, variant, steps[, perturbation, level]); cells outside the table's columns are dropped."""
    df = measured.copy()
    for column, default in (("group", "all"), ("perturbation", "none"), ("level", 0), ("variant", "default"),
                            ("steps", 0), ("run", ""), ("task", "")):
        if column not in df.columns:
            df[column] = default
    df = df[df["group"].astype(str) == "all"]
    if n == 4:  # every perturbation; the unperturbed rows are the "Original Version" (level 0)
        df.loc[df["perturbation"].astype(str) == "none", "level"] = 0
    else:
        df = df[df["perturbation"].astype(str) == "none"]
    wanted = set(columns)
    df = df[[(d, m) in wanted for d, m in zip(df["dataset"], df["metric"])]]
    if df.empty:
        return pd.DataFrame(columns=["table", "row", "method", "dataset", "metric", "source", "value"])
    names = ["run", "method", "variant", "steps"]
    keys = names + (["perturbation", "level"] if n == 4 else [])
    entries = df[keys].drop_duplicates().reset_index(drop=True)
    entries["row"] = MEASURED_ROW0 + entries.index
    labelled = df[names].drop_duplicates().reset_index(drop=True)
    labelled["label"] = _labels(labelled)
    df = df.merge(entries, on=keys).merge(labelled, on=names)
    out = pd.DataFrame({"table": n, "row": df["row"], "method": df["label"], "dataset": df["dataset"],
                        "metric": df["metric"], "source": "measured",
                        "value": [_paper_value(*x) for x in zip(df["task"], df["dataset"], df["metric"], df["value"])]})
    if n == 4:
        out["noise"], out["level"] = df["perturbation"].values, df["level"].values
    return out


def _labels(entries: pd.DataFrame) -> list[str]:
    """"<method>[ [variant]] (measured)" per (run, method, variant, steps), qualified by steps and then by run
    name only where labels would otherwise collide, and by each only where it tells them apart."""
    base = [m if v == "default" else f"{m} [{v}]" for m, v in zip(entries["method"], entries["variant"])]
    quals = [[] for _ in base]
    for column in ("steps", "run"):
        labels = pd.Series([b + "".join(q) for b, q in zip(base, quals)])
        if not labels.duplicated(keep=False).any():
            break
        for _, clash in labels[labels.duplicated(keep=False)].groupby(labels):
            if entries[column].iloc[clash.index].nunique() > 1:  # only a column that tells the clashing rows apart
                for i in clash.index:
                    quals[i].append(f", {column}={entries[column].iloc[i]}")
    return [f"{b} (measured{''.join(q)})" for b, q in zip(base, quals)]


def paper_table(n: int, measured: Optional[pd.DataFrame] = None, folder: Optional[Path] = None) -> pd.DataFrame:
    """Table ``n`` laid out as in the paper: rows = methods (published first, then measured), columns =
    descriptors, "dataset/metric" cells in the paper's order, and for Tables 1-2 avg_rank (joint) and
    printed_avg_rank."""
    published = load_published(n, folder)
    columns = COLUMNS[n]
    extra = set(zip(published["dataset"], published["metric"])) - set(columns)
    if extra:
        raise ValueError(f"{TABLE_FILES[n]} has cells outside Table {n}'s columns: {sorted(extra)}")
    tidy = published
    if measured is not None and not measured.empty:
        tidy = pd.concat([published, measured_rows(n, measured, columns)], ignore_index=True)
    dup = tidy[tidy.duplicated(["row", "dataset", "metric"], keep=False)]
    if not dup.empty:
        first = dup.iloc[0]
        raise ValueError(f"Table {n}: several values for {first['method']!r} on {first['dataset']}/{first['metric']} "
                         "(measured rows are told apart by run, method, variant and steps only)")
    descriptors = ["method", "source"] + DESCRIPTORS[n] + (["printed_avg_rank"] if n in RANKED else [])
    rows = tidy.drop_duplicates("row").set_index("row").reindex(columns=descriptors)
    wide = tidy.pivot(index="row", columns=["dataset", "metric"], values="value")
    wide = wide.reindex(index=rows.index, columns=pd.MultiIndex.from_tuples(columns)).astype(float)
    table = rows.copy()
    for dataset, metric in columns:
        table[f"{dataset}/{metric}"] = wide[(dataset, metric)]
    if n in RANKED:
        table["avg_rank"] = avg_rank(wide, decimals=1)
        table = table[[c for c in table.columns if c != "printed_avg_rank"] + ["printed_avg_rank"]]
    return table.reset_index(drop=True)


def _header(column: str) -> str:
    dataset, _, metric = column.partition("/")
    task = "normals" if dataset.endswith("_normals") else "depth"
    info = METRIC_INFO[task][metric]
    arrow = "↓" if info.direction == "lower" else "↑"
    return f"{DATASET_LABELS.get(dataset, dataset)} {info.label}{'×100' if info.paper_x100 else ''} {arrow}"


def to_markdown(table: pd.DataFrame, n: int) -> str:
    """GitHub Markdown of a :func:`paper_table`; measured cells carry a '*'."""
    value_columns = [c for c in table.columns if "/" in c]
    heads = {"method": "Method", "source": "Source", "model_type": "Type", "ft": "FT", "dan": "DAN", "ic": "IC",
             "noise": "Noise", "level": "Level",
             "level_label": "Level (paper)", "avg_rank": "Avg. Rank", "printed_avg_rank": "Avg. Rank (paper)"}
    lines = ["| " + " | ".join(heads.get(c) or _header(c) for c in table.columns) + " |",
             "|" + "---|" * len(table.columns)]
    for row in table.to_dict("records"):
        mark = "*" if row["source"] == "measured" else ""
        cells = []
        for c in table.columns:
            v = row[c]
            if c in value_columns:
                cells.append("-" if pd.isna(v) else f"{v:.1f}{mark}")
            elif c in ("avg_rank", "printed_avg_rank"):
                cells.append(format_rank(v) + (mark if c == "avg_rank" else ""))
            elif c in ("ft", "dan", "ic"):
                cells.append("?" if pd.isna(v) else ("✓" if str(v) == "True" else ""))
            else:
                cells.append("-" if pd.isna(v) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    notes = ["published = transcribed from the paper (results/paper/SOURCE.md); * = measured by this harness "
             "(group 'all', AbsRel and δ1 ×100)."]
    if n in RANKED:
        notes.append("Avg. Rank is recomputed over all rows shown (math.md section 7; values ranked at one decimal, "
                     "means printed with round-half-even).")
    if n == 2:
        notes.append("The paper's rounding is inconsistent: DPBridge (SD1.5)'s exact 7.25 is printed 7.3, DSINE's "
                     "exact 3.25 is printed 3.2; half-even gives 7.2 and 3.2.")
    if n == 4:
        notes.append("The paper's noise levels were lost in extraction: levels are indices 1-4; the harness' levels "
                     "(math.md section 6) are its own choice.")
    return f"**{TITLES[n]}**\n\n" + "\n".join(lines) + "\n\n" + "\n".join(f"_{x}_" for x in notes) + "\n"


def write_tables(runs: Iterable[str] = (), output: Optional[str] = None, overwrite: bool = False) -> dict[Path, str]:
    """Write table<n>.md and table<n>.csv for n = 1..4 to ``output`` (default results/tables/); returns
    {markdown path: markdown text}. Tables already there are replaced only with ``overwrite``; a run none of whose
    rows lands in a table is named on stderr."""
    measured = load_runs(runs)
    folder = Path(output) if output else TABLES_DIR
    existing = [folder / f"table{n}.{ext}" for n in TABLE_FILES for ext in ("md", "csv")
                if (folder / f"table{n}.{ext}").exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists; pass --overwrite to replace the tables in {folder} or choose "
                              f"another --output")
    for run in runs_outside(measured):
        print(f"run {run}: none of its datasets and metrics is in Tables 1-4 (the paper's benchmarks), so it adds "
              f"no row", file=sys.stderr)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for n in TABLE_FILES:
        table = paper_table(n, measured)
        atomic_write_text(folder / f"table{n}.csv", table.to_csv(index=False))
        text = to_markdown(table, n)
        settings = measured_settings(n, measured) if not measured.empty else []
        if settings:
            text += "\n_measured rows (run / method / variant / steps: settings from its summary.csv):_\n\n" + "".join(
                f"- {line}\n" for line in settings)
        atomic_write_text(folder / f"table{n}.md", text)
        out[folder / f"table{n}.md"] = text
    return out
