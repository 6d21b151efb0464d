"""Shared reader of DSINE's surface-normal evaluation sets (``dsine_eval/<dataset>``, ../shared/protocol.md).

Layout (one folder per benchmark; the root may be that folder, ``dsine_eval`` above it, or a ``.tar`` of either):
``<folder>/<name>_img.png`` (RGB), ``<name>_normal.png`` (uint8, ``v / 255 * 2 - 1``, valid where the bytes sum
to more than 0) or ``<name>_normal.exr`` (float, valid where |n| > 0.5), and ``<name>_intrins.npy`` (3x3 K).
DSINE's normals are x-left, y-up, z toward the viewer; :mod:`datasets.normals_formats` flips x into the
canonical frame. A sample's id is its image path relative to the dataset folder, as in DSINE's split files
(``test/000000_img.png``).

Sample list: a user list (DSINE's ``split/*.txt`` or Marigold's ``*_normals/*.txt``, first column the image path;
Marigold's lists omit the ``test/`` or ``ibims/`` folder, which is added back when the files sit there), else every
``<folder>/<name>_img.png`` under the root. Every listed image is checked at construction.
"""
from __future__ import annotations

import posixpath
import re
import struct
import zlib
from typing import Optional

import cv2
import numpy as np

from datasets import decode
from datasets.base import DatasetSpec, Sample
from datasets.exr import ExrUnsupported, read_exr_rgb
from datasets.native import NativeDataset
from datasets.normals_formats import dsine_exr_to_canonical, dsine_png_to_canonical
from datasets.sources import Source

IMG_SUFFIX = "_img.png"


class DsineNormals(NativeDataset):
    """Base adapter; subclasses set the class attributes below and register a name."""

    dsine_folder = "?"  # folder name inside dsine_eval/ (nyuv2, scannet, ibims, sintel)
    images_under = ""  # sub-folder holding every sample ("test" for NYUv2, "ibims" for iBims-1), "" = any
    sample_folder = r"[^/]+"  # regex of the folder of a sample (scene names), for lists derived from the files
    normal_ext = ".png"  # ".png" (uint8) or ".exr" (float)
    obtain = ("DSINE's evaluation sets (dsine_eval), linked from the README of github.com/baegwangbin/DSINE; "
              "extract the archive, or repack it as an uncompressed .tar")

    def __init__(self, root: Optional[str] = None, list_path: Optional[str] = None, warn_list: bool = True,
                 processing_res: int = 0, aggregation: str = "pooled"):
        # processing_res 0 = native (DSINE evaluates at the file's resolution); "pooled" = DSINE's aggregation.
        if aggregation not in ("pooled", "per_image"):
            raise ValueError(f"{self.name}: aggregation must be 'pooled' (DSINE) or 'per_image' (Marigold), "
                             f"got {aggregation!r}")
        self.spec = DatasetSpec(task="normals", processing_res=int(processing_res), alignment="none",
                                normals_aggregation=aggregation)
        self.layout = (f"dsine_eval/{self.dsine_folder}: {self.images_under or '<folder>'}/<name>{IMG_SUFFIX}, "
                       f"<name>_normal{self.normal_ext}, <name>_intrins.npy")
        super().__init__(root, list_path, warn_list)

    def setup(self) -> None:
        self.source = self._locate(self.source)
        rows = self.user_rows(1)
        if rows is None:
            rows = [[p] for p in self.source.list(self.images_under) if self._is_sample_path(p)]
            origin = f"derived from the files (every *{IMG_SUFFIX})"
        else:
            origin = f"user list {self.list_path}"
        ids = self._resolve(rows)
        files = [f"{i[: -len(IMG_SUFFIX)]}{suffix}" for i in ids
                 for suffix in (IMG_SUFFIX, "_normal" + self.normal_ext, "_intrins.npy")]
        self.use_list(rows, origin, ids, files)
        self._known = set(ids)

    def _is_layout(self, src: Source) -> bool:
        return any(self._is_sample_path(p) for p in src.list(self.images_under))

    def _is_sample_path(self, path: str) -> bool:
        """``<folder>/<name>_img.png`` with ``folder`` matching ``sample_folder`` (and equal to ``images_under``)."""
        folder, _, name = path.partition("/")
        return (name.endswith(IMG_SUFFIX) and "/" not in name and re.fullmatch(self.sample_folder, folder) is not None
                and (not self.images_under or folder == self.images_under))

    def _locate(self, src: Source) -> Source:
        for candidate in (src, src.sub(self.dsine_folder), src.sub(posixpath.join("dsine_eval", self.dsine_folder))):
            if self._is_layout(candidate):
                return candidate
        tops = src.top_folders()
        if len(tops) == 1 and self._is_layout(src.sub(tops[0])):
            return src.sub(tops[0])
        raise ValueError(f"dataset root {src.where()} does not have DSINE's {self.dsine_folder} layout "
                         f"({self.layout}); "
                         f"give the dsine_eval/{self.dsine_folder} folder or a .tar of it")

    def _resolve(self, rows) -> list[str]:
        """Image paths of the list's first column; Marigold's lists omit ``images_under``, added back if needed."""
        ids = [r[0] for r in rows]
        if not ids:
            return ids
        prefix = self.images_under + "/" if self.images_under else ""
        if prefix and not ids[0].startswith(prefix) and self.source.exists(prefix + ids[0]):
            ids = [prefix + i for i in ids]
        bad = [i for i in ids if not i.endswith(IMG_SUFFIX)]
        if bad:
            raise ValueError(f"{self.name}: list entries must be image paths ending in {IMG_SUFFIX}; got {bad[0]!r}")
        return ids

    # -- one sample --------------------------------------------------------------------------------------------
    def load(self, sample_id: str) -> Sample:
        if sample_id not in self._known:
            raise self.unknown(sample_id)
        stem = sample_id[: -len(IMG_SUFFIX)]
        rgb = decode.rgb_image(self.source.read(sample_id), self.source.where(sample_id))
        normal_file = stem + "_normal" + self.normal_ext
        where = self.source.where(normal_file)
        data = self.source.read(normal_file)
        raw = _png_normals(data, where) if self.normal_ext == ".png" else _exr_normals(data, where)
        convert = dsine_png_to_canonical if self.normal_ext == ".png" else dsine_exr_to_canonical
        normals, valid = convert(raw)
        if normals.shape[:2] != rgb.shape[:2]:
            raise decode.DecodeError(f"{where}: normals {normals.shape[:2]} but the image "
                                     f"{self.source.where(sample_id)} is {rgb.shape[:2]}")
        intrins_file = stem + "_intrins.npy"
        K = decode.npy(self.source.read(intrins_file), self.source.where(intrins_file))
        if K.shape != (3, 3):
            raise decode.DecodeError(f"{self.source.where(intrins_file)}: intrinsics of shape {K.shape}, expected 3x3")
        meta = {"scene": sample_id.split("/")[0], "intrinsics": np.asarray(K, np.float64).tolist()}
        return Sample(id=sample_id, rgb=rgb, valid=valid, normals=normals, meta=meta)

    def describe(self) -> dict:
        return {**super().describe(), "convention": "DSINE files x-left, y-up, z-viewer -> canonical (flip x)",
                "processing_res": self.spec.processing_res, "aggregation": self.spec.normals_aggregation}


