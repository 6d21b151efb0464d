"""Dataset roots (folder / .tar in place), root resolution, sample lists and fingerprints, pure decoders."""
from __future__ import annotations

import os
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

from datasets import decode
from datasets.lists import STANDARD, ListMismatchWarning, fingerprint, make_list, parse_list
from datasets.roots import MissingRootError, config_path, read_config, resolve
from datasets.sources import MissingFileError, TruncatedFileError, locate, open_source
from depth_fixtures import make_tar, put

SPLITS = Path(os.environ.get("HARNESS_SPLITS_DIR", Path(__file__).resolve().parents[3] / "shared" / "splits"))
needs_splits = pytest.mark.skipif(not SPLITS.is_dir(), reason=f"standard lists not present at {SPLITS}")


def tree(root: Path) -> Path:
    put(root, "top/a.txt", b"alpha")
    put(root, "top/sub/b.bin", bytes(range(256)) * 40)
    return root


def test_folder_and_tar_read_the_same_members(tmp_path):
    folder = open_source(tree(tmp_path / "d"))
    tar = open_source(make_tar(tmp_path / "d", tmp_path / "d.tar"))
    assert folder.list() == tar.list() == ["top/a.txt", "top/sub/b.bin"]
    assert folder.sub("top").list("sub") == tar.sub("top").list("sub") == ["sub/b.bin"]
    for src in (folder, tar):
        assert src.read("top/sub/b.bin") == bytes(range(256)) * 40 and src.exists("top/a.txt")
        assert src.is_dir("top/sub") and not src.exists("top/sub") and src.top_folders() == ["top"]
        with src.open("top/a.txt") as f:
            f.seek(2)
            assert f.read() == b"pha"
        assert locate(src, lambda s: s.exists("a.txt"), "a.txt").read("a.txt") == b"alpha"  # single top folder


def test_missing_member_and_wrong_layout_name_the_root(tmp_path):
    tar_path = make_tar(tree(tmp_path / "d"), tmp_path / "d.tar")
    with pytest.raises(MissingFileError, match=r"d\.tar \(member top/nope.png\): no such file"):
        open_source(tar_path).read("top/nope.png")
    with pytest.raises(MissingFileError, match=r"/d/top/nope.png: no such file"):
        open_source(tmp_path / "d").read("top/nope.png")
    with pytest.raises(ValueError, match="does not have the expected layout: rgb/"):
        locate(open_source(tar_path), lambda s: s.is_dir("rgb"), "rgb/<scene>/...")


def test_truncated_tar_is_reported_as_truncated(tmp_path):
    tar_path = make_tar(tree(tmp_path / "d"), tmp_path / "d.tar")
    data = tar_path.read_bytes()
    cut = tmp_path / "cut.tar"
    with tarfile.open(tar_path) as t:
        member = t.getmember("top/sub/b.bin")
    cut.write_bytes(data[:member.offset_data + 100])
    src = open_source(cut)
    with pytest.raises(TruncatedFileError, match=r"cut\.tar \(member top/sub/b.bin\).*truncated"):
        src.read("top/sub/b.bin")
    with pytest.raises(TruncatedFileError, match="truncated"):
        src.open("top/sub/b.bin")


def test_roots_that_are_compressed_absent_or_not_tar_are_refused(tmp_path):
    (tmp_path / "x.tar.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(ValueError, match="compressed.*extract it, or decompress it to .tar"):
        open_source(tmp_path / "x.tar.gz")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_source(tmp_path / "nothing")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="neither a folder nor a .tar"):
        open_source(tmp_path / "notes.txt")


NEEDS = {"nyuv2": True, "kitti": True, "synthetic": False}
OBTAIN = {"nyuv2": "NYU from somewhere", "kitti": "KITTI from elsewhere"}


