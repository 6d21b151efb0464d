"""Holm's correction and the bootstrap p-value behind the claims' and the robustness study's corrected verdicts."""
import math

import numpy as np
import pandas as pd
import pytest

from harness.multiplicity import ALPHA, holm, two_sided_p, with_holm


def test_holm_adjusts_in_the_given_order_and_leaves_nan_out_of_the_family():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> kept at 0.06 (monotone)
    adjusted = holm([0.01, 0.04, 0.03, 0.005, np.nan])
    np.testing.assert_allclose(adjusted[:4], [0.03, 0.06, 0.06, 0.02])
    assert np.isnan(adjusted[4])
    assert holm([0.5, 0.9]).tolist() == [1.0, 1.0]  # capped at 1
    assert holm([]).size == 0


def test_holm_keeps_the_family_wise_error_under_alpha_and_rejects_what_bonferroni_rejects():
    rng = np.random.default_rng(0)
    nulls = rng.random((4000, 40))  # 4000 families of 40 true nulls
    any_false = np.mean([(holm(p) < ALPHA).any() for p in nulls])
    uncorrected = np.mean((nulls < ALPHA).any(axis=1))
    assert any_false < 0.065 and uncorrected > 0.8  # 1 - 0.95**40 = 0.87 without the correction
    p = np.concatenate([[1e-5, 1e-3], rng.random(38)])  # both under Bonferroni's 0.05 / 40
    assert (holm(p)[:2] < ALPHA).all() and (holm(p) >= p).all()


def test_the_bootstrap_p_value_is_the_normal_approximation_of_the_difference():
    rng = np.random.default_rng(1)
    d = rng.normal(0.3, 1.0, 100)  # per-image differences
    replicates = d[rng.integers(0, 100, (2000, 100))].mean(axis=1)
    se = replicates.std(ddof=1)
    assert se == pytest.approx(d.std(ddof=1) / 10, rel=0.1)
    assert two_sided_p(d.mean(), replicates) == pytest.approx(math.erfc(abs(d.mean()) / se / math.sqrt(2)))
    assert two_sided_p(0.0, replicates) == 1.0 and two_sided_p(10 * se, replicates) < 1e-20
    assert two_sided_p(0.0, np.zeros(5)) == 1.0 and two_sided_p(0.1, np.full(5, 0.1)) == 0.0
    assert math.isnan(two_sided_p(0.1, np.array([0.1]))) and math.isnan(two_sided_p(np.nan, replicates))


def test_with_holm_adds_the_adjusted_columns_over_the_whole_table():
    table = pd.DataFrame({"metric": list("abc"), "p_value": [0.001, 0.02, np.nan]})
    out = with_holm(table)
    np.testing.assert_allclose(out.p_holm[:2], [0.002, 0.02])
    assert out.distinguishable_holm.tolist() == [True, True, False]  # no p-value: not distinguishable
    assert with_holm(table.iloc[:0]).columns.tolist() == ["metric", "p_value", "p_holm", "distinguishable_holm"]


def test_holm_never_passes_a_line_whose_own_interval_includes_zero():
    # skewed differences: the interval can include zero while the normal-approximation p is below 0.05
    table = pd.DataFrame({"p_value": [0.001, 0.001], "distinguishable": [True, False]})
    assert with_holm(table).distinguishable_holm.tolist() == [True, False]
