"""MPI Sintel depth: the 1064 training frames of 23 scenes (original downloads).

Layout (MPI-Sintel-complete and MPI-Sintel-depth-training extracted into one root, or the same as .tar; files may
sit below one top folder): ``training/<pass>/<scene>/frame_NNNN.png`` (RGB, pass ``final`` by default or ``clean``)
and ``training/depth/<scene>/frame_NNNN.dpt`` (float32 tag 202021.25, int32 width, int32 height, then the depth,
little-endian). The list follows from the files (every ``.dpt``).

The protocol page fixes the decoding only; the valid range (1e-3 < d < ``max_depth``, default 80 m: Sintel's sky
and far background hold very large values) and the clip after alignment ([1e-3, max_depth]) are this harness's
defaults, recorded with every number. Native resolution (436 x 1024). Ids are the RGB paths; name mode ``id``.
"""
from __future__ import annotations

import re
from dataclasses import replace

from datasets import decode
from datasets.base import DatasetSpec, Sample
from datasets.crops import range_mask
from datasets.native import NativeDataset
from datasets.registry import register
from datasets.sources import locate

DEPTH = re.compile(r"training/depth/([^/]+)/(frame_\d+)\.dpt")
PASSES = ("final", "clean")
SINTEL_SPEC = DatasetSpec(task="depth", min_depth=1e-3, max_depth=80.0, clip_min=1e-3, clip_max=80.0,
                          processing_res=0, alignment="least_squares")


@register("sintel")
class Sintel(NativeDataset):
    """MPI Sintel depth, 1064 training frames (.dpt; valid 1e-3..80 m by default; final pass)."""

    evaluation = False  # not in the paper's Table 1: not part of `--datasets all` (name it to run it)

    obtain = ("MPI-Sintel-complete.zip (images) and MPI-Sintel-depth-training-20150305.zip (depth) from "
              "sintel.is.tue.mpg.de, extracted into one folder (training/final, training/depth)")
    layout = "training/<final|clean>/<scene>/frame_NNNN.png + training/depth/<scene>/frame_NNNN.dpt"

    def __init__(self, root, list_path=None, warn_list: bool = True, image_pass: str = "final",
                 max_depth: float = 80.0):
        if image_pass not in PASSES:
            raise ValueError(f"sintel: unknown image_pass {image_pass!r}; expected one of {PASSES}")
        self.image_pass = image_pass
        self.spec = replace(SINTEL_SPEC, max_depth=float(max_depth), clip_max=float(max_depth))
        super().__init__(root, list_path, warn_list)

    def setup(self) -> None:
        self.source = locate(self.source, lambda s: s.is_dir("training/depth"), self.layout)
        rows = self.user_rows(2)
        origin = f"user list {self.list_path}"
        if rows is None:
            found = [m for p in self.source.list("training/depth") if (m := DEPTH.fullmatch(p))]
            rows = [[f"training/{self.image_pass}/{m.group(1)}/{m.group(2)}.png", m.group(0)] for m in found]
            origin = "derived from the files (training/depth/*/*.dpt)"
        self._depth = {r[0]: r[1] for r in rows}
        self.use_list(rows, origin, [r[0] for r in rows], [f for r in rows for f in r[:2]])

    def load(self, sample_id: str) -> Sample:
        if sample_id not in self._depth:
            raise self.unknown(sample_id)
        gt_path = self._depth[sample_id]
        rgb = decode.rgb_image(self.read(sample_id), self.where(sample_id))
        depth = decode.sintel_dpt(self.read(gt_path), self.where(gt_path))
        if depth.shape != rgb.shape[:2]:
            raise decode.DecodeError(f"{self.where(gt_path)}: depth {depth.shape}, RGB {rgb.shape[:2]}")
        valid = range_mask(depth, self.spec.min_depth, self.spec.max_depth)
        return Sample(id=sample_id, rgb=rgb, depth=depth, valid=valid, meta={"scene": sample_id.split("/")[2]})

    def describe(self) -> dict:
        return {**super().describe(), "image_pass": self.image_pass}
