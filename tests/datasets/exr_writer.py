"""A tiny OpenEXR writer for test fixtures (single-part scan-line, NONE or ZIP, FLOAT or HALF channels).

Independent of ``datasets.exr`` (the reader under test): it follows the OpenEXR file-layout spec directly.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

COMPRESSION = {"none": (0, 1), "zips": (2, 1), "zip": (3, 16), "piz": (4, 32)}
PIXEL = {"half": (1, np.dtype("<f2")), "float": (2, np.dtype("<f4"))}


def _attr(name: str, kind: str, value: bytes) -> bytes:
    return name.encode() + b"\0" + kind.encode() + b"\0" + struct.pack("<i", len(value)) + value


def _zip(raw: bytes) -> bytes:
    b = np.frombuffer(raw, np.uint8)
    t = np.concatenate([b[0::2], b[1::2]]).astype(np.int64)
    d = t.copy()
    d[1:] = (t[1:] - t[:-1] + 128) % 256
    return zlib.compress(d.astype(np.uint8).tobytes())


def write_exr(image: np.ndarray, compression: str = "zip", pixel="float") -> bytes:
    """float [H,W,3] in RGB order -> EXR bytes with channels B, G, R (stored alphabetically).

    ``pixel``: "float" or "half" for every channel, or a dict channel name -> type."""
    h, w, _ = image.shape
    code, lines = COMPRESSION[compression]
    names = ["B", "G", "R"]
    types = {n: PIXEL[pixel[n] if isinstance(pixel, dict) else pixel] for n in names}
    planes = {"R": image[..., 0], "G": image[..., 1], "B": image[..., 2]}
    chlist = b"".join(n.encode() + b"\0" + struct.pack("<iB3xii", types[n][0], 0, 1, 1) for n in names) + b"\0"
    box = struct.pack("<4i", 0, 0, w - 1, h - 1)
    header = (b"\x76\x2f\x31\x01" + struct.pack("<I", 2)
              + _attr("channels", "chlist", chlist) + _attr("compression", "compression", bytes([code]))
              + _attr("dataWindow", "box2i", box) + _attr("displayWindow", "box2i", box)
              + _attr("lineOrder", "lineOrder", b"\0") + _attr("pixelAspectRatio", "float", struct.pack("<f", 1))
              + _attr("screenWindowCenter", "v2f", struct.pack("<2f", 0, 0))
              + _attr("screenWindowWidth", "float", struct.pack("<f", 1)) + b"\0")
    chunks = []
    for y in range(0, h, lines):
        raw = b"".join(planes[n][r].astype(types[n][1]).tobytes() for r in range(y, min(y + lines, h)) for n in names)
        data = raw if code == 0 else _zip(raw)
        if len(data) >= len(raw):
            data = raw
        chunks.append(struct.pack("<ii", y, len(data)) + data)
    pos = len(header) + 8 * len(chunks)
    offsets = []
    for c in chunks:
        offsets.append(pos)
        pos += len(c)
    return header + struct.pack(f"<{len(chunks)}Q", *offsets) + b"".join(chunks)