def test_root_precedence_is_cli_then_environment_then_config_file(tmp_path):
    for name in ("cli", "env", "file"):
        (tmp_path / name).mkdir()
    (tmp_path / "eigen.txt").write_text("a.png b.png 1.0\n")
    cfg = tmp_path / "data.conf"
    cfg.write_text(f"# my data\nnyuv2 = {tmp_path / 'file'}\nkitti = {tmp_path / 'file'}\n"
                   f"kitti.list = {tmp_path / 'eigen.txt'}\n")
    env = {"HARNESS_DATA_CONFIG": str(cfg), "HARNESS_DATA_NYUV2": str(tmp_path / "env")}
    r = resolve(["nyuv2", "kitti", "synthetic"], NEEDS, OBTAIN, env=env)
    assert r.roots == {"nyuv2": str(tmp_path / "env"), "kitti": str(tmp_path / "file")}
    assert r.lists == {"kitti": str(tmp_path / "eigen.txt")} and r.origins["nyuv2"] == "HARNESS_DATA_NYUV2"
    r = resolve(["nyuv2", "kitti"], NEEDS, OBTAIN, cli_roots={"nyuv2": str(tmp_path / "cli")}, env=env)
    assert r.roots["nyuv2"] == str(tmp_path / "cli") and r.kwargs("kitti")["list_path"] == str(tmp_path / "eigen.txt")


def test_every_missing_root_is_listed_in_one_error_or_skipped(tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path), "HARNESS_DATA_KITTI": str(tmp_path / "gone")}
    with pytest.raises(MissingRootError) as err:
        resolve(["nyuv2", "kitti", "synthetic"], NEEDS, OBTAIN, env=env)
    text = str(err.value)
    assert text.startswith("2 dataset(s) have no data (pass --skip-missing")
    assert "nyuv2: no root given; provide it with --data-root nyuv2=PATH, or HARNESS_DATA_NYUV2=PATH" in text
    assert f"'nyuv2 = PATH' in {tmp_path / 'dpbridge-harness' / 'data.conf'}" in text
    assert f"kitti: root {tmp_path / 'gone'} (from HARNESS_DATA_KITTI) does not exist" in text
    assert "Obtain it: NYU from somewhere" in text and "Obtain it: KITTI from elsewhere" in text
    r = resolve(["nyuv2", "kitti", "synthetic"], NEEDS, OBTAIN, env=env, skip_missing=True)
    assert r.roots == {} and sorted(r.skipped) == ["kitti", "nyuv2"]
    with pytest.raises(MissingRootError, match=r"kitti: no root given.*; no sample list given \(the benchmark ships "
                       r"none\); provide it with --data-list kitti=PATH, or HARNESS_LIST_KITTI=PATH"):
        resolve(["kitti"], NEEDS, OBTAIN, env={"XDG_CONFIG_HOME": str(tmp_path)}, needs_list={"kitti": True})
    with pytest.raises(MissingRootError, match=r"sample list /nowhere/l.txt \(from command line\) does not exist"):
        resolve(["kitti"], NEEDS, OBTAIN, cli_roots={"kitti": str(tmp_path)}, cli_lists={"kitti": "/nowhere/l.txt"},
                env={"XDG_CONFIG_HOME": str(tmp_path)})
    with pytest.raises(ValueError, match="not among the datasets of this run"):
        resolve(["synthetic"], NEEDS, OBTAIN, cli_roots={"kitty": "/x"}, env=env)


def test_config_file_location_and_malformed_lines(tmp_path):
    assert config_path({"XDG_CONFIG_HOME": "/cfg"}) == Path("/cfg/dpbridge-harness/data.conf")
    assert config_path({"HARNESS_DATA_CONFIG": "/x/y.conf"}) == Path("/x/y.conf")
    bad = tmp_path / "bad.conf"
    bad.write_text("nyuv2 = /a\nkitti /b\n")
    with pytest.raises(ValueError, match=r"bad.conf:2: expected 'NAME = PATH'"):
        read_config(bad)


