"""Virtual KITTI 2 (training set): RGB JPEG and depth PNG in centimetres, KB-cropped like KITTI.

Layout (the ``vkitti_2.0.3_rgb`` and ``vkitti_2.0.3_depth`` downloads extracted into one folder, or a ``.tar`` of
it; ``depth_root`` may name the depth archive separately):
``<Scene>/<variation>/frames/rgb/Camera_<k>/rgb_<NNNNN>.jpg`` and ``.../frames/depth/Camera_<k>/depth_<NNNNN>.png``
(uint16, centimetres; 65535 = sky). Depth in metres = value / 100; valid = 1e-5 < d < 80 and not sky (Marigold's
Virtual KITTI settings). The KB crop (bottom 352 rows, 1216 centred columns) applies to RGB and depth by default.
Sample list: a user list (first column the RGB path, optional second the depth path; ``None`` = no depth, skipped
as Marigold does), else every ``rgb_*.jpg`` under ``frames/rgb``.
"""
from __future__ import annotations

import re
from typing import Optional

import numpy as np

from datasets import decode
from datasets.base import DatasetSpec, Sample
from datasets.crops import kb_crop, range_mask
from datasets.native import NativeDataset
from datasets.registry import register
from datasets.sources import open_source
from datasets.training import TrainingSet

RGB_PATH = re.compile(r"(?:.*/)?[^/]+/[^/]+/frames/rgb/Camera_\d+/rgb_\d+\.jpg")
SKY_CM = 65535  # depth value of the sky
CM_PER_M = 100.0
VKITTI_SPEC = DatasetSpec(task="depth", min_depth=1e-5, max_depth=80.0, clip_min=1e-5, clip_max=80.0,
                          processing_res=0, alignment="least_squares")


def depth_path_of(rgb_path: str) -> str:
    """``.../frames/rgb/Camera_0/rgb_00042.jpg`` -> ``.../frames/depth/Camera_0/depth_00042.png``."""
    head, _, tail = rgb_path.rpartition("/frames/rgb/")
    camera, _, name = tail.partition("/")
    return f"{head}/frames/depth/{camera}/depth_{name[len('rgb_'):-len('.jpg')]}.png"


def decode_depth_cm(raw: np.ndarray, min_depth: float, max_depth: float) -> tuple[np.ndarray, np.ndarray]:
    """uint16 centimetres [H,W] -> (float32 metres, valid bool): sky (65535) and out-of-range are invalid."""
    depth = raw.astype(np.float32) / CM_PER_M
    valid = (raw != SKY_CM) & range_mask(depth, min_depth, max_depth)
    return np.where(valid, depth, 0).astype(np.float32), valid


@register("vkitti")
class VirtualKITTI2(TrainingSet, NativeDataset):
    """Virtual KITTI 2 training frames: metres (cm / 100), sky invalid, 1e-5 < d < 80, KB crop."""

    obtain = ("Virtual KITTI 2 from europe.naverlabs.com (Research > Computer Vision > Proxy Virtual Worlds): "
              "vkitti_2.0.3_rgb.tar and vkitti_2.0.3_depth.tar, extracted into one folder (or give the depth tar "
              "as depth_root)")
    spec = VKITTI_SPEC
    layout = "<Scene>/<variation>/frames/{rgb,depth}/Camera_<k>/{rgb_<N>.jpg,depth_<N>.png}"

    def __init__(self, root, list_path: Optional[str] = None, warn_list: bool = True, depth_root=None,
                 kb_crop: bool = True):
        self.depth_root, self.kb_crop = depth_root, bool(kb_crop)
        super().__init__(root, list_path, warn_list)

    def setup(self) -> None:
        self.depth_source = open_source(self.depth_root) if self.depth_root else self.source
        rows = self.user_rows(1)
        if rows is None:
            rows = [[p] for p in self.source.list() if RGB_PATH.fullmatch(p)]
            origin = "derived from the files (every frames/rgb/Camera_*/rgb_*.jpg)"
        else:
            origin = f"user list {self.list_path}"
        with_depth = [r for r in rows if len(r) < 2 or r[1] != "None"]
        self._depth = {r[0]: r[1] if len(r) > 1 else depth_path_of(r[0]) for r in with_depth}
        ids = [r[0] for r in with_depth]
        self.use_list(rows, origin, ids, ids)
        absent = [d for d in self._depth.values() if not self.depth_source.exists(d)]
        if absent:
            raise FileNotFoundError(f"vkitti: {len(absent)} depth file(s) absent from {self.depth_source.where()}, "
                                    f"e.g. {absent[0]} (expected uint16 PNG in centimetres beside each RGB)")

    def load(self, sample_id: str) -> Sample:
        if sample_id not in self._depth:
            raise self.unknown(sample_id)
        rgb = decode.rgb_image(self.read(sample_id), self.where(sample_id))
        depth_file = self._depth[sample_id]
        raw = decode.png16(self.depth_source.read(depth_file), self.depth_source.where(depth_file))
        if raw.shape != rgb.shape[:2]:
            raise decode.DecodeError(f"{self.depth_source.where(depth_file)}: depth {raw.shape} but the RGB "
                                     f"{self.where(sample_id)} is {rgb.shape[:2]}")
        if self.kb_crop:
            rgb, raw = kb_crop(rgb), kb_crop(raw)
        depth, valid = decode_depth_cm(raw, self.spec.min_depth, self.spec.max_depth)
        return Sample(id=sample_id, rgb=np.ascontiguousarray(rgb), valid=valid, depth=depth,
                      meta={"scene_type": "outdoor", "scene": sample_id.split("/")[0]})

    def describe(self) -> dict:
        out = {**super().describe(), "kb_crop": self.kb_crop, "depth_units": "cm / 100"}
        if self.depth_root:
            out["depth_root"] = str(self.depth_root)
        return out
