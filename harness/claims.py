"""The paper's claims about Table 3 and its baselines, as paired comparisons between ablation rows.

Each claim names two rows of one ablation folder (``<folder>/steps<N>/<row>``) and is answered by the paired
bootstrap of `compare` (same images, B - A): the difference, its 95% interval, and whether it excludes zero;
then whether it still does after Holm's correction over every line and metric of the table (harness.multiplicity),
which keeps the chance of any false "distinguishable" in the whole table under 5%. A claim whose rows were not
evaluated is left out (and said so), never guessed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd

from harness.compare import compare
from harness.metrics import METRIC_INFO
from harness.multiplicity import with_holm
from harness.runio import read_json_object

# (row A, row B, the question; B is the paper's better row)
CLAIMS = (
    ("scratch", "full", "fine-tuning beats training from scratch (Table 3 row 1 vs the full method)"),
    ("ft_ic", "full", "DAN helps, with image consistency (rows 3 vs 5)"),
    ("ft", "ft_dan", "DAN helps, without image consistency (rows 2 vs 4)"),
    ("ft_dan", "full", "image consistency helps, with DAN (rows 4 vs 5)"),
    ("ft", "ft_ic", "image consistency helps, without DAN (rows 2 vs 3)"),
    ("ft_ic", "ft_dan", "DAN alone helps more than image consistency alone (rows 3 vs 4)"),
    ("dan_b", "full", "DAN-A beats DAN-B (open choice)"),
    ("ic_pixel", "full", "image consistency on latents beats pixels (open choice of the tiny recipe)"),
    ("i2sb", "full", "DPBridge beats I2SB (same budget, same latent space)"),
    ("bbdm", "full", "DPBridge beats BBDM (same budget, same latent space)"),
    ("marigold_tiny", "full", "DPBridge beats noise-to-map diffusion (same backbone, same budget)"),
)
CLAIM_METRICS = ("abs_rel", "delta1")


CLAIM_COLUMNS = ("steps", "claim", "row_a", "row_b", "dataset", "group", "metric", "a", "b", "b_minus_a", "ci_low",
                 "ci_high", "b_better", "distinguishable", "p_value", "p_holm", "distinguishable_holm", "n_samples",
                 "seed", "eta")


V_OUTPUT_DAN_CAVEAT = (
    "caveat: rows {rows} output v, which is turned into eps in the DAN-A frame in every row (methods/bridge.py "
    "eps_from_v), so their DAN claims compare the UNet's x_t input only, not the paper's DAN under an eps output "
    "(retrain the rows with --method-set parameterization=eps for that)")


def parameterizations(run: Path) -> set:
    """The output parameterisations of a run folder's trained methods (from its manifest; empty if none)."""
    path = run / "manifest.json"
    if not path.is_file():
        return set()
    methods = read_json_object(path, "run its command again with a new --output").get("methods", {})
    return {m.get("method_config", {}).get("parameterization") for m in methods.values()} - {None}


def dan_caveats(folder: Path, steps: tuple[int, ...]) -> list[str]:
    """A note when a DAN claim's rows output v (their DAN ablation changes the input only)."""
    dan_rows = sorted({r for a, b, q in CLAIMS if "DAN" in q for r in (a, b)})
    v_rows = [r for r in dan_rows if any("v" in parameterizations(folder / f"steps{n}" / r) for n in steps)]
    return [V_OUTPUT_DAN_CAVEAT.format(rows=", ".join(v_rows))] if v_rows else []


def budget_caveats(found: pd.DataFrame, iterations: dict) -> list[str]:
    """A note for every claim whose two rows were trained for different numbers of iterations (``iterations``:
    row -> its checkpoint's train_config.iterations, None when unrecorded): Table 3 compares equal budgets."""
    notes = []
    for a, b, question in dict.fromkeys(zip(found.row_a, found.row_b, found.claim)):
        if iterations.get(a) != iterations.get(b):
            notes.append(f"caveat: {question}: {a} was trained for {iterations.get(a)} iterations and {b} for "
                         f"{iterations.get(b)}, so this claim does not compare equal budgets (retrain one of them "
                         f"with --set iterations=N)")
    return notes


SAME_ON_BOTH_SIDES = ("seed", "eta", "steps", "dtype", "device", "processing_res", "size_fit", "list_fingerprint")


