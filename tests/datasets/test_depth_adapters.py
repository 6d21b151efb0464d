"""Depth adapters on fixtures written in each native format: units, masks, crops, lists, folder vs .tar, errors."""
from __future__ import annotations

import os
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest

from datasets.decode import DecodeError
from datasets.diode import DIODE
from datasets.eth3d import ETH3D
from datasets.ibims import IBims
from datasets.kitti import KITTI
from datasets.lists import STANDARD, ListMismatchWarning, fingerprint
from datasets.nyuv2 import NYUv2
from datasets.scannet import ScanNet
from datasets.sintel import Sintel
from datasets.sources import MissingFileError
from depth_fixtures import (make_tar, put, write_diode, write_eth3d, write_ibims, write_kitti, write_nyu_archive,
                            write_nyu_mat, write_scannet, write_sintel)
from harness.evaluate import processing_size


def quiet(cls, *args, **kwargs):
    """Construct an adapter on a fixture (whose list is, by design, not a standard one) without the warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ListMismatchWarning)
        return cls(*args, **kwargs)


def same_samples(a, b) -> None:
    assert a.ids() == b.ids()
    for i in a.ids():
        x, y = a.load(i), b.load(i)
        assert np.array_equal(x.rgb, y.rgb) and np.array_equal(x.depth, y.depth) and np.array_equal(x.valid, y.valid)


@pytest.fixture(scope="module")
def nyu(tmp_path_factory):
    root = tmp_path_factory.mktemp("nyu")
    written = write_nyu_archive(root / "archive")
    write_nyu_mat(root / "mat", written)
    make_tar(root / "archive", root / "nyu.tar", arcname="nyuv2")
    return root, written


def test_nyu_archive_units_range_and_eigen_crop(nyu):
    root, written = nyu
    ds = quiet(NYUv2, root / "archive")
    assert ds.ids() == list(written) and len(ds) == 3  # in image order (rgb_0001, 0003, 0005)
    s = ds.load(ds.ids()[0])
    rgb, depth, _ = written[s.id]
    assert s.rgb.dtype == np.uint8 and s.depth.dtype == np.float32 and s.depth.shape == (480, 640)
    assert np.array_equal(s.rgb, rgb) and np.array_equal(s.depth, depth)  # uint16 / 1000, metres
    inside = np.zeros((480, 640), bool)
    inside[45:471, 41:601] = True
    assert np.array_equal(s.valid, inside & (depth > 1e-3) & (depth < 10))
    assert not s.valid[110, 220] and s.depth[110, 220] == pytest.approx(12.0)  # beyond 10 m
    assert not s.valid[44].any() and not s.valid[:, 601:].any() and s.valid[45:471, 41:601].any()
    assert ds.prediction_relpath("test/kitchen_0004/rgb_0001.png") == "test/kitchen_0004/pred_0001.npy"
    assert ds.spec.processing_res == 0 and ds.spec.eval_crop == "eigen" and (ds.spec.clip_min, ds.spec.clip_max) \
        == (1e-3, 10.0)


def test_nyu_tar_in_place_and_original_mat_give_the_same_samples(nyu):
    root, written = nyu
    folder = quiet(NYUv2, root / "archive")
    same_samples(folder, quiet(NYUv2, root / "nyu.tar"))  # below a top folder, read in place
    mat = quiet(NYUv2, root / "mat")
    assert mat.layout.startswith("original") and mat.sample_list.origin.startswith("shipped")
    same_samples(folder, mat)
    same_samples(folder, quiet(NYUv2, make_tar(root / "mat", root / "mat.tar")))  # h5py on the member, in place
    assert mat.describe()["list_fingerprint"] == fingerprint(written)


def test_kitti_kb_then_eigen_crop_units_and_none_lines(tmp_path):
    written, listing = write_kitti(tmp_path / "k")
    (tmp_path / "list.txt").write_text(listing)
    ds = quiet(KITTI, tmp_path / "k", list_path=tmp_path / "list.txt")
    assert len(ds) == 2 and ds.describe()["list_lines"] == 3  # the None line is listed, not evaluated
    s = ds.load(ds.ids()[0])
    rgb, depth, focal = written[s.id]
    top, left = 375 - 352, int((1242 - 1216) / 2)
    assert (top, left) == (23, 13) and s.rgb.shape == (352, 1216, 3) and s.depth.dtype == np.float32
    assert np.array_equal(s.rgb, rgb[top:top + 352, left:left + 1216])
    assert np.array_equal(s.depth, depth[top:top + 352, left:left + 1216])  # uint16 / 256, metres
    crop = np.zeros((352, 1216), bool)
    crop[117:321, 43:1172] = True  # protocol.md: Eigen on the KB-cropped frame
    assert np.array_equal(s.valid, crop & (s.depth > 1e-5) & (s.depth < 80))
    assert s.depth[200 - top, 620 - left] == 90.0 and not s.valid[200 - top, 620 - left]
    assert s.meta["focal"] == focal and ds.spec.processing_res == 0 and (ds.spec.clip_min, ds.spec.clip_max) == \
        (1e-5, 80.0)
    assert ds.prediction_relpath(s.id) == s.id.replace("data/", "data/pred_").replace(".png", ".npy")
    garg = quiet(KITTI, tmp_path / "k", list_path=tmp_path / "list.txt", eval_crop="garg")
    garg_box = np.zeros((352, 1216), bool)
    garg_box[143:349, 43:1172] = True  # int(0.40810811 * 352) : int(0.99189189 * 352)
    assert garg.spec.eval_crop == "garg"
    assert np.array_equal(garg.load(s.id).valid, garg_box & (s.depth > 1e-5) & (s.depth < 80))

def test_kitti_annotated_depth_below_train_and_tar_match(tmp_path):
    _, listing = write_kitti(tmp_path / "a")
    write_kitti(tmp_path / "b", gt_prefix="train/")
    (tmp_path / "list.txt").write_text(listing)
    a = quiet(KITTI, tmp_path / "a", list_path=tmp_path / "list.txt")
    same_samples(a, quiet(KITTI, tmp_path / "b", list_path=tmp_path / "list.txt"))
    same_samples(a, quiet(KITTI, make_tar(tmp_path / "a", tmp_path / "k.tar"), list_path=tmp_path / "list.txt"))
    nested = make_tar(tmp_path / "a", tmp_path / "n.tar", arcname="kitti_eigen_split_test")  # below a top folder
    same_samples(a, quiet(KITTI, nested, list_path=tmp_path / "list.txt"))


def test_kitti_without_a_list_says_where_to_get_it(tmp_path):
    write_kitti(tmp_path / "k")
    with pytest.raises(FileNotFoundError, match="eigen_test_files_with_gt.txt.*--data-list kitti="):
        KITTI(tmp_path / "k")


def test_eth3d_raw_float32_inf_and_both_layouts(tmp_path):
    written = write_eth3d(tmp_path / "archive")
    write_eth3d(tmp_path / "orig", layout="original")
    ds = quiet(ETH3D, tmp_path / "archive")
    assert ds.ids() == sorted(written) and ds.layout == "archive"
    s = ds.load("rgb/office/images/dslr_images/DSC_0219.JPG")
    rgb, depth, _ = written[s.id]
    assert np.array_equal(s.rgb, rgb) and s.depth.dtype == np.float32 and np.array_equal(s.depth, depth)
    assert not s.valid[:5, :7].any() and np.array_equal(s.valid, (depth > 1e-5) & np.isfinite(depth))
    assert ds.spec.processing_res == 756 and ds.spec.fit_max_side == 1024 and ds.spec.clip_max == np.inf
    assert ds.prediction_relpath(s.id) == "rgb/office/images/dslr_images/pred_DSC_0219.npy"
    orig = quiet(ETH3D, tmp_path / "orig")
    assert orig.layout == "original"
    same_samples(ds, orig)
    same_samples(ds, quiet(ETH3D, make_tar(tmp_path / "archive", tmp_path / "e.tar", arcname="eth3d")))
    assert processing_size(4032, 6048, ds.spec.processing_res, 1) == (504, 756)


def test_eth3d_gt_of_another_size_is_refused(tmp_path):
    write_eth3d(tmp_path / "e")
    put(tmp_path / "e", "depth/office_dslr_depth/office/ground_truth_depth/dslr_images/DSC_0219.JPG",
        np.zeros(40 * 59, "<f4").tobytes())
    ds = quiet(ETH3D, tmp_path / "e")
    with pytest.raises(DecodeError, match=r"DSC_0219.JPG.*expected 9600 \(headerless little-endian float32, 40 x 60"):
        ds.load("rgb/office/images/dslr_images/DSC_0219.JPG")


def test_scannet_mm_and_rgb_resized_to_depth(tmp_path):
    written, listing = write_scannet(tmp_path / "s")
    (tmp_path / "list.txt").write_text(listing)
    ds = quiet(ScanNet, tmp_path / "s", list_path=tmp_path / "list.txt")
    assert ds.ids() == [line.split()[0] for line in listing.splitlines()]
    s = ds.load(ds.ids()[0])
    rgb, depth, _ = written[s.id]
    assert s.rgb.shape == (48, 64, 3) and s.depth.dtype == np.float32 and np.array_equal(s.depth, depth)
    assert np.abs(s.rgb.astype(int) - rgb.reshape(48, 2, 64, 2, 3).mean((1, 3))).max() <= 1  # area = 2x2 mean
    assert np.array_equal(s.valid, (depth > 1e-3) & (depth < 10))
    derived = quiet(ScanNet, tmp_path / "s")  # no list: every <scene>/color/*.jpg
    assert sorted(derived.ids()) == sorted(ds.ids())
    assert ds.prediction_relpath(s.id) == "scene0406_02/color/pred_000300.npy" and ds.spec.processing_res == 0
    same_samples(ds, quiet(ScanNet, make_tar(tmp_path / "s", tmp_path / "s.tar"), list_path=tmp_path / "list.txt"))
    nested = make_tar(tmp_path / "s", tmp_path / "n.tar", arcname="scannet")  # below a top folder, with or without list
    same_samples(ds, quiet(ScanNet, nested, list_path=tmp_path / "list.txt"))
    assert sorted(quiet(ScanNet, nested).ids()) == sorted(ds.ids())


def test_diode_mask_file_only_groups_and_top_folder(tmp_path):
    written = write_diode(tmp_path / "d" / "val")
    ds = quiet(DIODE, tmp_path / "d")  # files below val/
    assert ds.ids() == sorted(written)
    groups = {ds.load(i).meta["scene_type"] for i in ds.ids()}
    assert groups == {"indoor", "outdoor"}
    s = ds.load(ds.ids()[0])
    rgb, depth, mask = written[s.id]
    assert np.array_equal(s.valid, mask) and np.array_equal(s.depth, depth) and s.depth.dtype == np.float32
    assert (ds.spec.clip_min, ds.spec.clip_max, ds.spec.processing_res) == (0.6, 350.0, 640)
    same_samples(ds, quiet(DIODE, make_tar(tmp_path / "d", tmp_path / "d.tar")))


def test_non_standard_list_warns_loudly_and_is_recorded(tmp_path):
    write_diode(tmp_path / "d")
    with pytest.warns(ListMismatchWarning, match="NOT a standard list"):
        ds = DIODE(tmp_path / "d")
    info = ds.describe()
    assert info["list_standard"] == "NOT STANDARD" and info["count"] == 3
    assert info["list_fingerprint"] == fingerprint(ds.ids())


def test_a_listed_file_that_is_absent_is_named(tmp_path):
    written, listing = write_scannet(tmp_path / "s")
    (tmp_path / "s" / "scene0088_02" / "depth" / "001100.png").unlink()
    (tmp_path / "list.txt").write_text(listing)
    with pytest.raises(MissingFileError, match=r"1 file\(s\).*\n  scene0088_02/depth/001100.png"):
        quiet(ScanNet, tmp_path / "s", list_path=tmp_path / "list.txt")


def test_truncated_and_8_bit_depth_pngs_are_named(tmp_path):
    written = write_nyu_archive(tmp_path / "n", count=2)
    ids = sorted(written)
    bad = tmp_path / "n" / ids[0].replace("rgb_", "depth_")
    bad.write_bytes(bad.read_bytes()[:200])
    ds = quiet(NYUv2, tmp_path / "n")
    with pytest.raises(DecodeError, match=f"{bad.name}.*truncated"):
        ds.load(ids[0])
    import cv2
    eight = tmp_path / "n" / ids[1].replace("rgb_", "depth_")
    cv2.imwrite(str(eight), np.full((480, 640), 7, np.uint8))
    with pytest.raises(DecodeError, match=f"{eight.name}: uint8 PNG, expected a 16-bit PNG"):
        ds.load(ids[1])


def test_wrong_layout_is_refused_with_what_was_expected(tmp_path):
    write_scannet(tmp_path / "s")
    with pytest.raises(ValueError, match="expected layout: test/<scene>/rgb_NNNN.png"):
        NYUv2(tmp_path / "s")
    with pytest.raises(ValueError, match=r"expected layout: \{indoors,outdoor\}"):
        DIODE(tmp_path / "s")


SPLITS = Path(os.environ.get("HARNESS_SPLITS_DIR", Path(__file__).resolve().parents[3] / "shared" / "splits"))
REAL = {"nyuv2": (NYUv2, "nyu_depth/labeled/filename_list_test.txt", False),
        "eth3d": (ETH3D, "eth3d_depth/eth3d_filename_list.txt", False),
        "scannet": (ScanNet, "scannet_depth/scannet_val_sampled_list_800_1.txt", False),
        "diode": (DIODE, "diode_depth/diode_val_all_filename_list.txt", False),
        "kitti": (KITTI, "kitti_depth/eigen_test_files_with_gt.txt", True)}


@pytest.mark.skipif(not SPLITS.is_dir(), reason=f"standard lists not present at {SPLITS}")
@pytest.mark.parametrize("name", sorted(REAL))
def test_a_root_holding_the_standard_files_gives_the_standard_list(tmp_path, name):
    """Empty files at the standard paths: the list each adapter derives (or reads) is the standard one."""
    cls, relpath, user_list = REAL[name]
    paths = [p for p in (SPLITS / relpath).read_text().split() if p.endswith((".png", ".jpg", ".JPG", ".npy"))]
    with tarfile.open(tmp_path / "root.tar", "w") as tar:  # a .tar read in place, here with empty members
        for path in sorted(set(paths)):
            tar.addfile(tarfile.TarInfo(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ListMismatchWarning)
        ds = cls(tmp_path / "root.tar", list_path=SPLITS / relpath if user_list else None)
    info = ds.describe()
    assert info["list_fingerprint"] == STANDARD[name][0].fingerprint and info["list_standard"] != "NOT STANDARD"
    assert len(ds) == STANDARD[name][0].samples == {"nyuv2": 654, "eth3d": 454, "scannet": 800, "diode": 771,
                                                    "kitti": 652}[name]


def test_ibims_shipped_list_units_and_both_masks(tmp_path):
    written = write_ibims(tmp_path / "ibims1_core_raw")
    ds = IBims(make_tar(tmp_path, tmp_path.parent / f"{tmp_path.name}.tar"))  # below a top folder, in a tar
    assert ds.ids() == list(written) and ds.sample_list.origin == "shipped: imagelist.txt"
    for i in ds.ids():
        s = ds.load(i)
        rgb, depth, valid = written[i]
        assert np.array_equal(s.rgb, rgb) and s.depth.dtype == np.float32 and np.allclose(s.depth, depth, rtol=1e-7, atol=0)
        assert np.array_equal(s.valid, valid) and not s.valid[:6].any() and not s.valid[:, :5].any()
    assert ds.spec.clip_max == 50.0 and ds.prediction_relpath("rgb/corridor_01.png") == "rgb/pred_corridor_01.npy"


def test_sintel_dpt_pass_choice_and_range(tmp_path):
    written = write_sintel(tmp_path / "s")
    ds = quiet(Sintel, tmp_path / "s")
    assert ds.ids() == sorted(written)
    s = ds.load("training/final/alley_1/frame_0001.png")
    rgb, depth, _ = written[s.id]
    assert np.array_equal(s.rgb, rgb) and np.array_equal(s.depth, depth) and s.depth.dtype == np.float32
    assert np.array_equal(s.valid, (depth > 1e-3) & (depth < 80)) and not s.valid[depth == 1e4].any()
    clean = quiet(Sintel, tmp_path / "s", image_pass="clean", max_depth=50)
    assert np.array_equal(clean.load(clean.ids()[0]).rgb, 255 - written[ds.ids()[0]][0])
    assert clean.spec.max_depth == clean.spec.clip_max == 50.0
    bad = tmp_path / "s" / "training" / "depth" / "cave_2" / "frame_0001.dpt"
    bad.write_bytes(b"\x00\x00\x80\x3f" + bad.read_bytes()[4:])  # tag 1.0
    with pytest.raises(DecodeError, match="frame_0001.dpt: tag 1.0, expected 202021.25"):
        ds.load("training/final/cave_2/frame_0001.png")


def test_nyu_mat_is_read_one_image_at_a_time(nyu):
    """Peak Python/NumPy allocation while loading one sample stays near one image's worth, not the whole file."""
    import tracemalloc

    root, written = nyu
    ds = quiet(NYUv2, root / "mat")
    one = 480 * 640 * (3 + 4 + 4 + 1)  # rgb uint8, raw + converted depth float32, valid bool
    whole = (root / "mat" / "nyu_depth_v2_labeled.mat").stat().st_size
    tracemalloc.start()
    try:
        ds.load(ds.ids()[0])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2.5 * one < whole


