"""Pure decoders: bytes -> numpy arrays, with errors that name the file and the expected format.

``name`` is only used in messages (the file's location, e.g. ``Source.where(relpath)``). Nothing here opens files.
"""
from __future__ import annotations

import io
import os
import struct

import numpy as np

os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")  # must be set before cv2 is imported to read EXR
import cv2  # noqa: E402

SINTEL_TAG = 202021.25  # .dpt / .flo header tag (float32)


class DecodeError(ValueError):
    """A file that exists but does not hold what the layout says (wrong format, bit depth, size or tag)."""


def _buffer(data: bytes, name: str) -> np.ndarray:
    if not data:
        raise DecodeError(f"{name}: the file is empty")
    return np.frombuffer(data, np.uint8)


def rgb_image(data: bytes, name: str) -> np.ndarray:
    """PNG/JPEG bytes -> uint8 [H,W,3] RGB (OpenCV decodes BGR; converted). Grey images are expanded to 3 channels.
    An EXIF orientation tag is ignored: ground truth is stored in the sensor's pixel order, and Marigold's PIL reader
    ignores it too (a rotated RGB would be paired with GT reshaped to the wrong grid)."""
    img = cv2.imdecode(_buffer(data, name), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None:
        raise DecodeError(f"{name}: cannot decode as an image (PNG or JPEG expected); truncated or not an image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)  # 30x faster than copying img[:, :, ::-1]


def png16(data: bytes, name: str) -> np.ndarray:
    """A single-channel 16-bit PNG -> uint16 [H,W]; an 8-bit or colour PNG is an error (it cannot hold the depth)."""
    img = cv2.imdecode(_buffer(data, name), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DecodeError(f"{name}: cannot decode as PNG (a single-channel 16-bit PNG expected); truncated?")
    if img.dtype != np.uint16:
        raise DecodeError(f"{name}: {img.dtype} PNG, expected a 16-bit PNG (uint16 depth); an 8-bit depth map has "
                          f"lost its precision: use the original 16-bit file")
    if img.ndim != 2:
        raise DecodeError(f"{name}: {img.shape[2]}-channel PNG, expected a single-channel 16-bit depth PNG")
    return img


def png8_mask(data: bytes, name: str) -> np.ndarray:
    """A single-channel PNG mask -> bool [H,W] (nonzero = True)."""
    img = cv2.imdecode(_buffer(data, name), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DecodeError(f"{name}: cannot decode as PNG (a single-channel mask expected); truncated?")
    if img.ndim != 2:
        raise DecodeError(f"{name}: {img.shape[2]}-channel image, expected a single-channel mask PNG")
    return img != 0


def raw_float32(data: bytes, name: str, height: int, width: int) -> np.ndarray:
    """Headerless little-endian float32 of exactly height*width values -> float32 [H,W]."""
    expected = 4 * height * width
    if len(data) != expected:
        raise DecodeError(f"{name}: {len(data)} bytes, expected {expected} (headerless little-endian float32, "
                          f"{height} x {width}); truncated or another resolution")
    return np.frombuffer(data, "<f4").reshape(height, width).astype(np.float32)


def npy(data: bytes, name: str) -> np.ndarray:
    """A .npy file (no pickles)."""
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DecodeError(f"{name}: cannot read as .npy ({err}); truncated or not a NumPy file") from err


def exr(data: bytes, name: str) -> np.ndarray:
    """An OpenEXR image -> float32 [H,W] or [H,W,C] (channels as OpenCV returns them: BGR order)."""
    try:
        img = cv2.imdecode(_buffer(data, name), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
    except cv2.error as err:
        raise DecodeError(f"{name}: OpenCV cannot read EXR ({err.msg.strip()}); set OPENCV_IO_ENABLE_OPENEXR=1 in "
                          f"the environment before Python starts (the harness sets it unless cv2 was imported "
                          f"first) and use an OpenCV build with OpenEXR") from err
    if img is None:
        raise DecodeError(f"{name}: cannot decode as OpenEXR; truncated, not an EXR, or OpenCV lacks EXR support "
                          f"(set OPENCV_IO_ENABLE_OPENEXR=1 before Python starts)")
    return img.astype(np.float32)


def sintel_dpt(data: bytes, name: str) -> np.ndarray:
    """Sintel .dpt: float32 tag 202021.25, int32 width, int32 height, width*height float32 (little-endian)."""
    if len(data) < 12:
        raise DecodeError(f"{name}: {len(data)} bytes, too short for a Sintel .dpt header (12 bytes)")
    tag, width, height = struct.unpack("<fii", data[:12])
    if tag != np.float32(SINTEL_TAG):
        raise DecodeError(f"{name}: tag {tag!r}, expected {SINTEL_TAG} (a Sintel .dpt depth file); wrong file or "
                          f"wrong endianness")
    if not (0 < width < 100000 and 0 < height < 100000):
        raise DecodeError(f"{name}: implausible size {width} x {height} in the .dpt header")
    expected = 12 + 4 * width * height
    if len(data) != expected:
        raise DecodeError(f"{name}: {len(data)} bytes, expected {expected} for a {width} x {height} .dpt; truncated")
    return np.frombuffer(data, "<f4", offset=12).reshape(height, width).astype(np.float32)


def encode_png16(depth_u16: np.ndarray) -> bytes:
    """uint16 [H,W] -> PNG bytes (for fixtures and exports)."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(depth_u16, dtype=np.uint16))
    if not ok:
        raise DecodeError("cannot encode a 16-bit PNG")
    return buf.tobytes()


def encode_image(rgb: np.ndarray, ext: str = ".png") -> bytes:
    """uint8 [H,W,3] RGB (or [H,W] grey) -> PNG/JPEG bytes."""
    img = rgb[:, :, ::-1] if rgb.ndim == 3 else rgb
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(img))
    if not ok:
        raise DecodeError(f"cannot encode as {ext}")
    return buf.tobytes()
