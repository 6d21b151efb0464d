"""The sample schema and the dataset spec every adapter fills in.

Units: depth in metres (float32), normals as unit vectors in the canonical camera frame
(x right, y up, z toward the viewer), RGB as uint8.
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Iterator, Literal, Optional, get_args

import numpy as np

Task = Literal["depth", "normals"]
PredNameMode = Literal["id", "rgb_id", "rgb_i_d", "i_d_rgb"]


def marigold_prediction_path(rgb_relpath: str, name_mode: PredNameMode = "id") -> str:
    """Where Marigold's evaluation scripts save the prediction of an RGB file (relative to the output folder).

    The folder of the RGB relative to the dataset root, and a file name from the RGB's by Marigold's name modes
    (``get_pred_name``), with the extension replaced by ``.npy``:
    ``id``: ``pred_<name>`` (KITTI, ETH3D, ScanNet, DIODE: ``DSC_0001.JPG`` -> ``pred_DSC_0001.npy``);
    ``rgb_i_d``: ``pred_`` + the name without its first ``_`` part (NYUv2: ``rgb_0001.png`` -> ``pred_0001.npy``);
    ``rgb_id``: ``pred_`` + the second ``_`` part; ``i_d_rgb``: ``_rgb.`` replaced by ``_pred.``.
    """
    folder, base = posixpath.split(rgb_relpath)
    if name_mode == "id":
        name = "pred_" + base
    elif name_mode == "rgb_i_d":
        name = "pred_" + "_".join(base.split("_")[1:])
    elif name_mode == "rgb_id":
        name = "pred_" + base.split("_")[1]
    elif name_mode == "i_d_rgb":
        name = base.replace("_rgb.", "_pred.")
    else:
        raise ValueError(f"unknown prediction name mode {name_mode!r}; expected id, rgb_id, rgb_i_d or i_d_rgb")
    return posixpath.join(folder, posixpath.splitext(name)[0] + ".npy")


Alignment = Literal["least_squares", "least_squares_disparity", "none"]
Aggregation = Literal["pooled", "per_image"]  # normals: over all pixels, or per image then averaged


@dataclass(frozen=True)
class DatasetSpec:
    """Protocol settings of one benchmark: what the evaluator applies, recorded beside every number."""

    task: Task
    min_depth: float = 1e-3  # metres, valid GT range (exclusive bounds, as Marigold)
    max_depth: float = 10.0
    clip_min: float = 1e-3  # metres, prediction clip after alignment
    clip_max: float = 10.0
    # long side the method sees, the protocol's: 0 = native; None = the protocol sets none (the method's own
    # resolution, else native). A benchmark's value takes precedence over the method's (harness.evaluate)
    processing_res: Optional[int] = None
    alignment: Alignment = "least_squares"
    normals_aggregation: Aggregation = "pooled"
    eval_crop: Optional[str] = None  # name of the crop applied to the valid mask, e.g. "eigen"
    fit_max_side: int = 0  # depth alignment fitted on a grid thinned to at most this many pixels per side; 0 = all

    def __post_init__(self):
        for key, allowed in (("alignment", get_args(Alignment)), ("normals_aggregation", get_args(Aggregation))):
            if getattr(self, key) not in allowed:
                raise ValueError(f"dataset spec {key} {getattr(self, key)!r}: expected {' or '.join(allowed)}")


@dataclass
class Sample:
    """One evaluation or training sample.

    rgb: uint8 [H,W,3]; depth: float32 [H,W] metres or None; normals: float32 [H,W,3] unit or None;
    valid: bool [H,W] (GT valid range and crop already applied); meta: free-form strings/numbers
    (for the tiny world: ``scene_type`` indoor/outdoor).
    """

    id: str
    rgb: np.ndarray
    valid: np.ndarray
    depth: Optional[np.ndarray] = None
    normals: Optional[np.ndarray] = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        h, w = self.rgb.shape[:2]
        if self.rgb.dtype != np.uint8 or self.rgb.shape != (h, w, 3):
            raise ValueError(f"sample {self.id}: rgb must be uint8 [H,W,3], got {self.rgb.dtype} {self.rgb.shape}")
        if self.valid.shape != (h, w) or self.valid.dtype != bool:
            raise ValueError(f"sample {self.id}: valid must be bool [{h},{w}], got {self.valid.dtype} {self.valid.shape}")
        if self.depth is not None and self.depth.shape != (h, w):
            raise ValueError(f"sample {self.id}: depth must be [{h},{w}], got {self.depth.shape}")
        if self.normals is not None and self.normals.shape != (h, w, 3):
            raise ValueError(f"sample {self.id}: normals must be [{h},{w},3], got {self.normals.shape}")


class Dataset:
    """Base adapter: subclasses set ``spec`` and implement ``ids`` and ``load``.

    An adapter reads one sample at a time (never the whole dataset) and knows nothing of methods or metrics.
    """

    name: str = "?"  # set by @register
    spec: DatasetSpec

    def ids(self) -> list[str]:
        raise NotImplementedError

    def load(self, sample_id: str) -> Sample:
        raise NotImplementedError

    def prediction_relpath(self, sample_id: str) -> str:
        """Where a saved prediction of this sample lives, relative to a prediction folder (``predictions:DIR``).

        The Marigold evaluation layout: ``pred_<name>.npy`` in the sample's RGB folder relative to the dataset
        root (see :func:`marigold_prediction_path`; NYUv2 ``test/bathroom/rgb_0001.png`` ->
        ``test/bathroom/pred_0001.npy``). This default reads the id as that RGB path in name mode ``id``:
        ``<dirname(id)>/pred_<basename(id) without extension>.npy`` (the tiny world's ``test/00007`` ->
        ``test/pred_00007.npy``). An adapter whose ids are not RGB paths, or whose benchmark uses another
        name mode, overrides it.
        """
        return marigold_prediction_path(sample_id, "id")

    def __len__(self) -> int:
        return len(self.ids())

    def __iter__(self) -> Iterator[Sample]:
        for sample_id in self.ids():
            yield self.load(sample_id)

    def describe(self) -> dict:
        """What the manifest records about this dataset instance."""
        return {"name": self.name, "count": len(self)}
