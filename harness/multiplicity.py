"""Many paired comparisons at once: a p-value per difference and Holm's family-wise correction.

A claims table or a robustness study tests dozens of differences together; each 95% interval alone excludes zero
for about 1 in 20 true nulls, so some "distinguishable" lines of a long table are chance. Holm's step-down
procedure (Holm 1979) adjusts the p-values so that the chance of even one false "distinguishable" in the whole
family stays under ALPHA, whatever the dependence between the tests (lines of one table share their images).

The p-value comes from the same paired bootstrap as the interval, through its standard error (the normal
approximation: z = difference / bootstrap standard error). The percentile interval itself cannot give the small
p-values a correction needs: with 2000 draws it cannot tell 1e-4 from 1e-3. The two can disagree, at the margin
or, with skewed per-image differences, by more; so a line is distinguishable after Holm only where its own
interval excludes zero as well: the correction can only remove lines, never add one.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

ALPHA = 0.05  # the family-wise error rate, matching the 95% intervals


def two_sided_p(difference: float, replicates: np.ndarray) -> float:
    """p of "no difference" for an observed ``difference`` and its bootstrap ``replicates`` [B]: 2 P(Z > |z|),
    z = difference / std(replicates). NaN with fewer than 2 replicates; a zero spread gives 1 for a zero
    difference and 0 for any other."""
    replicates = np.asarray(replicates, dtype=np.float64)
    if replicates.size < 2 or not np.isfinite(difference) or not np.isfinite(replicates).all():
        return float("nan")
    se = float(replicates.std(ddof=1))
    if se == 0.0:
        return 1.0 if difference == 0 else 0.0
    return math.erfc(abs(difference) / se / math.sqrt(2.0))


def holm(p_values) -> np.ndarray:
    """Holm-adjusted p-values [M], in the order given. The i-th smallest of the m finite p-values becomes
    max over j <= i of min(1, (m - j + 1) p_(j)); NaN stays NaN and does not count towards m."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m = len(order)
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def with_holm(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with ``p_holm`` (its ``p_value`` column adjusted over all of its rows, one family) and
    ``distinguishable_holm`` (p_holm < ALPHA and, where the table has the column, ``distinguishable``, its own
    interval excluding zero; False where there is no p-value)."""
    adjusted = holm(table["p_value"].to_numpy(float)) if len(table) else np.array([])
    passes = np.nan_to_num(adjusted, nan=1.0) < ALPHA
    if "distinguishable" in table:
        passes &= table["distinguishable"].to_numpy(bool)
    return table.assign(p_holm=adjusted, distinguishable_holm=passes)
