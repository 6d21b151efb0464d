"""iBims-1 depth: the 100 core images (original download ``ibims1_core_raw``).

Layout (root: folder or .tar; files may sit below one top folder): ``imagelist.txt`` (the list, shipped: one name per
line), ``rgb/<name>.png``, ``depth/<name>.png`` (uint16, ``d = v / 65535 * 50`` metres), ``mask_invalid/<name>.png``
and ``mask_transp/<name>.png`` (1 = valid). Valid = both masks and d != 0 (protocol.md).

The protocol page fixes the decoding and the valid mask only; the clip after alignment ([1e-3, 50] m: 50 m is the
largest encodable depth) and the processing resolution (native 480 x 640) are this harness's defaults, recorded
with every number. Ids are the RGB paths (``rgb/<name>.png``); predictions in name mode ``id``.
"""
from __future__ import annotations

import numpy as np

from datasets import decode
from datasets.base import DatasetSpec, Sample
from datasets.lists import parse_list
from datasets.native import NativeDataset
from datasets.registry import register
from datasets.sources import locate

LIST = "imagelist.txt"
FOLDERS = ("rgb", "depth", "mask_invalid", "mask_transp")
MAX_ENCODED = 50.0  # metres at uint16 65535


@register("ibims")
class IBims(NativeDataset):
    """iBims-1 depth, 100 images (uint16 / 65535 * 50 m; invalid and transparent masks)."""

    evaluation = False  # not in the paper's Table 1: not part of `--datasets all` (name it to run it)

    obtain = "ibims1_core_raw from the iBims-1 page (www.asg.ed.tum.de/lmf/ibims1/); extract, or repack as .tar"
    spec = DatasetSpec(task="depth", min_depth=0.0, max_depth=float("inf"), clip_min=1e-3, clip_max=MAX_ENCODED,
                       processing_res=0, alignment="least_squares")
    layout = "imagelist.txt + rgb/, depth/, mask_invalid/, mask_transp/ <name>.png"

    def setup(self) -> None:
        self.source = locate(self.source, lambda s: s.exists(LIST) and s.is_dir("depth"), self.layout)
        rows = self.user_rows(1)
        origin = f"user list {self.list_path}"
        if rows is None:
            rows = parse_list(self.source.read(LIST).decode(), self.where(LIST), 1)
            origin = f"shipped: {LIST}"
        names = [r[0][:-4] if r[0].endswith(".png") else r[0] for r in rows]
        self._names = {f"rgb/{n}.png": n for n in names}
        self.use_list([[f"rgb/{n}.png"] for n in names], origin, list(self._names),
                      [f"{folder}/{n}.png" for n in names for folder in FOLDERS])

    def load(self, sample_id: str) -> Sample:
        if sample_id not in self._names:
            raise self.unknown(sample_id)
        name = self._names[sample_id]
        files = {folder: f"{folder}/{name}.png" for folder in FOLDERS}
        rgb = decode.rgb_image(self.read(files["rgb"]), self.where(files["rgb"]))
        raw = decode.png16(self.read(files["depth"]), self.where(files["depth"]))
        depth = (raw / 65535.0 * MAX_ENCODED).astype(np.float32)  # float64 arithmetic, then float32 (metres)
        valid = depth != 0
        for folder in ("mask_invalid", "mask_transp"):
            mask = decode.png8_mask(self.read(files[folder]), self.where(files[folder]))
            if mask.shape != depth.shape:
                raise decode.DecodeError(f"{self.where(files[folder])}: mask {mask.shape}, depth {depth.shape}")
            valid &= mask
        if rgb.shape[:2] != depth.shape:
            raise decode.DecodeError(f"{self.where(files['depth'])}: depth {depth.shape}, RGB {rgb.shape[:2]}")
        return Sample(id=sample_id, rgb=rgb, depth=depth, valid=valid)
