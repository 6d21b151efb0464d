"""The sample schema and the dataset spec every adapter fills in.

Units: depth in metres (float32), normals as unit vectors in the canonical camera frame
(x right, y up, z toward the viewer), RGB as uint8.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Literal, Optional

import numpy as np

Task = Literal["depth", "normals"]


@dataclass(frozen=True)
class DatasetSpec:
    """Protocol settings of one benchmark: what the evaluator applies, recorded beside every number."""

    task: Task
    min_depth: float = 1e-3  # metres, valid GT range (exclusive bounds, as Marigold)
    max_depth: float = 10.0
    clip_min: float = 1e-3  # metres, prediction clip after alignment
    clip_max: float = 10.0
    processing_res: int = 0  # long side the method sees; 0 = native
    alignment: Literal["least_squares", "least_squares_disparity", "none"] = "least_squares"
    normals_aggregation: Literal["pooled", "per_image"] = "pooled"
    eval_crop: Optional[str] = None  # name of the crop applied to the valid mask, e.g. "eigen"


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

    def __len__(self) -> int:
        return len(self.ids())

    def __iter__(self) -> Iterator[Sample]:
        for sample_id in self.ids():
            yield self.load(sample_id)

    def describe(self) -> dict:
        """What the manifest records about this dataset instance."""
        return {"name": self.name, "count": len(self)}
