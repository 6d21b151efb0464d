"""Golden and reference-agreement tests of harness.align and harness.metrics (protocol.md)."""
import math

import numpy as np
import pytest
import scipy.linalg

from harness.align import align_depth, fit_scale_shift, stride_for_max_side
from harness.metrics import (
    DEPTH_METRICS,
    METRIC_INFO,
    NORMAL_METRICS,
    NormalAccumulator,
    aggregate_depth,
    aggregate_normals,
    angular_error_deg,
    depth_metrics,
    metric_info,
    normal_metrics,
)

REL = 1e-6

# ------------------------------------------------------------------------------------- golden depth


def _golden_2x2():
    # p = [1, 2.5, 4, 8], g = [1, 2, 5, 8]: ratios max(p/g, g/p) = [1, 1.25, 1.25, 1] (exact in binary)
    pred = np.array([[1.0, 2.5], [4.0, 8.0]])
    gt = np.array([[1.0, 2.0], [5.0, 8.0]])
    return pred, gt, np.ones((2, 2), bool)


def test_depth_metrics_golden_2x2():
    m = depth_metrics(*_golden_2x2())
    ln = math.log(1.25)
    # |p-g|/g = 0, 0.5/2, 1/5, 0 -> (0.25 + 0.2) / 4
    assert m["abs_rel"] == pytest.approx(0.45 / 4, rel=1e-12)
    # (p-g)^2/g = 0, 0.25/2, 1/5, 0 -> (0.125 + 0.2) / 4
    assert m["sq_rel"] == pytest.approx(0.325 / 4, rel=1e-12)
    # (p-g)^2 = 0, 0.25, 1, 0
    assert m["rmse"] == pytest.approx(math.sqrt(1.25 / 4), rel=1e-12)
    # ln p - ln g = 0, ln 1.25, -ln 1.25, 0 -> mean 0, mean d^2 = ln^2 1.25 / 2
    assert m["rmse_log"] == pytest.approx(ln / math.sqrt(2), rel=1e-12)
    assert m["silog"] == pytest.approx(100 * ln / math.sqrt(2), rel=1e-12)
    # |log10 p - log10 g| = 0, log10 1.25, log10 1.25, 0
    assert m["log10"] == pytest.approx(2 * math.log10(1.25) / 4, rel=1e-12)
    # ratio exactly 1.25 is NOT < 1.25: two of four pixels; both are < 1.5625
    assert m["delta1"] == 0.5
    assert m["delta2"] == 1.0
    assert m["delta3"] == 1.0
    # 1/p - 1/g = 0, 0.4 - 0.5, 0.25 - 0.2, 0 -> (0.01 + 0.0025) / 4
    assert m["i_rmse"] == pytest.approx(math.sqrt(0.0125 / 4), rel=1e-12)
    assert tuple(m) == DEPTH_METRICS
    assert all(isinstance(v, float) for v in m.values())


def test_delta_just_below_threshold_counts():
    g = np.array([[2.0, 4.0]])
    p = np.array([[np.nextafter(2.5, 0.0), 4.0 * 1.25**2]])  # 1.25 - 1ulp counted; 1.5625 exactly not for delta2
    m = depth_metrics(p, g, np.ones_like(g, bool))
    assert m["delta1"] == 0.5
    assert m["delta2"] == 0.5
    assert m["delta3"] == 1.0


def test_silog_scale_invariant():
    g = np.array([[1.0, 2.0], [3.0, 7.0]])
    m = depth_metrics(2.0 * g, g, np.ones_like(g, bool))
    assert abs(m["silog"]) < 1e-9  # d = ln 2 everywhere: variance 0
    assert m["rmse_log"] == pytest.approx(math.log(2), rel=1e-12)
    assert m["abs_rel"] == pytest.approx(1.0, rel=1e-12)
    assert m["delta1"] == 0.0 and m["delta3"] == 0.0  # ratio 2: not < 1.25, not < 1.953125


