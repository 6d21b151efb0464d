"""Samples per second of each depth adapter on a fixture at the benchmark's native resolution.

pytest-benchmark (disabled by default: addopts --benchmark-disable runs each once as a test). Measure with
``python -m pytest tests/datasets/test_bench_adapters.py --benchmark-enable -m "not slow or slow"``: ``load``
is one ``adapter.load`` per round (OPS = samples/s); ``decode`` reads and decodes the same sample's files with
bare OpenCV / NumPy calls, the floor an adapter can reach. ETH3D at full 4032 x 6048 is marked slow.
"""
from __future__ import annotations

import itertools
import warnings

import cv2
import numpy as np
import pytest

from datasets.diode import DIODE
from datasets.eth3d import ETH3D
from datasets.kitti import KITTI
from datasets.lists import ListMismatchWarning
from datasets.nyuv2 import NYUv2
from datasets.scannet import ScanNet
from datasets.ibims import IBims
from datasets.sintel import Sintel
from depth_fixtures import (make_tar, write_diode, write_eth3d, write_ibims, write_kitti, write_nyu_archive,
                            write_scannet, write_sintel)


def build(name: str, root):
    """(adapter, files of the first sample) on a native-resolution fixture under ``root``."""
    if name == "nyuv2":
        write_nyu_archive(root / "d", count=2)
        return NYUv2(root / "d")
    if name == "kitti":
        _, listing = write_kitti(root / "d")
        (root / "list.txt").write_text(listing)
        return KITTI(root / "d", list_path=root / "list.txt")
    if name == "scannet":
        write_scannet(root / "d", rgb_scale=2.025, height=480, width=640)  # colour 972 x 1296 -> 480 x 640
        return ScanNet(root / "d")
    if name == "diode":
        write_diode(root / "d", 768, 1024)
        return DIODE(root / "d")
    if name == "eth3d":
        write_eth3d(root / "d", height=4032, width=6048)
        return ETH3D(root / "d")
    if name == "ibims":
        write_ibims(root / "d", height=480, width=640)
        return IBims(root / "d")
    if name == "sintel":
        write_sintel(root / "d", height=436, width=1024)
        return Sintel(root / "d")
    if name == "diode_tar":
        write_diode(root / "d", 768, 1024)
        return DIODE(make_tar(root / "d", root / "d.tar"))
    raise KeyError(name)


def bare_decode(ds, sample_id: str) -> None:
    """Read and decode the sample's files with no adapter logic (the floor)."""
    for path in files_of(ds, sample_id):
        data = ds.read(path)
        if path.endswith(".npy"):
            np.load(__import__("io").BytesIO(data))
        elif (path.startswith("depth/") and path.endswith(".JPG")) or path.endswith(".dpt"):  # ETH3D raw, .dpt
            np.frombuffer(data, "<f4", offset=12 if path.endswith(".dpt") else 0)
        else:
            cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def files_of(ds, sample_id: str) -> list[str]:
    if isinstance(ds, IBims):
        return [f"{folder}/{ds._names[sample_id]}.png" for folder in ("rgb", "depth", "mask_invalid", "mask_transp")]
    if isinstance(ds, (NYUv2, ScanNet, Sintel)):
        return [sample_id, ds._depth[sample_id]]
    if isinstance(ds, KITTI):
        return [sample_id, ds._gt[sample_id]]
    if isinstance(ds, DIODE):
        return [sample_id, *ds._files[sample_id]]
    return list(ds._files[sample_id])  # ETH3D: (rgb, gt)


NAMES = ["nyuv2", "kitti", "scannet", "diode", "diode_tar", "ibims", "sintel", pytest.param("eth3d", marks=pytest.mark.slow)]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("what", ["load", "decode"])
def test_adapter_samples_per_second(benchmark, tmp_path, name, what):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ListMismatchWarning)
        ds = build(name, tmp_path)
    ids = itertools.cycle(ds.ids())
    benchmark.group = name
    if what == "load":
        sample = benchmark(lambda: ds.load(next(ids)))
        assert sample.valid.any() and sample.depth.dtype == np.float32
    else:
        benchmark(lambda: bare_decode(ds, next(ids)))
