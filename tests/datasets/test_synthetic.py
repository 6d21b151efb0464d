"""Tests of the tiny world (datasets.synthetic): determinism, units, geometry, shading, adapters."""
from __future__ import annotations

import numpy as np
import pytest

from datasets.base import Dataset, Sample
from datasets.registry import DATASETS
from datasets.synthetic import SPLIT_CODE, SyntheticDepth, SyntheticNormals, camera_rays, make_scene, render

INDOOR = [0, 2, 4, 6, 8, 10]
OUTDOOR = [1, 3, 5, 7, 9, 11]


def _same(a: Sample, b: Sample) -> bool:
    return all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("rgb", "depth", "normals", "valid"))


def test_determinism():
    for i in (0, 1):
        assert _same(render("val", i, seed=3), render("val", i, seed=3))


def test_splits_and_seeds_differ():
    a, b, c = (render(s, 0) for s in ("train", "val", "test"))
    assert not np.allclose(a.depth, b.depth) and not np.allclose(b.depth, c.depth) and not np.allclose(a.depth, c.depth)
    assert not np.allclose(render("test", 0, seed=1).depth, c.depth)
    assert len(set(SPLIT_CODE.values())) == 3
    with pytest.raises(ValueError, match="bogus"):
        render("bogus", 0)


def test_schema_and_units():
    s = render("test", 0, height=48, width=40)
    assert s.id == "test/00000" and s.meta == {"scene_type": "indoor", "split": "test", "index": 0}
    assert s.rgb.shape == (48, 40, 3) and s.rgb.dtype == np.uint8
    assert s.depth.dtype == np.float32 and s.normals.dtype == np.float32 and s.valid.dtype == bool
    assert s.rgb.std() > 5  # not a flat image


def test_indoor_depth_range():
    for i in INDOOR:
        s = render("test", i)
        assert s.meta["scene_type"] == "indoor"
        assert s.valid.all()  # a closed room: every ray hits something
        assert 0.3 < s.depth.min() and s.depth.max() <= 12.0
    assert max(render("test", i).depth.max() for i in INDOOR) > 5.0  # not all tiny rooms


def test_outdoor_depth_range_and_invalid_sky():
    far = []
    for i in OUTDOOR:
        s = render("test", i)
        assert s.meta["scene_type"] == "outdoor"
        d = s.depth[s.valid]
        assert d.size > 0 and d.max() < 80.0 and d.min() > 1.0
        assert np.all(s.depth[~s.valid] == 0)
        assert np.all(s.normals[~s.valid] == np.array([0, 0, 1], np.float32))
        far.append((d > 20).mean())
    assert np.mean(far) > 0.05
    assert any((~render("test", i).valid).any() for i in OUTDOOR)  # sky / far ground are invalid


def test_normals_unit_and_facing_camera():
    for i in (0, 1, 2, 3):
        s = render("val", i)
        n = s.normals[s.valid]
        assert np.allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-4)
        rays = camera_rays(make_scene("val", i), 64, 64).reshape(64, 64, 3)[s.valid]
        assert np.all(np.einsum("nj,nj->n", n, rays) <= 1e-6)