def test_masked_out_pixel_changes_nothing():
    pred, gt, mask = _golden_2x2()
    pred3 = np.hstack([pred, [[1e6], [np.nan]]])  # [2,3]
    gt3 = np.hstack([gt, [[0.0], [np.inf]]])
    mask3 = np.hstack([mask, [[False], [False]]])
    assert depth_metrics(pred3, gt3, mask3) == depth_metrics(pred, gt, mask)
    # and the fit ignores it too
    g = np.array([[1.0, 2.0, 3.0, 4.0]])
    p = (g - 3) / 2
    m = np.array([[True, True, True, False]])
    p2 = p.copy()
    p2[0, 3] = 123.0
    g2 = g.copy()
    g2[0, 3] = -5.0
    assert fit_scale_shift(p2, g2, m) == pytest.approx(fit_scale_shift(p, g, m), rel=1e-12)


def test_depth_metrics_errors():
    pred, gt, mask = _golden_2x2()
    with pytest.raises(ValueError, match="no valid pixel"):
        depth_metrics(pred, gt, np.zeros_like(mask))
    with pytest.raises(ValueError, match="img_7.*no valid pixel"):
        depth_metrics(pred, gt, np.zeros_like(mask), sample="img_7")
    bad = pred.copy()
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        depth_metrics(bad, gt, mask)
    bad[0, 1] = 0.0
    with pytest.raises(ValueError, match="<= 0"):
        depth_metrics(bad, gt, mask)
    with pytest.raises(ValueError, match="shape"):
        depth_metrics(pred, gt[:1], mask)


def test_aggregate_depth_is_plain_mean_over_images():
    a = {"abs_rel": 0.1, "rmse": 1.0}
    b = {"abs_rel": 0.3, "rmse": 2.0}
    assert aggregate_depth([a, b]) == pytest.approx({"abs_rel": 0.2, "rmse": 1.5}, rel=1e-12)
    with pytest.raises(ValueError):
        aggregate_depth([])
    with pytest.raises(ValueError):
        aggregate_depth([a, {"abs_rel": 0.1}])


# ------------------------------------------------------------------------------------- golden alignment


def test_fit_recovers_known_scale_shift():
    rng = np.random.default_rng(0)
    g = rng.uniform(0.5, 9.0, (5, 7))
    pred = (g - 3.0) / 2.0  # g = 2 pred + 3
    mask = rng.random((5, 7)) > 0.3
    s, t = fit_scale_shift(pred, g, mask)
    assert s == pytest.approx(2.0, rel=1e-12) and t == pytest.approx(3.0, rel=1e-12)
    depth, info = align_depth(pred, g, mask, "least_squares", 1e-3, 10.0)
    np.testing.assert_allclose(depth, g, rtol=1e-12)
    assert info["mode"] == "least_squares" and info["scale"] == pytest.approx(2.0)
    assert depth.dtype == np.float64


def test_fit_stride_and_helper():
    assert stride_for_max_side((4032, 6048), 1024) == (4, 6)  # ETH3D -> 1008 x 1008 grid
    assert stride_for_max_side((480, 640), 1024) == (1, 1)
    g = np.arange(1.0, 1.0 + 6 * 8).reshape(6, 8)
    pred = (g - 3.0) / 2.0
    pred[1::2, :] = 99.0  # rows a stride of 2 skips: exact fit on the kept rows
    s, t = fit_scale_shift(pred, g, np.ones_like(g, bool), stride=(2, 3))
    assert (s, t) == pytest.approx((2.0, 3.0), rel=1e-12)
    _, info = align_depth(pred, g, np.ones_like(g, bool), "least_squares", 0, 100, fit_stride=(2, 1))
    assert info["fit_stride"] == (2, 1) and info["scale"] == pytest.approx(2.0)