def _png_normals(data: bytes, where: str) -> np.ndarray:
    """A DSINE normal PNG -> uint8 [H,W,3] in RGB order (OpenCV decodes BGR)."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if img is None:
        raise decode.DecodeError(f"{where}: cannot decode as PNG (an 8-bit RGB normal map expected); truncated?")
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise decode.DecodeError(f"{where}: {img.dtype} PNG of shape {img.shape}, expected an 8-bit 3-channel "
                                 f"normal map (DSINE's _normal.png)")
    return np.ascontiguousarray(img[:, :, ::-1])


def _exr_normals(data: bytes, where: str) -> np.ndarray:
    """A DSINE normal EXR -> float32 [H,W,3] in RGB order: OpenCV when it reads EXR, else datasets.exr."""
    try:
        img = decode.exr(data, where)  # OpenCV: BGR order
    except decode.DecodeError as cv_error:
        return _builtin_exr(data, where, cv_error)
    if img.ndim != 3 or img.shape[2] != 3:
        raise decode.DecodeError(f"{where}: EXR of shape {img.shape}, expected 3 channels (R, G, B normals)")
    return np.ascontiguousarray(img[:, :, ::-1])


def _builtin_exr(data: bytes, where: str, cv_error: Exception) -> np.ndarray:
    """RGB float32 [H,W,3] from :mod:`datasets.exr`; errors say how to enable OpenCV's EXR support."""
    try:
        return read_exr_rgb(data)
    except ExrUnsupported as err:
        raise decode.DecodeError(f"{where}: OpenCV cannot read this EXR and the built-in reader does not support it "
                                 f"({err}). Enable OpenCV's OpenEXR: set OPENCV_IO_ENABLE_OPENEXR=1 before Python "
                                 f"starts, with an OpenCV build that includes OpenEXR (see the 'OpenEXR:' line of "
                                 f"cv2.getBuildInformation()), or convert the file "
                                 f"to ZIP/uncompressed EXR. OpenCV said: {cv_error}") from err
    except (ValueError, KeyError, IndexError, struct.error, zlib.error) as err:
        raise decode.DecodeError(f"{where}: not a readable OpenEXR file ({err}); truncated or damaged? Expected "
                                 f"DSINE's _normal.exr (float R, G, B). To use OpenCV's reader instead, set "
                                 f"OPENCV_IO_ENABLE_OPENEXR=1 with an OpenCV build that includes OpenEXR") from err
