"""ScanNet depth: the 800 frames sampled from the validation scenes (Marigold's list).

Layout (Marigold's ``scannet`` evaluation tar, or frames exported from ScanNet's ``.sens`` files): the paths of the
list relative to the root, ``<scene>/color/<frame>.jpg`` and ``<scene>/depth/<frame>.png`` (uint16 millimetres,
0 = none). The list is supplied by the user (``scannet_val_sampled_list_800_1.txt``, ``rgb depth`` per line); without
one it follows from the files (every ``<scene>/color/*.jpg``), which reproduces the standard list for the archive
and is flagged as non-standard otherwise.

RGB larger than the depth map (the 1296 x 968 exports) is resized to the depth's 640 x 480 (``rgb_resize``: OpenCV
``area`` by default, or ``linear``). Valid = 1e-3 < d < 10; native resolution; predictions in name mode ``id``.
"""
from __future__ import annotations

import re

import cv2
import numpy as np

from datasets import decode
from datasets.base import DatasetSpec, Sample
from datasets.crops import range_mask
from datasets.native import NativeDataset
from datasets.registry import register
from datasets.sources import Source, locate_if_found

COLOR = re.compile(r"([^/]+)/color/([^/]+)\.jpg")
RESIZE = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR}


def has_scene(source: Source) -> bool:
    """A ScanNet root holds scene folders with a color/ folder inside."""
    return any(source.is_dir(f"{top}/color") for top in source.top_folders())


@register("scannet")
class ScanNet(NativeDataset):
    """ScanNet depth, 800 validation frames (uint16 mm, 1e-3..10 m, native 640x480)."""

    obtain = ("the evaluation archive scannet from Marigold's evaluation data (share.phys.ethz.ch/~pf/bingkedata/"
              "marigold/evaluation_dataset/; ScanNet's terms of use apply: scan-net.org), and the list "
              "scannet_val_sampled_list_800_1.txt (github.com/prs-eth/Marigold data_split/scannet/) with "
              "--data-list scannet=PATH")
    spec = DatasetSpec(task="depth", min_depth=1e-3, max_depth=10.0, clip_min=1e-3, clip_max=10.0, processing_res=0,
                       alignment="least_squares")
    layout = "<scene>/color/<frame>.jpg + <scene>/depth/<frame>.png"

    def __init__(self, root, list_path=None, warn_list: bool = True, rgb_resize: str = "area"):
        if rgb_resize not in RESIZE:
            raise ValueError(f"scannet: unknown rgb_resize {rgb_resize!r}; expected one of {sorted(RESIZE)}")
        self.rgb_resize = rgb_resize
        super().__init__(root, list_path, warn_list)

    def setup(self) -> None:
        rows = self.user_rows(2)
        listed = (lambda s: s.exists(rows[0][0])) if rows else has_scene  # scannet/<scene>/... is read there too
        self.source = locate_if_found(self.source, listed)
        origin = f"user list {self.list_path}"
        if rows is None:
            color = [m for p in self.source.list("") if (m := COLOR.fullmatch(p))]
            if not color:
                raise ValueError(f"scannet: {self.source.where()} has no <scene>/color/<frame>.jpg (layout: "
                                 f"{self.layout})")
            rows = [[m.group(0), f"{m.group(1)}/depth/{m.group(2)}.png"] for m in color]
            origin = "derived from the files (every <scene>/color/*.jpg)"
        self._depth = {r[0]: r[1] for r in rows}
        self.use_list(rows, origin, [r[0] for r in rows], [f for r in rows for f in r[:2]])

    def load(self, sample_id: str) -> Sample:
        if sample_id not in self._depth:
            raise self.unknown(sample_id)
        gt_path = self._depth[sample_id]
        rgb = decode.rgb_image(self.read(sample_id), self.where(sample_id))
        depth = np.divide(decode.png16(self.read(gt_path), self.where(gt_path)), np.float32(1000.0), dtype=np.float32)
        h, w = depth.shape
        if rgb.shape[:2] != (h, w):
            if rgb.shape[0] < h or rgb.shape[1] < w:
                raise decode.DecodeError(f"{self.where(sample_id)}: RGB {rgb.shape[:2]} is smaller than its depth "
                                         f"map {depth.shape}")
            rgb = cv2.resize(rgb, (w, h), interpolation=RESIZE[self.rgb_resize])
        valid = range_mask(depth, self.spec.min_depth, self.spec.max_depth)
        return Sample(id=sample_id, rgb=rgb, depth=depth, valid=valid, meta={"scene": sample_id.split("/")[0]})

    def describe(self) -> dict:
        return {**super().describe(), "rgb_resize": self.rgb_resize}