def test_fit_constant_prediction_and_too_few_pixels():
    g = np.array([[1.0, 2.0], [3.0, 6.0]])
    s, t = fit_scale_shift(np.full((2, 2), 0.1), g, np.ones((2, 2), bool))
    assert s == 0.0 and t == pytest.approx(3.0)  # documented: scale 0, shift = mean gt
    one = np.array([[True, False], [False, False]])
    with pytest.raises(ValueError, match="at least 2"):
        fit_scale_shift(g, g, one)
    with pytest.raises(ValueError, match="at least 2"):
        fit_scale_shift(g, g, np.zeros((2, 2), bool))


def test_disparity_mode_known_case():
    g = np.array([[1.0, 2.0], [4.0, 5.0]])
    pred = 2.0 * (1.0 / g) - 0.2  # disparity: 1/g = 0.5 pred + 0.1
    pred_bad = np.hstack([pred, [[-5.0], [0.0]]])  # p <= 0 on the mask: excluded from the fit (Marigold)
    g_bad = np.hstack([g, [[3.0], [3.0]]])
    mask = np.ones_like(g_bad, bool)
    depth, info = align_depth(pred_bad, g_bad, mask, "least_squares_disparity", 1e-5, np.inf)
    assert info["scale"] == pytest.approx(0.5, rel=1e-12) and info["shift"] == pytest.approx(0.1, rel=1e-12)
    np.testing.assert_allclose(depth[:, :2], g, rtol=1e-12)
    # -5 -> 0.5*-5 + 0.1 = -2.4 and 0 -> 0.1: disparity clipped to 1e-3 -> 1000 m; 1/0.1 = 10 m
    assert depth[0, 2] == pytest.approx(1000.0, rel=1e-12)
    assert depth[1, 2] == pytest.approx(10.0, rel=1e-12)
    depth, _ = align_depth(pred_bad, g_bad, mask, "least_squares_disparity", 1e-3, 10.0)
    assert depth[0, 2] == 10.0  # then the dataset clip


def test_clipping_after_alignment():
    g = np.array([[1.0, 2.0, 5.0, 1.0, 1.0]])
    pred = (g - 3.0) / 2.0
    pred[0, 3] = -10.0  # aligned to -17
    pred[0, 4] = 20.0  # aligned to 43
    mask = np.array([[True, True, True, False, False]])
    depth, info = align_depth(pred, g, mask, "least_squares", 1e-3, 10.0)
    assert (info["scale"], info["shift"]) == pytest.approx((2.0, 3.0), rel=1e-12)
    assert depth[0, 3] == 1e-3 and depth[0, 4] == 10.0
    depth, _ = align_depth(pred, g, mask, "least_squares", 0.0, np.inf)
    assert depth[0, 3] == 1e-6 and depth[0, 4] == pytest.approx(43.0)  # floor 1e-6 always
    depth, info = align_depth(pred, g, mask, "none", 0.0, 4.0)
    np.testing.assert_array_equal(depth, np.maximum(np.clip(pred, 0, 4), 1e-6))
    assert (info["scale"], info["shift"]) == (1.0, 0.0)


def test_align_errors():
    g = np.ones((2, 2))
    with pytest.raises(ValueError, match="unknown alignment mode"):
        align_depth(g, g, g > 0, "median", 0, 1)
    with pytest.raises(ValueError, match="non-finite"):
        align_depth(np.full((2, 2), np.nan), g, g > 0, "least_squares", 0, 1)
    with pytest.raises(ValueError, match="at least 2"):
        align_depth(g, g, g < 0, "least_squares", 0, 1)


# ------------------------------------------------------------------------------------- reference agreement


def _ref_fit(p, g, valid):
    """Explicit 2x2 normal equations [[Sum p^2, Sum p], [Sum p, n]] [s, t] = [Sum pg, Sum g]."""
    pv, gv = p[valid], g[valid]
    a = np.array([[np.sum(pv * pv), np.sum(pv)], [np.sum(pv), float(pv.size)]])
    b = np.array([np.sum(pv * gv), np.sum(gv)])
    return scipy.linalg.solve(a, b, assume_a="sym")


