"""The four surface-normal benchmarks read from DSINE's evaluation layout (fixtures written from the tiny world)."""
from __future__ import annotations

import io
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest

from datasets.decode import DecodeError
from datasets.ibims_normals import IBimsNormals
from datasets.lists import STANDARD, ListMismatchWarning, fingerprint
from datasets.nyuv2_normals import NYUv2Normals
from datasets.scannet_normals import ScanNetNormals
from datasets.sintel_normals import SintelNormals
from datasets.sources import MissingFileError
from harness.metrics import angular_error_deg
from normals_fixtures import LAYOUTS, make_tar, normal_exr, write_dsine

ADAPTERS = {"nyuv2_normals": NYUv2Normals, "scannet_normals": ScanNetNormals, "ibims_normals": IBimsNormals,
            "sintel_normals": SintelNormals}
PNG_BOUND_DEG = 0.4  # 8-bit quantisation: |error| <= sqrt(3) * 0.5 / 127.5 rad = 0.389 deg
SPLITS = Path(__file__).resolve().parents[3] / "shared" / "splits"


def build(name, tmp_path, count=3, **kw):
    folder = tmp_path / "dsine_eval" / LAYOUTS[name][0]
    truth = write_dsine(folder, name, count, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ListMismatchWarning)
        return ADAPTERS[name](root=str(folder)), truth, folder


def pooled_error(ds, truth) -> np.ndarray:
    return np.concatenate([angular_error_deg(s.normals, truth[s.id].normals, truth[s.id].valid) for s in ds])


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_decoded_units_dtype_and_valid_mask(name, tmp_path):
    ds, truth, _ = build(name, tmp_path)
    assert ds.spec.task == "normals" and ds.spec.alignment == "none" and ds.evaluation
    for s in ds:
        t = truth[s.id]
        assert s.normals.dtype == np.float32 and s.normals.shape == t.normals.shape
        assert s.rgb.dtype == np.uint8 and np.array_equal(s.rgb, t.rgb)
        assert np.array_equal(s.valid, t.valid)
        assert np.allclose(np.linalg.norm(s.normals[s.valid], axis=-1), 1, atol=1e-5)
        assert np.array_equal(s.normals[~s.valid], np.tile([0, 0, 1.0], ((~s.valid).sum(), 1)))
        assert np.array(s.meta["intrinsics"]).shape == (3, 3)


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_canonical_round_trip_is_zero_degrees(name, tmp_path):
    ds, truth, _ = build(name, tmp_path)
    errors = pooled_error(ds, truth)
    if LAYOUTS[name][2] == ".exr":  # float files: exact up to float32 rounding
        assert errors.max() < 1e-3
    else:
        assert errors.max() < PNG_BOUND_DEG


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_wrong_flip_is_caught(name, tmp_path):
    ds, truth, _ = build(name, tmp_path, count=4, frame="canonical")  # x not flipped into DSINE's frame
    assert pooled_error(ds, truth).mean() > 25.0


def test_gt_against_itself_after_conversion_round_trip(tmp_path):
    """Adapter GT -> DSINE's file frame -> adapter decoding again: 0 degrees (the conversion is its own inverse)."""
    ds, _, folder = build("sintel_normals", tmp_path)
    first = ds.load(ds.ids()[0])
    path = folder / ds.ids()[0].replace("_img.png", "_normal.exr")
    path.write_bytes(normal_exr(first.normals, first.valid))  # canonical -> x-left file, as DSINE stores it
    again = ds.load(ds.ids()[0])
    assert angular_error_deg(again.normals, first.normals, first.valid).max() < 1e-3
    assert np.array_equal(again.valid, first.valid)


@pytest.mark.parametrize("name", ["nyuv2_normals", "sintel_normals"])
def test_processing_resolution_is_native_unless_set(name, tmp_path):
    ds, _, folder = build(name, tmp_path, count=1, height=20, width=36)
    assert ds.spec.processing_res == 0 and ds.load(ds.ids()[0]).rgb.shape == (20, 36, 3)
    assert ADAPTERS[name](root=str(folder), warn_list=False, processing_res=768).spec.processing_res == 768
    assert ds.describe()["processing_res"] == 0 and ds.describe()["aggregation"] == "pooled"
    per_image = ADAPTERS[name](root=str(folder), warn_list=False, aggregation="per_image")
    assert per_image.spec.normals_aggregation == "per_image"
    with pytest.raises(ValueError, match="aggregation must be"):
        ADAPTERS[name](root=str(folder), aggregation="mean")


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_sample_count_user_list_and_fingerprint(name, tmp_path):
    ds, truth, folder = build(name, tmp_path, count=4)
    assert len(ds) == 4 and sorted(ds.ids()) == sorted(truth)
    assert ds.describe()["list_fingerprint"] == fingerprint(truth)
    chosen = sorted(truth)[1:3][::-1]
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{i} {i.replace('_img.png', '_normal.npy')}\n" for i in chosen))
    with pytest.warns(ListMismatchWarning, match="NOT a standard list"):
        sub = ADAPTERS[name](root=str(folder), list_path=str(listing))
    assert sub.ids() == chosen and sub.describe()["list_origin"].startswith("user list")


@pytest.mark.parametrize("name", ["nyuv2_normals", "ibims_normals"])
def test_marigold_style_list_without_the_folder(name, tmp_path):
    ds, truth, folder = build(name, tmp_path, count=2)
    listing = tmp_path / "marigold.txt"
    listing.write_text("".join(i.split("/", 1)[1] + "\n" for i in sorted(truth)))
    sub = ADAPTERS[name](root=str(folder), list_path=str(listing), warn_list=False)
    assert sub.ids() == sorted(truth)


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_folder_and_tar_give_identical_samples(name, tmp_path):
    ds, _, folder = build(name, tmp_path, count=2)
    tar = make_tar(folder, tmp_path / "set.tar", arcname=LAYOUTS[name][0])
    from_tar = ADAPTERS[name](root=str(tar), warn_list=False)
    assert from_tar.ids() == ds.ids() and from_tar.describe()["kind"] == "tar"
    for a, b in zip(ds, from_tar):
        assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.normals, b.normals)
        assert np.array_equal(a.valid, b.valid) and a.meta == b.meta


