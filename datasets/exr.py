"""A minimal OpenEXR reader (pure numpy + zlib) for when OpenCV cannot read EXR.

OpenCV reads EXR only when it was built with OpenEXR *and* ``OPENCV_IO_ENABLE_OPENEXR=1`` is set (the
opencv-python 5.x wheels have no OpenEXR at all). Evaluation normals (DSINE's iBims-1 and Sintel sets) are
small float images, so this module reads the common case itself: single-part scan-line files with NONE, ZIPS
or ZIP compression and HALF / FLOAT / UINT channels. Anything else (tiled, multi-part, deep, PIZ, PXR24, B44,
DWA) raises :class:`ExrUnsupported` with what to do.

Layout (OpenEXR file-layout spec): magic ``76 2f 31 01``, a 4-byte version field, header attributes
(``name\\0 type\\0 int32 size value``) ending with a zero byte, one uint64 offset per chunk, then chunks of
``int32 y, int32 size, data``; a chunk's data holds, per scan line, each channel (alphabetical) in turn.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

MAGIC = b"\x76\x2f\x31\x01"
PIXEL_DTYPES = {0: np.dtype("<u4"), 1: np.dtype("<f2"), 2: np.dtype("<f4")}  # UINT, HALF, FLOAT
LINES_PER_CHUNK = {0: 1, 2: 1, 3: 16}  # NO_COMPRESSION, ZIPS, ZIP
COMPRESSION_NAMES = {0: "NONE", 1: "RLE", 2: "ZIPS", 3: "ZIP", 4: "PIZ", 5: "PXR24", 6: "B44", 7: "B44A",
                     8: "DWAA", 9: "DWAB", 10: "HTJ2K256", 11: "HTJ2K32"}


class ExrUnsupported(ValueError):
    """A valid-looking EXR this reader does not handle (needs OpenCV with OpenEXR)."""


def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(b"\x00", pos)
    return buf[pos:end].decode("latin-1"), end + 1


def _channels(value: bytes) -> list[tuple[str, int]]:
    """chlist attribute -> [(name, pixel type)] in file (alphabetical) order; subsampling must be 1."""
    out, pos = [], 0
    while value[pos:pos + 1] not in (b"\x00", b""):
        name, pos = _cstring(value, pos)
        ptype, _, xs, ys = struct.unpack_from("<iB3xii", value, pos)
        pos += 16
        if (xs, ys) != (1, 1):
            raise ExrUnsupported(f"channel {name!r} is subsampled ({xs}x{ys})")
        if ptype not in PIXEL_DTYPES:
            raise ExrUnsupported(f"channel {name!r} has unknown pixel type {ptype}")
        out.append((name, ptype))
    return out


def parse_header(buf: bytes) -> tuple[dict, int]:
    """Header attributes {name: (type, raw value)} and the offset just past the header."""
    if buf[:4] != MAGIC:
        raise ValueError("not an OpenEXR file (bad magic number)")
    flags = struct.unpack_from("<I", buf, 4)[0] >> 8
    if flags & (0x2 | 0x8 | 0x10):  # tiled, deep, multi-part
        raise ExrUnsupported("tiled, deep or multi-part EXR")
    attrs, pos = {}, 8
    while buf[pos:pos + 1] != b"\x00":
        name, pos = _cstring(buf, pos)
        kind, pos = _cstring(buf, pos)
        size = struct.unpack_from("<i", buf, pos)[0]
        attrs[name] = (kind, buf[pos + 4:pos + 4 + size])
        pos += 4 + size
        if pos > len(buf):
            raise ValueError("truncated EXR header")
    return attrs, pos + 1


def _unzip(data: bytes, expected: int) -> bytes:
    """ZIP/ZIPS chunk: zlib, then undo the byte-delta predictor and the even/odd byte split."""
    d = np.frombuffer(zlib.decompress(data), np.uint8).copy()
    if d.size != expected:
        raise ValueError(f"ZIP chunk decompresses to {d.size} bytes, expected {expected}")
    d[1:] -= np.uint8(128)  # uint8 arithmetic wraps modulo 256, as the predictor does
    t = np.cumsum(d, dtype=np.uint8)
    out = np.empty_like(t)
    half = (t.size + 1) // 2
    out[0::2], out[1::2] = t[:half], t[half:]
    return out.tobytes()


def read_exr(buf: bytes) -> dict[str, np.ndarray]:
    """Decode an EXR held in memory -> {channel name: float32 [H,W]} (UINT channels as float32 too)."""
    attrs, pos = parse_header(buf)
    comp = attrs["compression"][1][0]
    if comp not in LINES_PER_CHUNK:
        raise ExrUnsupported(f"compression {COMPRESSION_NAMES.get(comp, comp)}")
    x0, y0, x1, y1 = struct.unpack("<4i", attrs["dataWindow"][1])
    width, height = x1 - x0 + 1, y1 - y0 + 1
    chans = _channels(attrs["channels"][1])
    lines = LINES_PER_CHUNK[comp]
    n_chunks = -(-height // lines)
    if len(buf) < pos + 8 * n_chunks:
        raise ValueError("truncated EXR (offset table)")
    offsets = struct.unpack_from(f"<{n_chunks}Q", buf, pos)
    planes = {name: np.empty((height, width), np.float32) for name, _ in chans}
    row_bytes = sum(PIXEL_DTYPES[t].itemsize for _, t in chans) * width
    for off in offsets:
        if off + 8 > len(buf):
            raise ValueError("truncated EXR (chunk offset past the end)")
        y, size = struct.unpack_from("<ii", buf, off)
        data = buf[off + 8:off + 8 + size]
        if len(data) != size:
            raise ValueError("truncated EXR (chunk data)")
        n = min(lines, y1 - y + 1)
        expected = n * row_bytes
        raw = data if (comp == 0 or size == expected) else _unzip(data, expected)
        if len(raw) != expected:
            raise ValueError(f"EXR chunk at line {y} holds {len(raw)} bytes, expected {expected}")
        _scatter(raw, chans, width, n, y - y0, planes)
    return planes


def _scatter(raw: bytes, chans: list, width: int, n: int, row0: int, planes: dict) -> None:
    """Copy ``n`` scan lines (each: every channel in turn, ``width`` values) into the channel planes."""
    types = {t for _, t in chans}
    if len(types) == 1:  # one pixel type: a single reshaped view
        lines = np.frombuffer(raw, PIXEL_DTYPES[types.pop()]).reshape(n, len(chans), width)
        for k, (name, _) in enumerate(chans):
            planes[name][row0:row0 + n] = lines[:, k]
        return
    pos = 0
    for r in range(n):
        for name, ptype in chans:
            dt = PIXEL_DTYPES[ptype]
            planes[name][row0 + r] = np.frombuffer(raw, dt, width, pos)
            pos += dt.itemsize * width


def read_exr_rgb(buf: bytes) -> np.ndarray:
    """float32 [H,W,3] from the R, G, B channels of an EXR in memory (RGB order, not OpenCV's BGR)."""
    planes = read_exr(buf)
    missing = [c for c in "RGB" if c not in planes]
    if missing:
        raise ValueError(f"EXR has channels {sorted(planes)}; expected R, G and B")
    return np.stack([planes["R"], planes["G"], planes["B"]], -1)