def _ref_metrics(p, g, valid):
    """Masked-array reference; silog by the literal formula sqrt(mean d^2 - mean(d)^2)."""
    pm = np.ma.masked_array(p, mask=~valid)
    gm = np.ma.masked_array(g, mask=~valid)
    n = valid.sum()
    d = np.ma.log(pm) - np.ma.log(gm)
    ratio = np.ma.maximum(pm / gm, gm / pm)
    return {
        "abs_rel": np.ma.sum(np.ma.abs(pm - gm) / gm) / n,
        "sq_rel": np.ma.sum((pm - gm) ** 2 / gm) / n,
        "rmse": np.sqrt(np.ma.sum((pm - gm) ** 2) / n),
        "rmse_log": np.sqrt(np.ma.sum(d**2) / n),
        "log10": np.ma.sum(np.ma.abs(np.ma.log10(pm) - np.ma.log10(gm))) / n,
        "delta1": np.ma.sum(ratio < 1.25) / n,
        "delta2": np.ma.sum(ratio < 1.5625) / n,
        "delta3": np.ma.sum(ratio < 1.953125) / n,
        "i_rmse": np.sqrt(np.ma.sum((1 / pm - 1 / gm) ** 2) / n),
        "silog": 100 * np.sqrt(np.ma.sum(d**2) / n - (np.ma.sum(d) / n) ** 2),
    }


def _eigen_case(seed):
    rng = np.random.default_rng(seed)
    h, w = 480, 640
    gt = rng.uniform(0.2, 12.0, (h, w))
    gt[rng.random((h, w)) < 0.1] = 0.0  # holes
    crop = np.zeros((h, w), bool)
    crop[45:471, 41:601] = True
    valid = (gt > 1e-3) & (gt < 10.0) & crop
    rel = rng.uniform(0.3, 5.0) * (gt + rng.normal(0, 0.4, (h, w))) - rng.uniform(-1, 1)  # affine + noise
    return rng, gt.astype(np.float32), rel.astype(np.float32), valid


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_depth_mode_matches_reference(seed):
    _, gt, rel, valid = _eigen_case(seed)
    p64, g64 = rel.astype(np.float64), gt.astype(np.float64)
    s_ref, t_ref = _ref_fit(p64, g64, valid)
    depth, info = align_depth(rel, gt, valid, "least_squares", 1e-3, 10.0)
    assert (info["scale"], info["shift"]) == pytest.approx((s_ref, t_ref), rel=REL)
    ref_depth = np.clip(s_ref * p64 + t_ref, 1e-3, 10.0)
    assert (ref_depth[valid] >= 10.0).any() and (ref_depth[valid] <= 1e-3).any()  # clipping is exercised
    np.testing.assert_allclose(depth, ref_depth, rtol=REL)
    m = depth_metrics(depth, gt, valid)
    ref = _ref_metrics(ref_depth, g64, valid)
    for k in DEPTH_METRICS:
        assert m[k] == pytest.approx(float(ref[k]), rel=REL), k


@pytest.mark.parametrize("seed", [3, 4])
def test_disparity_mode_and_stride_match_reference(seed):
    rng, gt, _, valid = _eigen_case(seed)
    g64 = gt.astype(np.float64)
    inv = np.where(gt > 0, 1.0 / np.where(gt > 0, g64, 1.0), 0.0)
    disp = rng.uniform(0.5, 3.0) * (inv + rng.normal(0, 0.05, gt.shape)) + rng.uniform(-0.1, 0.1)
    fit_valid = valid & (disp > 0)
    sub = np.zeros_like(valid)
    sub[::3, ::2] = True
    s_ref, t_ref = _ref_fit(disp, inv, fit_valid & sub)
    depth, info = align_depth(disp, gt, valid, "least_squares_disparity", 1e-3, 10.0, fit_stride=(3, 2))
    assert (info["scale"], info["shift"]) == pytest.approx((s_ref, t_ref), rel=REL)
    ref_depth = np.clip(1.0 / np.maximum(s_ref * disp + t_ref, 1e-3), 1e-3, 10.0)
    np.testing.assert_allclose(depth, ref_depth, rtol=REL)
    m = depth_metrics(depth, gt, valid)
    ref = _ref_metrics(ref_depth, g64, valid)
    for k in DEPTH_METRICS:
        assert m[k] == pytest.approx(float(ref[k]), rel=REL), k


