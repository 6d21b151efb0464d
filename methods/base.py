"""The method contract: what a model takes, what it returns, and how its output must be aligned.

A method takes tensors and returns tensors; it never sees a dataset file or a metric. The evaluator resizes the
RGB to the method's processing resolution, calls ``predict`` and resizes the output back.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import torch

Task = Literal["depth", "normals"]
OutputKind = Literal["depth", "disparity", "normals"]


@dataclass(frozen=True)
class OutputContract:
    """What ``predict`` returns for one task; the evaluator picks the alignment from it.

    kind: "depth" (affine-invariant depth, aligned in depth space), "disparity" (aligned in disparity space) or
    "normals" (unit vectors, canonical camera frame x right, y up, z toward the viewer; no alignment).
    processing_res: long side in pixels the method wants its input at where the dataset's protocol sets none
    (a benchmark's own value takes precedence: harness.evaluate.resolved_processing_res); 0 = native.
    """

    kind: OutputKind
    affine_invariant: bool = True
    stochastic: bool = False  # True when the output depends on the seed
    default_steps: Optional[int] = None
    processing_res: int = 0
    size_multiple: int = 1  # input height and width must be multiples of this (latent downsampling)
    min_size: int = 1  # smallest input side: below it the deepest feature map is less than one pixel on that side


@dataclass(frozen=True)
class RunOptions:
    """Per-run inference settings every method accepts (recorded with each result)."""

    steps: Optional[int] = None  # None = the method's default
    eta: float = 0.0
    device: str = "cpu"
    dtype: str = "float32"  # "float32" | "bfloat16" | "float16" (autocast)
    checkpoint: Optional[str] = None  # folder overriding the shipped one
    channels_last: bool = False  # networks in channels-last memory format (methods.inference)
    compile: bool = False  # torch.compile the networks (methods.inference)
    bmm_attention: bool = False  # the UNet's attention as bmm-softmax-bmm (methods.attention)
    ensemble_size: int = 0  # samples averaged per image by stochastic methods (marigold, the trained ones); 0 = the method's
    extra: dict = field(default_factory=dict)


class Method:
    """Base class. Subclasses are registered with ``methods.registry.register`` and built per task."""

    name: str = "?"  # set by @register
    tasks: tuple[Task, ...] = ("depth", "normals")
    # A method named on the command line as ``name[option]:argument`` (``predictions[disparity]:DIR``) lists the
    # options it accepts, each with the tasks it covers, and names its argument (None: it takes none). Both reach
    # __init__ as ``options.extra["spec_option"]`` and ``options.extra["spec_argument"]`` (harness.registry).
    spec_options: dict[str, tuple[Task, ...]] = {}
    spec_argument: Optional[str] = None
    loads_checkpoint: bool = False  # True: its weights come from a folder or file that --checkpoint can replace
    # True for a method whose outputs already lie on disk (methods.saved): instead of ``predict`` the engine
    # calls ``load(relpath) -> float32 [C,h,w]`` with the dataset's ``prediction_relpath(id)`` and caches nothing.
    reads_saved_predictions: bool = False

    def __init__(self, task: Task, options: RunOptions):
        if task not in self.tasks:
            raise ValueError(f"method {self.name!r} does not predict {task}; it predicts {', '.join(self.tasks)}")
        self.task = task
        self.options = options

    @property
    def contract(self) -> OutputContract:
        raise NotImplementedError

    def predict(self, rgb: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        """rgb: float32 [B,3,H,W] in [-1,1] at processing resolution; one generator per image (seeded per sample).

        Returns depth [B,1,H,W] (affine-invariant, larger = farther) or normals [B,3,H,W] (unit vectors).
        """
        raise NotImplementedError

    def use_steps(self, steps: int) -> None:
        """Sample with ``steps`` from now on (a sweep over steps need not reload the network); methods without
        sampling steps refuse."""
        raise ValueError(f"method {self.name!r} has no sampling steps")

    def describe(self) -> dict:
        """Method, variant, checkpoint and settings: recorded in the manifest and every row."""
        return {"method": self.name, "variant": "default", "checkpoint": "-", "steps": 0, "eta": 0.0}
