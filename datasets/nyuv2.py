"""NYUv2 depth test set (654 images): the evaluation archive layout or the original labeled .mat.

Layouts (root: folder or .tar; files may sit below one top folder):
- archive (Marigold's ``nyuv2`` evaluation tar): ``test/<scene>/rgb_NNNN.png`` (uint8 RGB), ``depth_NNNN.png`` (raw
  Kinect depth, uint16 millimetres, 0 = none), ``filled_NNNN.png`` (not used). The list follows from the files
  (every ``test/*/rgb_*.png``) unless a user list (``rgb depth filled`` per line) is given.
- original: ``nyu_depth_v2_labeled.mat`` (MATLAB v7.3 = HDF5; ``images`` (1449,3,640,480) uint8, ``rawDepths``
  (1449,640,480) float metres, ``scenes`` names) and ``splits.mat`` (``testNdxs``, 654, 1-based). Read lazily through
  h5py, one image per sample. Ids are the archive's RGB paths (``test/<scene>/rgb_<index:04d>.png``) so the list
  fingerprint and the prediction layout are the same for both. The .mat's depth is used as stored (float metres);
  the archive's PNGs hold it in whole millimetres, so the two layouts differ by less than 1 mm per pixel.

Depth in metres (float32); valid = 1e-3 < d < 10 inside the Eigen crop (rows 45:471, cols 41:601). Predictions in
Marigold's name mode ``rgb_i_d``: ``test/<scene>/pred_NNNN.npy``.
"""
from __future__ import annotations

import io
import posixpath
import re

import numpy as np

from datasets import decode
from datasets.base import DatasetSpec, Sample, marigold_prediction_path
from datasets.crops import NYU_SHAPE, nyu_eigen_mask, range_mask
from datasets.native import NativeDataset
from datasets.registry import register
from datasets.sources import locate

MAT, SPLITS = "nyu_depth_v2_labeled.mat", "splits.mat"
RGB_NAME = re.compile(r"test/[^/]+/rgb_(\d+)\.png")


@register("nyuv2")
class NYUv2(NativeDataset):
    """NYUv2 depth, 654 test images (Eigen crop, 1e-3..10 m, raw Kinect depth)."""

    obtain = ("the evaluation archive nyuv2 from Marigold's evaluation data (share.phys.ethz.ch/~pf/bingkedata/"
              "marigold/evaluation_dataset/, see github.com/prs-eth/Marigold script/download_eval_data), or "
              "nyu_depth_v2_labeled.mat + splits.mat from cs.nyu.edu/~silberman/datasets/nyu_depth_v2.html")
    spec = DatasetSpec(task="depth", min_depth=1e-3, max_depth=10.0, clip_min=1e-3, clip_max=10.0, processing_res=0,
                       alignment="least_squares", eval_crop="eigen")

    def setup(self) -> None:
        self.source = locate(self.source, lambda s: s.exists(MAT) or s.is_dir("test"),
                             f"test/<scene>/rgb_NNNN.png + depth_NNNN.png (archive) or {MAT} + {SPLITS}")
        if self.source.exists(MAT):
            self._setup_mat()
        else:
            self._setup_archive()

    def _setup_archive(self) -> None:
        self.layout = "archive"
        rows = self.user_rows(2)
        origin = f"user list {self.list_path}"
        if rows is None:
            rgbs = sorted((p for p in self.source.list("test") if RGB_NAME.fullmatch(p)),
                          key=lambda p: int(RGB_NAME.fullmatch(p).group(1)))  # image order, as the official list
            rows = [[p, p.replace("/rgb_", "/depth_"), p.replace("/rgb_", "/filled_")] for p in rgbs]
            origin = "derived from the files (test/*/rgb_*.png)"
        self._depth = {r[0]: r[1] for r in rows}
        self.use_list(rows, origin, [r[0] for r in rows], [f for r in rows for f in r[:2]])

    def _setup_mat(self) -> None:
        import h5py
        import scipy.io

        self.layout = "original (.mat)"
        if not self.source.exists(SPLITS):
            raise self.source.missing(SPLITS, f"the official split beside {MAT}, with testNdxs")
        try:
            split = scipy.io.loadmat(io.BytesIO(self.read(SPLITS)))
        except (ValueError, OSError) as err:
            raise decode.DecodeError(f"{self.where(SPLITS)}: cannot read as MATLAB v5 ({err})") from err
        if "testNdxs" not in split:
            raise decode.DecodeError(f"{self.where(SPLITS)}: no 'testNdxs' (the official NYUv2 splits.mat)")
        test = [int(i) for i in np.asarray(split["testNdxs"]).ravel()]  # 1-based
        try:
            self._mat = h5py.File(self.source.open(MAT), "r")
        except OSError as err:
            raise decode.DecodeError(f"{self.where(MAT)}: cannot open as HDF5 / MATLAB v7.3 ({err}); truncated?") \
                from err
        for key in ("images", "rawDepths", "scenes"):
            if key not in self._mat:
                raise decode.DecodeError(f"{self.where(MAT)}: no '{key}' (expected nyu_depth_v2_labeled.mat)")
        n = self._mat["images"].shape[0]
        bad = [i for i in test if not 1 <= i <= n]
        if bad:
            raise decode.DecodeError(f"{self.where(SPLITS)}: testNdxs {bad[:5]} outside 1..{n} of {MAT}")
        scenes = self._mat["scenes"]
        ids = [f"test/{self._scene_name(scenes, i - 1)}/rgb_{i:04d}.png" for i in test]
        self._index = {sid: i - 1 for sid, i in zip(ids, test)}
        self.use_list([[sid] for sid in ids], f"shipped: {SPLITS} testNdxs", ids, [])

    def _scene_name(self, scenes, index: int) -> str:
        ref = scenes[0, index] if scenes.shape[0] == 1 else scenes[index, 0]
        return "".join(chr(int(c)) for c in np.asarray(self._mat[ref]).ravel())

    def load(self, sample_id: str) -> Sample:
        if self.layout == "archive":
            if sample_id not in self._depth:
                raise self.unknown(sample_id)
            rgb = decode.rgb_image(self.read(sample_id), self.where(sample_id))
            name = self._depth[sample_id]
            depth = np.divide(decode.png16(self.read(name), self.where(name)), np.float32(1000.0), dtype=np.float32)
        else:
            if sample_id not in self._index:
                raise self.unknown(sample_id)
            i = self._index[sample_id]
            rgb = np.ascontiguousarray(np.asarray(self._mat["images"][i]).transpose(2, 1, 0), dtype=np.uint8)
            depth = np.ascontiguousarray(np.asarray(self._mat["rawDepths"][i], dtype=np.float32).T)
            name = f"{MAT} rawDepths[{i}]"
        if rgb.shape[:2] != NYU_SHAPE or depth.shape != NYU_SHAPE:
            raise decode.DecodeError(f"{self.where(name)}: NYUv2 frames are 480 x 640; got RGB {rgb.shape[:2]}, "
                                     f"depth {depth.shape}")
        valid = range_mask(depth, self.spec.min_depth, self.spec.max_depth) & nyu_eigen_mask(depth.shape)
        return Sample(id=sample_id, rgb=rgb, depth=depth, valid=valid,
                      meta={"scene": posixpath.basename(posixpath.dirname(sample_id))})

    def prediction_relpath(self, sample_id: str) -> str:
        return marigold_prediction_path(sample_id, "rgb_i_d")
