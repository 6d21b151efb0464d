"""HyperSim (training set) from its original HDF5 files: tone-mapped RGB, planar depth and canonical normals.

Layout (the per-scene ``ai_VVV_NNN.zip`` downloads extracted into one folder, or a ``.tar`` of it):
``<scene>/images/scene_<cam>_final_hdf5/frame.<NNNN>.color.hdf5`` (HDR linear RGB),
``<scene>/images/scene_<cam>_geometry_hdf5/frame.<NNNN>.depth_meters.hdf5`` (distance to the camera centre, metres,
NaN = no geometry), ``frame.<NNNN>.normal_cam.hdf5`` (x right, y up, z back; some face away) and
``frame.<NNNN>.render_entity_id.hdf5`` (int32, -1 = no geometry). Each file holds one array under the key ``dataset``.

Conversions (:mod:`datasets.normals_formats`, ../shared/protocol.md): planar depth = distance * f / sqrt(x^2 + y^2 +
f^2), f = 886.81 px at the native 1024 px width (scaled with the width, or ``focal_px``); normals facing away are
flipped, then normalised; RGB tone-mapped as HyperSim's and Marigold's code (90th-percentile brightness of the
pixels with geometry to 0.8 after gamma 1/2.2), "with geometry" read from ``frame.<NNNN>.render_entity_id.hdf5``
(!= -1) as they do, or, with ``tonemap_mask="finite_depth"`` (for a copy without those files), from a finite distance.
Valid = finite and 1e-5 < depth < 65 m (Marigold's HyperSim range).
Sample list: HyperSim's split file ``metadata_images_split_scene_v1.csv`` (rows of ``split``, in the public
release), a whitespace list whose first column is the ``color.hdf5`` path, or else every ``color.hdf5`` found.
"""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Optional

import h5py
import numpy as np

from datasets.base import DatasetSpec, Sample
from datasets.native import NativeDataset
from datasets.normals_formats import (hypersim_distance_to_depth, hypersim_focal_px, hypersim_tonemap,
                                      orient_toward_camera, unit_normals)
from datasets.registry import register
from datasets.training import TrainingSet

COLOR_PATH = re.compile(r"(?:.*/)?([^/]+)/images/scene_([^/]+)_final_hdf5/frame\.(\d+)\.color\.hdf5")
SPLIT_COLUMNS = ("scene_name", "camera_name", "frame_id", "included_in_public_release", "split_partition_name")
TONEMAP_MASKS = ("render_entity_id", "finite_depth")  # which pixels set the tone map's brightness percentile
HYPERSIM_SPEC = DatasetSpec(task="depth", min_depth=1e-5, max_depth=65.0, clip_min=1e-5, clip_max=65.0,
                            processing_res=0, alignment="least_squares")


def geometry_path(color_path: str, kind: str) -> str:
    """``.../scene_cam_00_final_hdf5/frame.0007.color.hdf5`` ->
    ``.../scene_cam_00_geometry_hdf5/frame.0007.<kind>.hdf5``."""
    folder, _, name = color_path.rpartition("/")
    return f"{folder[: -len('_final_hdf5')]}_geometry_hdf5/{name[: -len('color.hdf5')]}{kind}.hdf5"


