"""DIODE depth, validation split: 771 images (325 indoor + 446 outdoor).

Layout (DIODE's ``val`` download or Marigold's ``diode`` evaluation tar; files may sit below one top folder such as
``val/``): ``{indoors,outdoor}/scene_*/scan_*/<name>.png`` (RGB), ``<name>_depth.npy`` (768,1024,1) float32 metres,
``<name>_depth_mask.npy`` (768,1024) validity. The list follows from the files (every RGB ``.png``; a user list
``rgb depth mask`` per line may select among them).

Valid = the mask file only. Clip after alignment [0.6, 350] m. Processing resolution: long side 640. Samples are
grouped ``indoor`` / ``outdoor`` (``meta["scene_type"]``). Predictions in name mode ``id``.
"""
from __future__ import annotations

import re

import numpy as np

from datasets import decode
from datasets.base import DatasetSpec, Sample
from datasets.native import NativeDataset
from datasets.registry import register
from datasets.sources import locate

RGB = re.compile(r"(indoors|outdoor)/scene_[^/]+/scan_[^/]+/[^/]+\.png")
SCENE_TYPE = {"indoors": "indoor", "outdoor": "outdoor"}


@register("diode")
class DIODE(NativeDataset):
    """DIODE depth, val: 771 images, 325 indoor + 446 outdoor (mask file, clip 0.6..350 m, long side 640)."""

    obtain = ("DIODE val (val.tar.gz from diode-dataset.org; decompress to val.tar or extract), or the evaluation "
              "archive diode from Marigold's evaluation data (share.phys.ethz.ch/~pf/bingkedata/marigold/"
              "evaluation_dataset/)")
    spec = DatasetSpec(task="depth", min_depth=0.6, max_depth=350.0, clip_min=0.6, clip_max=350.0, processing_res=640,
                       alignment="least_squares")
    layout = "{indoors,outdoor}/scene_*/scan_*/<name>.png + <name>_depth.npy + <name>_depth_mask.npy"

    def setup(self) -> None:
        self.source = locate(self.source, lambda s: s.is_dir("indoors") or s.is_dir("outdoor"), self.layout)
        rows = self.user_rows(3)
        origin = f"user list {self.list_path}"
        if rows is None:
            rgbs = [p for folder in ("indoors", "outdoor") for p in self.source.list(folder) if RGB.fullmatch(p)]
            rows = [[p, p[:-4] + "_depth.npy", p[:-4] + "_depth_mask.npy"] for p in rgbs]
            origin = "derived from the files ({indoors,outdoor}/scene_*/scan_*/*.png)"
        self._files = {r[0]: (r[1], r[2]) for r in rows}
        self.use_list(rows, origin, [r[0] for r in rows], [f for r in rows for f in r[:3]])

    def load(self, sample_id: str) -> Sample:
        if sample_id not in self._files:
            raise self.unknown(sample_id)
        depth_path, mask_path = self._files[sample_id]
        rgb = decode.rgb_image(self.read(sample_id), self.where(sample_id))
        depth = decode.npy(self.read(depth_path), self.where(depth_path)).squeeze()
        mask = decode.npy(self.read(mask_path), self.where(mask_path)).squeeze()
        if depth.shape != rgb.shape[:2] or mask.shape != rgb.shape[:2]:
            raise decode.DecodeError(f"{self.where(depth_path)}: depth {depth.shape} / mask {mask.shape} do not "
                                     f"match the RGB {rgb.shape[:2]} (expected (H,W,1) depth and (H,W) mask)")
        if not np.issubdtype(depth.dtype, np.floating):
            raise decode.DecodeError(f"{self.where(depth_path)}: {depth.dtype} depth, expected float metres")
        scene_type = SCENE_TYPE[sample_id.split("/")[0]] if sample_id.split("/")[0] in SCENE_TYPE else ""
        return Sample(id=sample_id, rgb=rgb, depth=depth.astype(np.float32), valid=mask.astype(bool),
                      meta={"scene_type": scene_type})
