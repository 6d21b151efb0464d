"""ETH3D depth: the 454 DSLR images of the 13 high-resolution multi-view training scenes.

Layouts (root: folder or .tar; files may sit below one top folder):
- archive (Marigold's ``eth3d`` evaluation tar): ``rgb/<scene>/images/dslr_images/DSC_*.JPG`` and
  ``depth/<scene>_dslr_depth/<scene>/ground_truth_depth/dslr_images/DSC_*.JPG``;
- original (ETH3D's ``multi_view_training_dslr_jpg`` + ``multi_view_training_dslr_depth``, extracted together):
  ``<scene>/images/dslr_images/DSC_*.JPG`` and ``<scene>/ground_truth_depth/dslr_images/DSC_*.JPG``.
The list follows from the files (every RGB image; its GT must exist). Ids are the archive's RGB paths for both
layouts, so the fingerprint and the prediction layout (name mode ``id``) are the same.

GT: headerless little-endian float32 at the RGB's resolution (4032 x 6048), despite the ``.JPG`` name; inf = none.
Valid = 1e-5 < d < inf. Processing resolution: long side 756, i.e. 504 x 756, padded to 504 x 760 at the SD VAE's
multiple of 8 and cropped back, as Marigold's pipeline does (harness.evaluate.SizeFit; ``--size-fit round``: 504 x
752); the prediction is resized back to 4032 x 6048 either way. Alignment fitted on a grid thinned to at
most 1024 pixels per side (``fit_max_side``; both axes, see harness.align).
"""
from __future__ import annotations

import posixpath
import re

import numpy as np

from datasets import decode
from datasets.base import DatasetSpec, Sample
from datasets.crops import range_mask
from datasets.native import NativeDataset
from datasets.registry import register
from datasets.sources import locate

ARCHIVE_RGB = re.compile(r"rgb/([^/]+)/images/dslr_images/([^/]+\.JPG)")
ORIGINAL_RGB = re.compile(r"([^/]+)/images/dslr_images/([^/]+\.JPG)")


def archive_depth_path(scene: str, image: str) -> str:
    return f"depth/{scene}_dslr_depth/{scene}/ground_truth_depth/dslr_images/{image}"


@register("eth3d")
class ETH3D(NativeDataset):
    """ETH3D depth, 454 DSLR images (raw float32 GT, 1e-5..inf m, long side 756)."""

    obtain = ("the evaluation archive eth3d from Marigold's evaluation data (share.phys.ethz.ch/~pf/bingkedata/"
              "marigold/evaluation_dataset/), or multi_view_training_dslr_jpg + multi_view_training_dslr_depth "
              "from eth3d.net/datasets (extracted into one folder)")
    spec = DatasetSpec(task="depth", min_depth=1e-5, max_depth=float("inf"), clip_min=1e-5, clip_max=float("inf"),
                       processing_res=756, alignment="least_squares", fit_max_side=1024)

    def setup(self) -> None:
        self.source = locate(self.source, lambda s: s.is_dir("rgb") or self._original_files(s),
                             "rgb/<scene>/images/dslr_images/*.JPG + depth/... (archive) or "
                             "<scene>/images/dslr_images/*.JPG + <scene>/ground_truth_depth/dslr_images/*.JPG")
        rows = self.user_rows(2)
        if self.source.is_dir("rgb"):
            self.layout = "archive"
            found = [(m.group(1), m.group(2)) for p in self.source.list("rgb") if (m := ARCHIVE_RGB.fullmatch(p))]
            files = {f"rgb/{s}/images/dslr_images/{i}": archive_depth_path(s, i) for s, i in found}
        else:
            self.layout = "original"
            found = [(m.group(1), m.group(2)) for p in self._original_files(self.source)
                     if (m := ORIGINAL_RGB.fullmatch(p))]
            files = {f"rgb/{s}/images/dslr_images/{i}": f"{s}/ground_truth_depth/dslr_images/{i}" for s, i in found}
        self._files = {sid: (self._rgb_file(sid), gt) for sid, gt in files.items()}
        origin = "derived from the files (every DSLR image)"
        if rows is not None:  # a user list in the archive's naming selects among the images
            origin = f"user list {self.list_path}"
            unknown = [r[0] for r in rows if r[0] not in self._files]
            if unknown:
                raise FileNotFoundError(f"eth3d: {len(unknown)} image(s) of {self.list_path} are not in "
                                        f"{self.source.where()} (first: {unknown[:3]})")
            self._files = {r[0]: self._files[r[0]] for r in rows}
        else:
            rows = [[sid, gt] for sid, gt in sorted(files.items())]
        self.use_list(rows, origin, [r[0] for r in rows], [f for sid in self._files for f in self._files[sid]])

    @staticmethod
    def _original_files(source) -> list[str]:
        return [p for p in source.list("") if ORIGINAL_RGB.fullmatch(p)]

    def _rgb_file(self, sample_id: str) -> str:
        return sample_id if self.layout == "archive" else sample_id[len("rgb/"):]

    def load(self, sample_id: str) -> Sample:
        if sample_id not in self._files:
            raise self.unknown(sample_id)
        rgb_path, gt_path = self._files[sample_id]
        rgb = decode.rgb_image(self.read(rgb_path), self.where(rgb_path))
        depth = decode.raw_float32(self.read(gt_path), self.where(gt_path), *rgb.shape[:2]).copy()
        depth[~np.isfinite(depth)] = 0.0  # inf = no GT (Marigold sets it to 0: invalid); NaN likewise
        valid = range_mask(depth, self.spec.min_depth, self.spec.max_depth)
        scene = posixpath.normpath(sample_id).split("/")[1]
        return Sample(id=sample_id, rgb=rgb, depth=depth, valid=valid, meta={"scene": scene})

    def describe(self) -> dict:
        return {**super().describe(), "fit_grid": "both axes thinned to <= 1024 (Marigold thins only the width)"}
