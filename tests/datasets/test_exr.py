"""The built-in OpenEXR reader (datasets.exr): a file written by the OpenEXR library, and the fixture writer."""
from __future__ import annotations

import base64

import numpy as np
import pytest

from datasets.exr import ExrUnsupported, read_exr, read_exr_rgb
from exr_writer import write_exr

# 7 x 5 RGB FLOAT, ZIP compression, written by the OpenEXR 3.5 Python bindings (pip "openexr"):
# R = 0.5 i + 0.25 j, G = i - j, B = -i j / 8 for row i, column j.
OFFICIAL_ZIP = (
    "di8xAQIAAABjaGFubmVscwBjaGxpc3QANwAAAEIAAgAAAAAAAAABAAAAAQAAAEcAAgAAAAAAAAABAAAAAQAAAFIAAgAAAAAAAAABAAAAAQAAAABj"
    "b21wcmVzc2lvbgBjb21wcmVzc2lvbgABAAAAA2RhdGFXaW5kb3cAYm94MmkAEAAAAAAAAAAAAAAABgAAAAQAAABkaXNwbGF5V2luZG93AGJveDJp"
    "ABAAAAAAAAAAAAAAAAYAAAAEAAAAbGluZU9yZGVyAGxpbmVPcmRlcgABAAAAAHBpeGVsQXNwZWN0UmF0aW8AZmxvYXQABAAAAAAAgD9zY3JlZW5X"
    "aW5kb3dDZW50ZXIAdjJmAAgAAAAAAAAAAAAAAHNjcmVlbldpbmRvd1dpZHRoAGZsb2F0AAQAAAAAAIA/dHlwZQBzdHJpbmcADQAAAHNjYW5saW5l"
    "aW1hZ2UAXgEAAAAAAAAAAAAAkwAAAHhebc9RDcMwDARQQxiEQhiC1R2CQQiEQDCEQAiEIViuQzAIhTAI06my7FXNfUS2n2JF7HBEzKAi06Y4Vqx5"
    "98JenoYq/fwV74RqtRczBfTyVdTWKjTbUM8HJ//bsw31uW4Td8Qxm1eFx+x1H4tH5PZm5pUZS7ahxsJ9rhhotqGYLPm3bEPt0hWz99yGguIHXFWx"
    "wQ==")


def test_reads_a_file_written_by_the_openexr_library():
    i, j = np.mgrid[0:5, 0:7].astype(np.float32)
    rgb = read_exr_rgb(base64.b64decode(OFFICIAL_ZIP))
    assert rgb.dtype == np.float32 and rgb.shape == (5, 7, 3)
    assert np.array_equal(rgb, np.stack([i * 0.5 + j * 0.25, i - j, -i * j / 8], -1).astype(np.float32))


@pytest.mark.parametrize("compression", ["none", "zips", "zip"])
@pytest.mark.parametrize("pixel", ["float", "half"])
def test_writer_reader_round_trip(compression, pixel):
    image = np.random.default_rng(0).normal(size=(37, 19, 3)).astype(np.float32)
    image[:9] = 0.25  # compressible rows (ZIP stores them compressed)
    expected = image.astype(np.float16).astype(np.float32) if pixel == "half" else image
    assert np.array_equal(read_exr_rgb(write_exr(image, compression, pixel)), expected)


def test_mixed_channel_types():
    image = np.random.default_rng(1).normal(size=(20, 9, 3)).astype(np.float32)
    out = read_exr_rgb(write_exr(image, "zip", {"R": "float", "G": "half", "B": "float"}))
    assert np.array_equal(out[..., 0], image[..., 0]) and np.array_equal(out[..., 2], image[..., 2])
    assert np.array_equal(out[..., 1], image[..., 1].astype(np.float16).astype(np.float32))


def test_unsupported_truncated_and_foreign_files():
    image = np.ones((4, 3, 3), np.float32)
    with pytest.raises(ExrUnsupported, match="PIZ"):
        read_exr(write_exr(image, "piz"))
    with pytest.raises(ValueError, match="truncated"):
        read_exr(write_exr(image, "none")[:-7])
    with pytest.raises(ValueError, match="not an OpenEXR file"):
        read_exr(b"\x89PNG\r\n\x1a\n" + bytes(40))
