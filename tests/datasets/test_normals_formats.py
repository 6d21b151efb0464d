"""Pure conversions of native normal encodings into the canonical frame (x right, y up, z toward the viewer)."""
from __future__ import annotations

import numpy as np
import pytest

from datasets.normals_formats import (canonical_to_dsine_exr, canonical_to_dsine_png, dsine_exr_to_canonical,
                                      dsine_png_to_canonical, orient_toward_camera, unit_normals)
from harness.metrics import angular_error_deg


def random_unit(shape, seed=0):
    n = np.random.default_rng(seed).normal(size=shape + (3,))
    n[..., 2] = np.abs(n[..., 2])  # facing the viewer
    return (n / np.linalg.norm(n, axis=-1, keepdims=True)).astype(np.float32)


def test_dsine_files_are_x_left():
    file_left = np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], np.float32)  # DSINE: +x = left, +y = up
    canonical, valid = dsine_exr_to_canonical(file_left)
    assert valid.all() and np.array_equal(canonical, [[[-1, 0, 0], [0, 1, 0]]])
    png = np.array([[[255, 128, 128], [128, 128, 255]]], np.uint8)  # pointing left; facing the camera
    canonical, valid = dsine_png_to_canonical(png)
    assert valid.all() and canonical[0, 0, 0] < -0.99 and canonical[0, 1, 2] > 0.99


def test_exr_conversion_round_trip_is_zero_degrees():
    file_frame = random_unit((16, 16))
    canonical, valid = dsine_exr_to_canonical(file_frame)
    back = canonical_to_dsine_exr(canonical, valid)
    assert angular_error_deg(back, file_frame, valid).max() < 1e-4
    np.testing.assert_allclose(dsine_exr_to_canonical(back)[0], canonical, atol=1e-6)


def test_png_conversion_round_trip_within_quantisation():
    truth = random_unit((32, 32), seed=1)
    valid = np.ones((32, 32), bool)
    valid[:4] = False
    decoded, decoded_valid = dsine_png_to_canonical(canonical_to_dsine_png(truth, valid))
    assert np.array_equal(decoded_valid, valid)
    assert angular_error_deg(decoded, truth, valid).max() < 0.4  # 8 bits per component
    assert np.array_equal(decoded[~valid], np.tile([0, 0, 1.0], ((~valid).sum(), 1)))


def test_wrong_flip_shows_as_a_large_error():
    truth = random_unit((32, 32), seed=2)
    valid = np.ones((32, 32), bool)
    unflipped = dsine_exr_to_canonical(truth)[0]  # reading canonical data as if it were DSINE's x-left files
    assert angular_error_deg(unflipped, truth, valid).mean() > 30


def test_exr_validity_threshold_and_png_checks():
    n = np.zeros((1, 3, 3), np.float32)
    n[0, 1] = (0, 0, 0.4)  # |n| = 0.4: invalid
    n[0, 2] = (0, 0, 0.6)
    assert dsine_exr_to_canonical(n)[1].tolist() == [[False, False, True]]
    with pytest.raises(ValueError, match="8-bit"):
        dsine_png_to_canonical(np.zeros((2, 2, 3), np.uint16))


def test_orient_toward_camera_flips_only_normals_facing_away():
    n = np.zeros((3, 3, 3), np.float32)
    n[..., 2] = -1.0  # all facing away (z back = toward viewer is +z)
    n[0, 0] = (0, 0, 1.0)
    out = orient_toward_camera(n, focal_px=10.0)
    assert (out[..., 2] > 0).all()
    grazing = np.zeros((1, 3, 3), np.float32)
    grazing[0, :, 0] = 1.0  # +x at the left, centre and right pixel: away only right of centre (ray x > 0)
    out = orient_toward_camera(grazing, focal_px=10.0)
    assert out[0, :, 0].tolist() == [1.0, 1.0, -1.0]


def test_unit_normals_mark_invalid_zero_and_nan_vectors():
    n = np.array([[[0, 3, 4], [0, 0, 0], [1, 0, 0], [np.nan, 0, np.inf]]], np.float32)
    out = unit_normals(n, np.array([[True, True, False, False]]))
    assert np.allclose(out[0, 0], [0, 0.6, 0.8]) and out[0, 1:].tolist() == [[0, 0, 1]] * 3
    exr = np.full((2, 2, 3), np.nan, np.float32)
    exr[0, 0] = (0, 0, 1)
    canonical, valid = dsine_exr_to_canonical(exr)  # NaN stored at invalid pixels
    assert valid.tolist() == [[True, False], [False, False]] and np.isfinite(canonical).all()