def test_fingerprint_definition_and_loud_mismatch():
    assert fingerprint(["b x", "a"]) == __import__("hashlib").sha256(b"a\nb x").hexdigest()[:16]
    rows = parse_list("a.png d.png\n\nb.png e.png\n", "l.txt", 2)
    assert rows == [["a.png", "d.png"], ["b.png", "e.png"]]
    with pytest.raises(ValueError, match="l.txt:1: 1 column"):
        parse_list("a.png\n", "l.txt", 2)
    with pytest.warns(ListMismatchWarning, match="kitti: the sample list .* is NOT a standard list"):
        listed = make_list("kitti", rows, "user list l.txt")
    assert listed.standard is None and listed.describe()["list_standard"] == "NOT STANDARD"


STANDARD_FILES = {  # registered name -> (file under ../shared/splits, lines, evaluated samples)
    "nyuv2": ("nyu_depth/labeled/filename_list_test.txt", 654, 654),
    "kitti": ("kitti_depth/eigen_test_files_with_gt.txt", 697, 652),
    "eth3d": ("eth3d_depth/eth3d_filename_list.txt", 454, 454),
    "scannet": ("scannet_depth/scannet_val_sampled_list_800_1.txt", 800, 800),
    "diode": ("diode_depth/diode_val_all_filename_list.txt", 771, 771),
}


@needs_splits
@pytest.mark.parametrize("name", sorted(STANDARD_FILES))
def test_real_standard_lists_parse_with_their_counts_and_fingerprints(name):
    relpath, lines, samples = STANDARD_FILES[name]
    rows = parse_list((SPLITS / relpath).read_text(), relpath, 2)
    listed = make_list(name, rows, relpath)
    assert listed.standard is not None and listed.fingerprint == STANDARD[name][0].fingerprint
    assert len(rows) == lines == STANDARD[name][0].lines
    assert sum(r[1] != "None" for r in rows) == samples == STANDARD[name][0].samples


@needs_splits
def test_diode_standard_list_has_325_indoor_and_446_outdoor():
    rows = parse_list((SPLITS / STANDARD_FILES["diode"][0]).read_text(), "diode", 3)
    kinds = [r[0].split("/")[0] for r in rows]
    assert kinds.count("indoors") == 325 and kinds.count("outdoor") == 446


def test_sintel_dpt_and_raw_float32_and_png16_checks():
    depth = np.arange(12, dtype=np.float32).reshape(3, 4)
    dpt = struct.pack("<fii", 202021.25, 4, 3) + depth.astype("<f4").tobytes()
    assert np.array_equal(decode.sintel_dpt(dpt, "a.dpt"), depth)
    with pytest.raises(decode.DecodeError, match="a.dpt: tag .*expected 202021.25"):
        decode.sintel_dpt(struct.pack("<fii", 1.0, 4, 3) + depth.tobytes(), "a.dpt")
    with pytest.raises(decode.DecodeError, match="a.dpt: .*truncated"):
        decode.sintel_dpt(dpt[:-4], "a.dpt")
    with pytest.raises(decode.DecodeError, match="x.png: 3-channel PNG"):
        decode.png16(decode.encode_image(np.zeros((2, 2, 3), np.uint16)), "x.png")
    with pytest.raises(decode.DecodeError, match="x.raw: 8 bytes, expected 12"):
        decode.raw_float32(bytes(8), "x.raw", 1, 3)
    with pytest.raises(decode.DecodeError, match="x.npy: cannot read as .npy"):
        decode.npy(b"not numpy", "x.npy")


def test_tar_made_with_dot_prefixed_members_reads_like_the_folder(tmp_path):
    """Archives made with ``tar -C DIR .`` (as the evaluation archives are) name members ``./test/...``."""
    tree(tmp_path / "d")
    with tarfile.open(tmp_path / "dot.tar", "w") as tar:
        tar.add(tmp_path / "d", arcname=".")
    src = open_source(tmp_path / "dot.tar")
    assert src.list() == ["top/a.txt", "top/sub/b.bin"] and src.read("top/a.txt") == b"alpha"
    assert src.top_folders() == ["top"]