# ------------------------------------------------------------------------------------- normals


def _unit(theta_deg, phi_deg=0.0):
    """Unit vector at angle theta from +z, azimuth phi: [3]."""
    th, ph = np.radians(theta_deg), np.radians(phi_deg)
    return np.array([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)])


def test_angular_error_basic_cases():
    z = np.array([0.0, 0.0, 1.0])
    x = np.array([1.0, 0.0, 0.0])
    gt = np.tile(z, (1, 5, 1))  # [1,5,3]
    pred = np.stack([z, -z, x, 7.3 * _unit(37.0, 20.0), np.zeros(3)])[None]
    e = angular_error_deg(pred, gt, np.ones((1, 5), bool))
    np.testing.assert_allclose(e, [0.0, 180.0, 90.0, 37.0, 90.0], atol=1e-9)  # zero pred: documented 90
    # scale of the prediction does not matter
    e2 = angular_error_deg(pred * 0.01, gt, np.ones((1, 5), bool))
    np.testing.assert_allclose(e2, e, atol=1e-9)
    # mask selects pixels in row-major order
    e3 = angular_error_deg(pred, gt, np.array([[False, True, False, True, False]]))
    np.testing.assert_allclose(e3, [180.0, 37.0], atol=1e-9)


def test_angular_error_raises():
    gt = np.tile([0.0, 0.0, 1.0], (2, 2, 1))
    pred = gt.copy()
    pred[0, 0, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        angular_error_deg(pred, gt, np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="no valid pixel"):
        angular_error_deg(gt, gt, np.zeros((2, 2), bool))


def test_normal_metrics_thresholds_strict():
    e = np.array([5.0, 7.5, 11.25, 22.5, 30.0])
    m = normal_metrics(e)
    # a_t = % of errors strictly below t: 5 -> none; 7.5 -> {5}; 11.25 -> {5, 7.5}; ...
    assert (m["a5"], m["a7_5"], m["a11_25"], m["a22_5"], m["a30"]) == (0.0, 20.0, 40.0, 60.0, 80.0)
    assert m["mean"] == pytest.approx(76.25 / 5, rel=1e-12)
    assert m["median"] == 11.25
    # squares: 25 + 56.25 + 126.5625 + 506.25 + 900 = 1614.0625
    assert m["rmse"] == pytest.approx(math.sqrt(1614.0625 / 5), rel=1e-12)
    assert tuple(m) == NORMAL_METRICS


def test_pooled_vs_per_image_differ():
    # image A: errors 0 and 10 deg (2 px); image B: 20 deg on 8 px. Built from vectors.
    gt_a = np.tile([0.0, 0.0, 1.0], (1, 2, 1))
    pred_a = np.stack([_unit(0.0), _unit(10.0, 45.0)])[None]
    gt_b = np.tile([0.0, 0.0, 1.0], (2, 4, 1))
    pred_b = np.tile(_unit(20.0, 200.0), (2, 4, 1))
    ea = angular_error_deg(pred_a, gt_a, np.ones((1, 2), bool))
    eb = angular_error_deg(pred_b, gt_b, np.ones((2, 4), bool))
    per = aggregate_normals([ea, eb], "per_image")
    pooled = aggregate_normals([ea, eb], "pooled")
    tol = dict(rel=1e-9, abs=1e-9)
    # per image: A mean 5, median 5, rmse sqrt(100/2); B all 20 -> plain mean of the two images
    assert per["mean"] == pytest.approx((5 + 20) / 2, **tol)
    assert per["median"] == pytest.approx((5 + 20) / 2, **tol)
    assert per["rmse"] == pytest.approx((math.sqrt(50) + 20) / 2, **tol)
    assert per["a5"] == pytest.approx((50 + 0) / 2, **tol)  # A: {0} of {0, 10}; B: none
    assert per["a11_25"] == pytest.approx((100 + 0) / 2, **tol)  # A: both; B: none
    assert per["a30"] == pytest.approx(100.0, **tol)
    # pooled over 10 px: sum = 0 + 10 + 8*20 = 170; median of [0, 10, 20 x 8] = 20; squares 100 + 3200
    assert pooled["mean"] == pytest.approx(17.0, **tol)
    assert pooled["median"] == pytest.approx(20.0, **tol)
    assert pooled["rmse"] == pytest.approx(math.sqrt(330.0), **tol)
    assert pooled["a11_25"] == pytest.approx(20.0, **tol)  # 2 of 10
    assert pooled["a5"] == pytest.approx(10.0, **tol)  # 1 of 10
    assert per["mean"] != pytest.approx(pooled["mean"])


def test_normal_accumulator_matches_concatenation():
    rng = np.random.default_rng(5)
    errs = [rng.uniform(0, 60, rng.integers(50, 400)) for _ in range(6)]
    ref = normal_metrics(np.concatenate(errs))
    acc = NormalAccumulator()
    per = [acc.add(e) for e in errs]
    assert acc.n_images == 6 and acc.n_pixels == sum(e.size for e in errs)
    assert acc.pooled() == pytest.approx(ref, rel=1e-12)
    assert acc.result("per_image") == pytest.approx(aggregate_depth(per), rel=1e-12)
    # sharded accumulation merges to the same numbers; float32 storage changes the median only by rounding
    a, b = NormalAccumulator(), NormalAccumulator(store_dtype=np.float32)
    for e in errs[:3]:
        a.add(e)
    for e in errs[3:]:
        b.add(e)
    a.merge(b)
    assert a.pooled() == pytest.approx(ref, rel=1e-6)
    with pytest.raises(ValueError, match="aggregation"):
        acc.result("pixels")
    with pytest.raises(ValueError):
        NormalAccumulator().pooled()


# ------------------------------------------------------------------------------------- registry


def test_metric_info_table():
    assert tuple(METRIC_INFO["depth"]) == DEPTH_METRICS
    assert tuple(METRIC_INFO["normals"]) == NORMAL_METRICS
    for task, table in METRIC_INFO.items():
        for name, info in table.items():
            assert info.name == name and info.task == task
            assert info.direction in ("lower", "higher") and info.label
    x100 = {n for n, i in METRIC_INFO["depth"].items() if i.paper_x100}
    assert x100 == {"abs_rel", "delta1", "delta2", "delta3"}
    higher = {n for t in METRIC_INFO.values() for n, i in t.items() if i.direction == "higher"}
    assert higher == {"delta1", "delta2", "delta3", "a5", "a7_5", "a11_25", "a22_5", "a30"}
    assert metric_info("depth", "delta1").label == "δ1"
    assert metric_info("normals", "a11_25").label == "11.25°"
    with pytest.raises(KeyError, match="known"):
        metric_info("depth", "absrel")


def test_alignment_follows_the_output_kind_and_the_dataset_only_switches_it_off():
    from datasets.base import DatasetSpec
    from harness.scoring import alignment_for
    from methods.base import OutputContract

    depth, disparity = OutputContract(kind="depth"), OutputContract(kind="disparity")
    metric = OutputContract(kind="depth", affine_invariant=False)
    fitted, off, in_disparity = (DatasetSpec(task="depth", alignment=a)
                                 for a in ("least_squares", "none", "least_squares_disparity"))
    assert [alignment_for(c, fitted) for c in (depth, disparity, metric)] == [
        "least_squares", "least_squares_disparity", "none"]
    assert [alignment_for(c, off) for c in (depth, disparity, metric)] == ["none"] * 3  # metric evaluation
    assert alignment_for(disparity, in_disparity) == "least_squares_disparity"
    with pytest.raises(ValueError, match="folder:mine asks for alignment least_squares_disparity.*alignment=least_sq"):
        alignment_for(depth, in_disparity, "folder:mine")