def _fd_normals(depth: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normals from back-projected planar depth by central differences, and where they are defined."""
    h, w = depth.shape
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    P = np.stack([(u - K[0, 2]) / K[0, 0] * depth, -(v - K[1, 2]) / K[1, 1] * depth, -depth], -1)
    du, dv = P[1:-1, 2:] - P[1:-1, :-2], P[:-2, 1:-1] - P[2:, 1:-1]  # +x (right) and +y (up) in the image
    n = np.cross(du, dv)
    return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12), (slice(1, -1), slice(1, -1))


def test_normals_consistent_with_depth():
    from datasets.synthetic import intrinsics

    for i in (0, 1, 2, 3):
        s = render("test", i)
        K = intrinsics(make_scene("test", i), 64, 64)
        fd, crop = _fd_normals(s.depth.astype(np.float64), K)
        ok = s.valid[crop] & s.valid[:-2, 1:-1] & s.valid[2:, 1:-1] & s.valid[1:-1, :-2] & s.valid[1:-1, 2:]
        cos = np.einsum("hwj,hwj->hw", fd, s.normals[crop])[ok]
        ang = np.degrees(np.arccos(np.clip(cos, -1, 1)))
        assert ok.sum() > 500
        assert np.median(ang) < 3.0, (i, np.median(ang))
        assert np.mean(ang < 10) > 0.7


def test_floor_normal_points_up_indoors():
    s = render("test", 0)
    sc = make_scene("test", 0)
    # the lowest image row looks at the floor in this level-ish camera; its normal is the world +y in camera frame
    up_cam = sc.cam_R.T @ np.array([0.0, 1.0, 0.0])
    bottom = s.normals[-1][s.valid[-1]]
    assert np.median(bottom @ up_cam) > 0.99
    assert np.median(bottom[:, 1]) > 0.8  # camera pitch/roll are small


def test_resolution_independence():
    for i in (0, 1):
        lo, hi = render("test", i, height=32, width=32), render("test", i, height=64, width=64)
        hd = hi.depth.reshape(32, 2, 32, 2)
        both = lo.valid & hi.valid.reshape(32, 2, 32, 2).all(axis=(1, 3))
        hmean = hd.mean(axis=(1, 3))
        rel = np.abs(hmean[both] - lo.depth[both]) / lo.depth[both]
        assert both.mean() > 0.5 and np.median(rel) < 0.02
        assert lo.meta == hi.meta


def test_balance_indoor_outdoor():
    kinds = [render("train", i, height=8, width=8).meta["scene_type"] for i in range(10)]
    assert kinds.count("indoor") == kinds.count("outdoor") == 5


def test_shadows_darken():
    darker = 0
    for i in (0, 1, 2, 3):
        on, off = render("test", i, shadows=True), render("test", i, shadows=False)
        assert np.array_equal(on.depth, off.depth)
        diff = off.rgb.astype(int) - on.rgb.astype(int)
        assert diff.min() >= 0  # a shadow never brightens
        darker += (diff.sum(-1) > 10).mean()
    assert darker / 4 > 0.01


def test_rgb_not_a_function_of_depth():
    s = render("test", 2)
    g = s.rgb.mean(-1)
    assert abs(np.corrcoef(g[s.valid], s.depth[s.valid])[0, 1]) < 0.9


def test_trivial_predictors_are_not_good():
    """A per-image least-squares-fitted vertical ramp must leave a clear error on most scenes."""
    bad = 0
    for i in range(8):
        s = render("val", i)
        v = s.valid
        rows = np.broadcast_to(np.arange(64)[:, None], (64, 64))[v].astype(float)
        A = np.stack([rows, np.ones_like(rows)], 1)
        coef, *_ = np.linalg.lstsq(A, s.depth[v], rcond=None)
        absrel = np.mean(np.abs(np.clip(A @ coef, 1e-3, 80) - s.depth[v]) / s.depth[v])
        bad += absrel > 0.1
    assert bad >= 5


def test_adapters_registered_and_spec():
    assert DATASETS["synthetic"] is SyntheticDepth and DATASETS["synthetic_normals"] is SyntheticNormals
    d, n = SyntheticDepth(), SyntheticNormals(split="val")
    assert isinstance(d, Dataset) and len(d) == 200 and len(n) == 100 and len(SyntheticDepth("train")) == 2000
    assert d.spec.task == "depth" and d.spec.alignment == "least_squares"
    assert n.spec.task == "normals" and n.spec.alignment == "none"
    for sp in (d.spec, n.spec):
        assert (sp.min_depth, sp.max_depth, sp.clip_min, sp.clip_max) == (1e-3, 80.0, 1e-3, 80.0)
        assert sp.processing_res is None and sp.normals_aggregation == "pooled"  # no protocol value: the method's own
    desc = d.describe()
    assert desc["name"] == "synthetic" and desc["count"] == 200 and desc["split"] == "test"
    assert desc["seed"] == 0 and desc["resolution"] == [64, 64]


def test_adapter_ids_and_load():
    ds = SyntheticNormals(split="train", count=3, seed=5, height=16, width=24)
    assert ds.ids() == ["train/00000", "train/00001", "train/00002"]
    s = ds.load("train/00001")
    assert s.id == "train/00001" and s.rgb.shape == (16, 24, 3) and s.meta["scene_type"] == "outdoor"
    assert _same(s, render("train", 1, seed=5, height=16, width=24))
    assert [x.id for x in ds] == ds.ids()
    for bad in ("train/00003", "val/00000", "train/1", "nonsense"):
        with pytest.raises(ValueError, match=bad):
            ds.load(bad)
    with pytest.raises(ValueError):
        SyntheticDepth(split="bogus")
