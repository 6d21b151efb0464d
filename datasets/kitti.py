"""KITTI depth, Eigen test split with ground truth (652 of the 697 listed images).

Layout (Marigold's ``kitti_eigen_split_test`` archive, or the raw data merged with the annotated depth): the paths of
the list, relative to the root: RGB ``<date>/<drive>_sync/image_02/data/<frame>.png``, GT
``<drive>_sync/proj_depth/groundtruth/image_02/<frame>.png`` (uint16, metres x 256, 0 = none). The GT may also sit
below ``train/`` or ``val/`` (the layout of KITTI's ``data_depth_annotated`` download).

The list ships with neither download: the user supplies Marigold's ``eigen_test_files_with_gt.txt`` (``rgb gt focal``
per line, ``None`` where there is no GT; those lines are listed but not evaluated). The fingerprint covers all lines.

KB crop on RGB and GT (bottom 352 rows, 1216 centred columns); valid = 1e-5 < d < 80 inside the Eigen crop of the
cropped frame (rows 117:321, cols 43:1172; ``eval_crop="garg"`` for the Garg crop). Depth in metres (float32).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from datasets import decode
from datasets.base import DatasetSpec, Sample
from datasets.crops import KB_HEIGHT, KB_WIDTH, KITTI_FRACTIONS, kb_crop, kb_crop_box, kitti_eval_mask, range_mask
from datasets.native import NativeDataset
from datasets.registry import register
from datasets.sources import locate_if_found

GT_PREFIXES = ("", "train/", "val/")
KITTI_SPEC = DatasetSpec(task="depth", min_depth=1e-5, max_depth=80.0, clip_min=1e-5, clip_max=80.0,
                         processing_res=0, alignment="least_squares", eval_crop="eigen")


@register("kitti")
class KITTI(NativeDataset):
    """KITTI depth, Eigen test with GT: 652 of 697 (KB crop, then Eigen crop; 1e-5..80 m)."""

    obtain = ("the evaluation archive kitti_eigen_split_test from Marigold's evaluation data (share.phys.ethz.ch/"
              "~pf/bingkedata/marigold/evaluation_dataset/), or KITTI raw + data_depth_annotated from cvlibs.net/"
              "datasets/kitti; plus the list eigen_test_files_with_gt.txt (github.com/prs-eth/Marigold "
              "data_split/kitti/) given with --data-list kitti=PATH")
    spec = KITTI_SPEC
    needs_list = True
    layout = "archive / raw + annotated depth"

    def __init__(self, root, list_path=None, warn_list: bool = True, eval_crop: str = "eigen"):
        if eval_crop not in KITTI_FRACTIONS:
            raise ValueError(f"kitti: unknown eval_crop {eval_crop!r}; expected one of {sorted(KITTI_FRACTIONS)}")
        self.eval_crop = eval_crop
        if eval_crop != KITTI_SPEC.eval_crop:
            self.spec = replace(KITTI_SPEC, eval_crop=eval_crop)
        super().__init__(root, list_path, warn_list)

    def setup(self) -> None:
        rows = self.user_rows(2)
        if rows is None:
            raise FileNotFoundError(
                "kitti needs its sample list (KITTI ships none): download eigen_test_files_with_gt.txt from "
                "github.com/prs-eth/Marigold (data_split/kitti/) and pass --data-list kitti=PATH (or "
                "HARNESS_LIST_KITTI=PATH)")
        with_gt = [r for r in rows if r[1] != "None"]
        if with_gt:  # the archive below one top folder (kitti_eigen_split_test/<date>/...) is read there
            self.source = locate_if_found(self.source, lambda s: s.exists(with_gt[0][0]))
        self._gt = {r[0]: self._find_gt(r[1]) for r in with_gt}
        self._focal = {r[0]: float(r[2]) for r in with_gt if len(r) > 2}
        self.use_list(rows, f"user list {self.list_path}", [r[0] for r in with_gt],
                      [r[0] for r in with_gt] + list(self._gt.values()))

    def _find_gt(self, relpath: str) -> str:
        for prefix in GT_PREFIXES:
            if self.source.exists(prefix + relpath):
                return prefix + relpath
        return relpath  # reported as absent by use_list

    def load(self, sample_id: str) -> Sample:
        if sample_id not in self._gt:
            raise self.unknown(sample_id)
        gt_path = self._gt[sample_id]
        rgb = decode.rgb_image(self.read(sample_id), self.where(sample_id))
        depth = np.divide(decode.png16(self.read(gt_path), self.where(gt_path)), np.float32(256.0), dtype=np.float32)
        if rgb.shape[:2] != depth.shape:
            raise decode.DecodeError(f"{self.where(gt_path)}: GT {depth.shape} and RGB {rgb.shape[:2]} differ in size")
        frame = {"shape": list(depth.shape), "box": [*kb_crop_box(*depth.shape), KB_HEIGHT, KB_WIDTH]}
        rgb, depth = np.ascontiguousarray(kb_crop(rgb)), np.ascontiguousarray(kb_crop(depth))  # [352,1216]
        valid = range_mask(depth, self.spec.min_depth, self.spec.max_depth) & kitti_eval_mask(depth.shape,
                                                                                               self.eval_crop)
        meta = {"frame_crop": frame}  # a saved prediction of the whole frame is cropped as the GT was
        if sample_id in self._focal:
            meta["focal"] = self._focal[sample_id]
        return Sample(id=sample_id, rgb=rgb, depth=depth, valid=valid, meta=meta)

    def describe(self) -> dict:
        return {**super().describe(), "eval_crop": self.eval_crop, "kb_crop": True}