def claims(folder: Path, steps: tuple[int, ...], evaluated: Optional[set] = None) -> tuple[pd.DataFrame, list[str]]:
    """Tidy claim rows (steps, claim, metric, a, b, b_minus_a, ci_low, ci_high, b_better, distinguishable, p_value,
    and p_holm with distinguishable_holm over all of them) and the claims left out for want of rows.
    ``evaluated``: the rows this call ran (None: every finished row folder); rows left in the folder by earlier
    calls with other rows are not used. Refuses a claim whose two rows were
    evaluated with different settings (SAME_ON_BOTH_SIDES), naming them."""
    rows, skipped = [], []
    for n in steps:
        for a, b, question in CLAIMS:
            run_a, run_b = folder / f"steps{n}" / a, folder / f"steps{n}" / b
            finished = (run_a / "summary.csv").is_file() and (run_b / "summary.csv").is_file()
            if not finished or (evaluated is not None and not {a, b} <= evaluated):
                skipped.append(f"{question} at {n} steps: rows {a} / {b} not evaluated")
                continue
            table = compare(run_a, run_b)
            check_same_settings(table, run_a, run_b)
            for r in table[table.metric.isin(CLAIM_METRICS)].to_dict("records"):
                lower = METRIC_INFO["depth"][r["metric"]].direction == "lower"
                rows.append({"steps": n, "claim": question, "row_a": a, "row_b": b, "dataset": r["dataset"],
                             "group": r["group"], "metric": r["metric"], "a": r["a"], "b": r["b"],
                             "b_minus_a": r["b_minus_a"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                             "b_better": (r["b_minus_a"] < 0) == lower, "distinguishable": r["distinguishable"],
                             "p_value": r["p_value"], "n_samples": r["n_samples"], "seed": r["seed_a"],
                             "eta": r["eta_a"]})
    found = with_holm(pd.DataFrame(rows, columns=[c for c in CLAIM_COLUMNS if "holm" not in c]))
    return found[list(CLAIM_COLUMNS)], skipped  # no rows: an empty table, its columns kept


def check_same_settings(table: pd.DataFrame, run_a: Path, run_b: Path) -> None:
    """Refuse a claim between two rows evaluated with different settings (a row left by an earlier call)."""
    differ = [f"{k}: {table[k + '_a'].iloc[0]} -> {table[k + '_b'].iloc[0]}" for k in SAME_ON_BOTH_SIDES
              if k + "_a" in table and (table[k + "_a"].astype(str) != table[k + "_b"].astype(str)).any()]
    if differ:
        raise ValueError(f"{run_a} and {run_b} were evaluated with different settings ({', '.join(differ)}); "
                         f"evaluate both with the same settings (or use another --output)")


def verdict(row, corrected: bool = False) -> str:
    """The claim's answer on one metric: from its own 95% interval, or (``corrected``) after Holm's correction over
    the table; "-" for a claims.csv written before the correction was recorded."""
    distinguishable = getattr(row, "distinguishable_holm", None) if corrected else row.distinguishable
    if distinguishable is None or pd.isna(distinguishable):
        return "-"
    if not distinguishable:
        return "not distinguishable"
    return "yes" if row.b_better else "no, the opposite"


def both_metrics(ab, d1, corrected: bool = False) -> str:
    one, other = verdict(ab, corrected), verdict(d1, corrected)
    return one if one == other else f"AbsRel: {one}; δ1: {other}"


def claims_markdown(table: pd.DataFrame, skipped: list[str], caveats: tuple[str, ...] = ()) -> str:
    """One line per (steps, claim[, dataset][, group]): AbsRel and delta1 of both rows (x100), B - A with its
    paired interval, the verdict of each interval alone and after Holm's correction over the table; a subset column
    when the claims cover several datasets or groups (Table 3's columns: in the tiny world its indoor and outdoor
    halves)."""
    table = table.assign(group=table["group"].fillna("all") if "group" in table else "all")  # older claims.csv
    datasets, groups = table["dataset"].nunique() > 1, table["group"].nunique() > 1
    several = datasets or groups
    where = "subset | " if several else ""
    lines = [f"| steps | {where}claim (A -> B) | AbsRel ×100 A / B | B - A [95%] | δ1 ×100 A / B | B - A [95%] | "
             f"holds? | after Holm |", "|---|---|---|---|---|---|---|---|" + ("---|" if several else "")]
    changed = 0
    for (n, claim, dataset, group), cell in table.groupby(["steps", "claim", "dataset", "group"], sort=False):
        m = {r.metric: r for r in cell.itertuples()}
        if not set(CLAIM_METRICS) <= set(m):
            continue
        ab, d1 = m["abs_rel"], m["delta1"]
        fmt = lambda r: f"{100 * r.b_minus_a:+.1f} [{100 * r.ci_low:+.1f}, {100 * r.ci_high:+.1f}]"  # noqa: E731
        holds, after = both_metrics(ab, d1), both_metrics(ab, d1, corrected=True)
        changed += holds != after and after != "-"
        place = " ".join([dataset] * datasets + [group] * groups) + " | " if several else ""
        lines.append(f"| {n} | {place}{claim} ({ab.row_a} -> {ab.row_b}) | {100 * ab.a:.1f} / {100 * ab.b:.1f} | "
                     f"{fmt(ab)} | "
                     f"{100 * d1.a:.1f} / {100 * d1.b:.1f} | {fmt(d1)} | {holds} | {after} |")
    notes = "".join(f"\n- not measured: {s}" for s in skipped) + "".join(f"\n- {c}" for c in caveats)
    if len(table):
        sizes = sorted({int(n) for n in table["n_samples"].dropna()}) if "n_samples" in table else []
        tests = int(table["p_value"].notna().sum()) if "p_value" in table else 0
        notes += (f"\n- {len(lines) - 2} claim lines x 2 metrics, each a paired 95% interval over "
                  f"{'/'.join(map(str, sizes)) or 'the'} images. \"holds?\" reads each interval alone, uncorrected for "
                  f"multiplicity: about 1 in 20 true nulls excludes zero by chance.")
        if tests:
            notes += (f" \"after Holm\" corrects over all {tests} tests (Holm's step-down procedure on p-values from "
                      f"the paired bootstrap's standard error), which keeps the chance of any false "
                      f"\"distinguishable\" in the whole table under 5%: {changed} of {len(lines) - 2} lines change")
    return "\n".join(lines) + "\n" + notes + ("\n" if notes else "")
