"""Avg. Rank of the paper's Tables 1 and 2 (math.md section 7): pure functions on DataFrames, no I/O.

Every metric column is ranked over all rows of the table, 1 = best (the direction comes from METRIC_INFO: lower is
better for abs_rel and the mean angular error, higher for delta1 and the % within 11.25 degrees); ties share the best
rank (competition ranking 1, 2, 2, 4); a row's Avg. Rank is the mean of its ranks over the columns it has (a missing
cell, '-' in the paper, is skipped, not counted as last).

Rounding for display (:func:`format_rank`): one decimal, round-half-to-even on the decimal value by default. The
paper's own rounding is inconsistent: in Table 2 DSINE's exact 3.25 is printed 3.2 (half-even or truncation) while
DPBridge (SD1.5)'s exact 7.25 is printed 7.3 (half-up), so no single rule reproduces every printed value; half-even
reproduces 15/15 of Table 1 and 8/9 of Table 2, and so does half-up (with the other Table 2 row failing).
"""
from __future__ import annotations

from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from typing import Hashable, Optional

import pandas as pd

from harness.metrics import METRIC_INFO

_ROUNDING = {"half_even": ROUND_HALF_EVEN, "half_up": ROUND_HALF_UP}


def metric_of(column: Hashable) -> str:
    """The metric name of a wide column: a tuple's last item, the part after the last '/' of a string, or the name."""
    if isinstance(column, tuple):
        return str(column[-1])
    return str(column).rsplit("/", 1)[-1]


def metric_direction(metric: str) -> str:
    """"lower" or "higher" is better, from METRIC_INFO (searched over tasks; a name must read the same in each)."""
    found = {table[metric].direction for table in METRIC_INFO.values() if metric in table}
    if not found:
        known = sorted({m for table in METRIC_INFO.values() for m in table})
        raise KeyError(f"unknown metric {metric!r}; known: {', '.join(known)}")
    if len(found) > 1:
        raise ValueError(f"metric {metric!r} has different directions in different tasks: {sorted(found)}")
    return found.pop()


def to_wide(table: pd.DataFrame, index: str = "method") -> pd.DataFrame:
    """A tidy table (columns ``index``, dataset, metric, value) -> rows = ``index``, columns = (dataset, metric) in
    first-seen order. A wide table (no 'metric'/'value' columns) is returned unchanged."""
    if not {"metric", "value"} <= set(table.columns):
        return table
    keys = ["dataset", "metric"] if "dataset" in table.columns else ["metric"]
    if table.duplicated([index, *keys]).any():
        dup = table[table.duplicated([index, *keys], keep=False)][[index, *keys]].drop_duplicates()
        raise ValueError(f"several values for the same cell, e.g. {dup.iloc[0].to_dict()}")
    wide = table.pivot(index=index, columns=keys, values="value")
    columns = list(dict.fromkeys(table[keys].itertuples(index=False, name=None)))
    rows = list(dict.fromkeys(table[index]))
    wide = wide.reindex(index=rows, columns=pd.MultiIndex.from_tuples(columns, names=keys) if len(keys) > 1
                        else [c[0] for c in columns])
    return wide.astype(float)


def column_ranks(table: pd.DataFrame, index: str = "method", decimals: Optional[int] = None) -> pd.DataFrame:
    """Rank of every cell within its column (1 = best, ties share the best rank, NaN stays NaN).

    ``decimals``: round the values first (e.g. 1 to rank as printed, so that 4.41 and 4.4 tie)."""
    wide = to_wide(table, index)
    values = wide.round(decimals) if decimals is not None else wide
    ranks = {}
    for column in wide.columns:
        ascending = metric_direction(metric_of(column)) == "lower"
        ranks[column] = values[column].rank(method="min", ascending=ascending, na_option="keep")
    out = pd.DataFrame(ranks, index=wide.index)
    out.columns = wide.columns
    return out


def avg_rank(table: pd.DataFrame, index: str = "method", decimals: Optional[int] = None) -> pd.Series:
    """Avg. Rank per row (math.md section 7), unrounded; NaN for a row with no cell. ``table`` is wide (rows x
    metric columns, see :func:`metric_of`) or tidy (``index``, dataset, metric, value)."""
    ranks = column_ranks(table, index, decimals)
    return ranks.mean(axis=1, skipna=True).rename("avg_rank")


def format_rank(value: float, digits: int = 1, rounding: str = "half_even") -> str:
    """``value`` to ``digits`` decimals as a string, rounding the decimal value (not its binary approximation):
    "half_even" (default; 3.25 -> 3.2, 7.25 -> 7.2) or "half_up" (3.25 -> 3.3, 7.25 -> 7.3). NaN -> "-"."""
    if value is None or pd.isna(value):
        return "-"
    quantum = Decimal(1).scaleb(-digits)
    return str(Decimal(repr(float(value))).quantize(quantum, rounding=_ROUNDING[rounding]))