def test_root_with_dsine_eval_above_is_found(tmp_path):
    build("scannet_normals", tmp_path, count=2)
    ds = ScanNetNormals(root=str(tmp_path / "dsine_eval"), warn_list=False)
    assert len(ds) == 2


def test_truncated_png_normal_names_the_file(tmp_path):
    ds, _, folder = build("nyuv2_normals", tmp_path, count=1)
    path = folder / ds.ids()[0].replace("_img.png", "_normal.png")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DecodeError, match="000000_normal.png"):
        ds.load(ds.ids()[0])


def test_16bit_png_normal_is_refused(tmp_path):
    import cv2

    ds, _, folder = build("scannet_normals", tmp_path, count=1)
    path = folder / ds.ids()[0].replace("_img.png", "_normal.png")
    path.write_bytes(cv2.imencode(".png", np.full((24, 32, 3), 30000, np.uint16))[1].tobytes())
    with pytest.raises(DecodeError, match="8-bit 3-channel"):
        ds.load(ds.ids()[0])


def test_truncated_exr_names_the_file(tmp_path):
    ds, _, folder = build("ibims_normals", tmp_path, count=1)
    path = folder / ds.ids()[0].replace("_img.png", "_normal.exr")
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(DecodeError, match="room_01_normal.exr.*truncated"):
        ds.load(ds.ids()[0])


def test_exr_nobody_can_read_says_how_to_enable_opencv(tmp_path):
    ds, _, folder = build("sintel_normals", tmp_path, count=1, compression="piz")
    with pytest.raises(DecodeError, match="OPENCV_IO_ENABLE_OPENEXR=1"):
        ds.load(ds.ids()[0])


def test_missing_normal_file_and_wrong_layout(tmp_path):
    ds, _, folder = build("sintel_normals", tmp_path, count=2)
    (folder / ds.ids()[1].replace("_img.png", "_normal.exr")).unlink()
    with pytest.raises(MissingFileError, match="frame_0002_normal.exr"):
        SintelNormals(root=str(folder), warn_list=False)
    with pytest.raises(ValueError, match="does not have DSINE's ibims layout"):
        IBimsNormals(root=str(folder))
    with pytest.raises(ValueError, match="does not have DSINE's scannet layout"):  # Sintel's scenes are not scene*
        ScanNetNormals(root=str(folder))
    with pytest.raises(FileNotFoundError, match="--data-root ibims_normals=PATH"):
        IBimsNormals(root=None)


REAL_LISTS = [("nyuv2_normals", "dsine/nyuv2_test.txt", 654), ("nyuv2_normals", "nyu_normals/nyuv2_test.txt", 654),
              ("scannet_normals", "dsine/scannet_test.txt", 300),
              ("scannet_normals", "scannet_normals/scannet_test.txt", 300),
              ("ibims_normals", "dsine/ibims_ibims.txt", 100), ("ibims_normals", "ibims_normals/ibims_test.txt", 100),
              ("sintel_normals", "dsine/sintel_sintel.txt", 1064)]


@pytest.mark.skipif(not SPLITS.is_dir(), reason="../shared/splits is not present")
@pytest.mark.parametrize("name,relpath,count", REAL_LISTS)
def test_real_standard_lists(name, relpath, count, tmp_path):
    """The published lists parse to the standard counts and fingerprints (files stubbed as empty tar members)."""
    under = ADAPTERS[name].images_under
    tar_path = tmp_path / "stub.tar"
    with tarfile.open(tar_path, "w") as tar:
        for line in (SPLITS / relpath).read_text().split():
            if line.endswith("_img.png"):
                path = line if (not under or line.startswith(under + "/")) else f"{under}/{line}"
                for suffix in ("_img.png", "_normal" + LAYOUTS[name][2], "_intrins.npy"):
                    tar.addfile(tarfile.TarInfo(path[: -len("_img.png")] + suffix), io.BytesIO(b""))
    folder = tar_path
    with warnings.catch_warnings():
        warnings.simplefilter("error", ListMismatchWarning)
        ds = ADAPTERS[name](root=str(folder), list_path=str(SPLITS / relpath))
    info = ds.describe()
    assert len(ds) == count == info["list_lines"]
    assert info["list_fingerprint"] in {s.fingerprint for s in STANDARD[name]}
    assert info["list_standard"] != "NOT STANDARD"
    derived = ADAPTERS[name](root=str(folder))  # the list that follows from the files is the same set
    assert sorted(derived.ids()) == sorted(ds.ids())


def test_opencv_exr_path_gives_the_same_normals(tmp_path, monkeypatch):
    """Where OpenCV reads EXR (BGR order), the adapter's result equals the built-in reader's."""
    import datasets.dsine_normals as dn
    from datasets.exr import read_exr_rgb

    ds, _, _ = build("ibims_normals", tmp_path, count=1)
    builtin = ds.load(ds.ids()[0])
    monkeypatch.setattr(dn.decode, "exr", lambda data, where: read_exr_rgb(data)[:, :, ::-1].copy())
    via_opencv = ds.load(ds.ids()[0])
    assert np.array_equal(via_opencv.normals, builtin.normals) and np.array_equal(via_opencv.valid, builtin.valid)