def test_eth3d_spec_makes_the_alignment_fit_on_the_thinned_grid():
    from dataclasses import replace

    from datasets.base import Sample
    from harness.align import fit_scale_shift
    from harness.scoring import score_depth

    rng = np.random.default_rng(0)
    gt = rng.uniform(1, 5, (8, 12)).astype(np.float32)
    pred = (gt + rng.normal(0, 0.5, gt.shape)).astype(np.float32)
    sample = Sample("x", np.zeros((8, 12, 3), np.uint8), np.ones((8, 12), bool), depth=gt)
    spec = replace(ETH3D.spec, fit_max_side=4)  # 8 x 12 -> strides (2, 3)
    row = score_depth(pred[None], sample, spec, "least_squares")
    assert row["scale"] == pytest.approx(fit_scale_shift(pred, gt, sample.valid, (2, 3))[0], rel=1e-12)
    assert row["scale"] != pytest.approx(fit_scale_shift(pred, gt, sample.valid)[0], rel=1e-6)


def test_an_exif_orientation_tag_does_not_rotate_the_rgb_away_from_its_gt():
    import io

    from PIL import Image

    from datasets.decode import rgb_image

    rows, cols = np.mgrid[0:40, 0:60]
    pixels = np.stack([rows * 6, cols * 4, np.full_like(rows, 128)], -1).astype(np.uint8)  # smooth: JPEG keeps it
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display", as cameras write for portrait shots
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95, exif=exif)
    decoded = rgb_image(buffer.getvalue(), "DSC_0001.JPG")
    assert decoded.shape == (40, 60, 3)  # the sensor's grid, the GT's (OpenCV alone would give 60 x 40)
    assert np.abs(decoded.astype(int) - pixels).mean() < 8  # JPEG rounding only