def split_rows(text: str, split: str, name: str) -> list[list[str]]:
    """HyperSim's split CSV -> [[color.hdf5 path]] of the public-release frames of ``split``."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in SPLIT_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"{name}: not HyperSim's split CSV (columns {', '.join(missing)} missing)")
    rows = [[f"{r['scene_name']}/images/scene_{r['camera_name']}_final_hdf5/frame.{int(r['frame_id']):04d}.color.hdf5"]
            for r in reader if r["split_partition_name"] == split and r["included_in_public_release"] == "True"]
    if not rows:
        raise ValueError(f"{name}: no public-release frames in split {split!r}")
    return rows


@register("hypersim")
class HyperSim(TrainingSet, NativeDataset):
    """HyperSim training frames: tone-mapped RGB, planar depth (metres), canonical normals, 1e-5 < d < 65."""

    obtain = ("HyperSim from github.com/apple/ml-hypersim (its download script fetches the per-scene zips; the "
              "split file metadata_images_split_scene_v1.csv is in that repository, give it with --data-list)")
    spec = HYPERSIM_SPEC
    layout = ("<scene>/images/scene_<cam>_{final,geometry}_hdf5/frame.<NNNN>.{color,depth_meters,normal_cam,"
              "render_entity_id}.hdf5")

    def __init__(self, root, list_path: Optional[str] = None, warn_list: bool = True, split: str = "train",
                 focal_px: Optional[float] = None, tonemap_mask: str = "render_entity_id"):
        if tonemap_mask not in TONEMAP_MASKS:
            raise ValueError(f"hypersim: unknown tonemap_mask {tonemap_mask!r}; expected one of {TONEMAP_MASKS}")
        self.split, self.focal_px, self.tonemap_mask = split, focal_px, tonemap_mask
        super().__init__(root, list_path, warn_list)

    def setup(self) -> None:
        if self.list_path is not None and str(self.list_path).endswith(".csv"):
            path = Path(self.list_path).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"hypersim: split file {path} does not exist")
            rows = split_rows(path.read_text(encoding="utf-8"), self.split, str(path))
            origin = f"user list {self.list_path} (split {self.split})"
        else:
            rows = self.user_rows(1)
            origin = f"user list {self.list_path}"
            if rows is None:
                rows = [[p] for p in self.source.list() if COLOR_PATH.fullmatch(p)]
                origin = "derived from the files (every *_final_hdf5/frame.*.color.hdf5)"
        ids = [r[0] for r in rows]
        bad = [i for i in ids if not COLOR_PATH.fullmatch(i)]
        if bad:
            raise ValueError(f"hypersim: list entries must be color.hdf5 paths ({self.layout}); got {bad[0]!r}")
        kinds = ("depth_meters", "normal_cam") + (("render_entity_id",) if self.tonemap_mask == "render_entity_id"
                                                   else ())
        files = [f for i in ids for f in (i, *(geometry_path(i, kind) for kind in kinds))]
        try:
            self.use_list(rows, origin, ids, files)
        except FileNotFoundError as err:
            if self.tonemap_mask == "render_entity_id" and "render_entity_id.hdf5" in str(err):
                raise type(err)(f"{err}\nrender_entity_id.hdf5 is in each scene's geometry_hdf5 download (it marks "
                                f"the pixels the tone map reads); without it, construct HyperSim(..., "
                                f"tonemap_mask='finite_depth') to use the pixels of finite distance") from None
            raise
        self._known = set(ids)

    def _array(self, relpath: str, ndim: int, dtype=np.float32) -> np.ndarray:
        """The ``dataset`` array of one HDF5 file as ``dtype``, with errors naming the file."""
        where = self.where(relpath)
        try:
            with self.source.open(relpath) as f, h5py.File(f, "r") as h5:
                if "dataset" not in h5:
                    raise ValueError(f"{where}: no 'dataset' key (keys: {sorted(h5)}); not a HyperSim HDF5 file")
                array = np.asarray(h5["dataset"][()], dtype)
        except OSError as err:
            raise ValueError(f"{where}: cannot read as HDF5 ({err}); truncated or damaged: download it again") from err
        if array.ndim != ndim or (ndim == 3 and array.shape[2] != 3):
            raise ValueError(f"{where}: array of shape {array.shape}, expected {'[H,W,3]' if ndim == 3 else '[H,W]'}")
        return array

    def load(self, sample_id: str) -> Sample:
        if sample_id not in self._known:
            raise self.unknown(sample_id)
        distance = self._array(geometry_path(sample_id, "depth_meters"), 2)  # metres to the camera centre
        normals_file = self._array(geometry_path(sample_id, "normal_cam"), 3)
        hdr = self._array(sample_id, 3)
        if not distance.shape == normals_file.shape[:2] == hdr.shape[:2]:
            raise ValueError(f"hypersim {sample_id}: color {hdr.shape}, depth {distance.shape} and normals "
                             f"{normals_file.shape} differ in size")
        focal = self.focal_px or hypersim_focal_px(distance.shape[1])
        depth = hypersim_distance_to_depth(distance, focal)
        finite = np.isfinite(depth) & np.all(np.isfinite(normals_file), axis=-1)
        with np.errstate(invalid="ignore"):
            valid = finite & (depth > self.spec.min_depth) & (depth < self.spec.max_depth)
        normals = unit_normals(orient_toward_camera(normals_file, focal), valid)  # NaN only where invalid
        rgb = hypersim_tonemap(hdr, self._tonemap_pixels(sample_id, distance))
        return Sample(id=sample_id, rgb=rgb, valid=valid, depth=np.where(valid, depth, 0).astype(np.float32),
                      normals=normals, meta={"scene_type": "indoor", "scene": sample_id.split("/")[0]})

    def _tonemap_pixels(self, sample_id: str, distance: np.ndarray) -> np.ndarray:
        """[H,W] bool: the pixels whose brightness percentile sets the tone map."""
        if self.tonemap_mask == "finite_depth":
            return np.isfinite(distance)
        entity = self._array(geometry_path(sample_id, "render_entity_id"), 2, np.int64)
        if entity.shape != distance.shape:
            raise ValueError(f"hypersim {sample_id}: render_entity_id {entity.shape} and depth {distance.shape} "
                             f"differ in size")
        return entity != -1

    def describe(self) -> dict:
        return {**super().describe(), "split": self.split, "normals": "canonical (x right, y up, z to viewer)",
                "focal_px": self.focal_px or f"{hypersim_focal_px(1024)} x width / 1024",
                "tonemap": "90th percentile brightness -> 0.8, gamma 1/2.2, x 255 truncated (Marigold)",
                "tonemap_mask": self.tonemap_mask}
