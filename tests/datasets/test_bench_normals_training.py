"""Samples per second of the normals and training-set adapters on native-size fixtures (pytest-benchmark).

``load`` is one ``adapter.load`` per round (OPS = samples/s); ``decode`` reads and decodes the same sample's files
with bare OpenCV / NumPy / h5py calls (EXR: the built-in reader, since this OpenCV has no OpenEXR), the floor an
adapter can reach. Measure with ``python -m pytest tests/datasets/test_bench_normals_training.py --benchmark-enable``
(disabled by default: each runs once as a test).
"""
from __future__ import annotations

import io
import itertools

import cv2
import h5py
import numpy as np
import pytest

from datasets.exr import read_exr_rgb
from datasets.hypersim import HyperSim, geometry_path
from datasets.vkitti import VirtualKITTI2
from normals_fixtures import LAYOUTS, make_tar, write_dsine
from test_normals_adapters import ADAPTERS
from training_fixtures import write_hypersim, write_vkitti

pytestmark = pytest.mark.filterwarnings("ignore::datasets.lists.ListMismatchWarning")
NATIVE = {"nyuv2_normals": (30, 40, 16), "scannet_normals": (30, 40, 16), "ibims_normals": (30, 40, 16),
          "sintel_normals": (109, 256, 4)}  # rendered size and enlargement: 480 x 640 and 436 x 1024


def build(name: str, tmp_path):
    if name in ADAPTERS:
        h, w, scale = NATIVE[name]
        folder = tmp_path / LAYOUTS[name][0]
        write_dsine(folder, name, 1, h, w, scale=scale)
        return ADAPTERS[name](root=str(folder))
    if name.endswith("_tar"):
        ds = build(name[: -len("_tar")], tmp_path)
        return type(ds)(root=str(make_tar(ds.source.root, tmp_path / "set.tar")))
    if name == "vkitti":
        write_vkitti(tmp_path, 1)
        return VirtualKITTI2(root=str(tmp_path))
    write_hypersim(tmp_path, 1, 48, 64, dtype=np.float16, scale=16)  # native 768 x 1024, HyperSim's float16
    return HyperSim(root=str(tmp_path))


def bare_decode(ds, sample_id: str) -> None:
    """Read and decode the sample's files with no adapter logic (the floor)."""
    if isinstance(ds, HyperSim):
        for path in (sample_id, geometry_path(sample_id, "depth_meters"), geometry_path(sample_id, "normal_cam")):
            with ds.source.open(path) as f, h5py.File(f, "r") as h5:
                h5["dataset"][()]
        return
    if isinstance(ds, VirtualKITTI2):
        paths = [sample_id, ds._depth[sample_id]]
    else:
        stem = sample_id[: -len("_img.png")]
        paths = [sample_id, f"{stem}_normal{ds.normal_ext}", f"{stem}_intrins.npy"]
    for path in paths:
        data = ds.read(path)
        if path.endswith(".npy"):
            np.load(io.BytesIO(data))
        elif path.endswith(".exr"):
            read_exr_rgb(data)
        else:
            cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


NAMES = [*sorted(ADAPTERS), "nyuv2_normals_tar", "sintel_normals_tar", "vkitti", "hypersim"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("what", ["load", "decode"])
def test_adapter_samples_per_second(benchmark, tmp_path, name, what):
    ds = build(name, tmp_path)
    ids = itertools.cycle(ds.ids())
    benchmark.group = name
    if what == "load":
        sample = benchmark(lambda: ds.load(next(ids)))
        assert sample.valid.any() and sample.rgb.dtype == np.uint8
    else:
        benchmark(lambda: bare_decode(ds, next(ids)))
