"""Predictions saved by any model (Depth Anything, Marigold, ...), scored under this harness' protocol.

Named on the command line (``--methods``) as

- ``predictions:DIR``: affine-invariant depth on depth datasets (least-squares alignment in depth space), unit
  normals on normal datasets;
- ``predictions[disparity]:DIR``: affine-invariant disparity (Depth Anything, MiDaS; aligned in disparity space);
- ``predictions[depth]:DIR`` / ``predictions[normals]:DIR``: that kind only (the other task's datasets are skipped).

DIR may itself contain ':' (only the first one separates it) but no ',' (the list separator of ``--methods``).
One file per sample at ``DIR/<dataset.prediction_relpath(id)>``, the layout Marigold's evaluation scripts write
(``pred_<name>.npy`` in the sample's RGB folder, e.g. NYUv2 ``test/bathroom/pred_0001.npy``, the tiny world
``test/pred_00007.npy``), holding depth or disparity ``[H,W]`` (also ``[1,H,W]``, ``[H,W,1]``) or normals
``[3,H,W]`` or ``[H,W,3]`` (canonical frame: x right, y up, z toward the viewer; convert DSINE's x-left first),
any float dtype, at GT resolution or any other (resized back to GT like every method's output).
A method never sees a dataset: the engine (harness.evaluate) asks the dataset where a sample's file lies and calls
``load``; it checks every file before scoring and never caches a copy of them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from methods.base import Method, OutputContract
from methods.registry import register

KINDS = {"depth": ("depth",), "disparity": ("depth",), "normals": ("normals",)}  # kind -> the task it serves
SHAPES = {"depth": "[H,W] (or [1,H,W], [H,W,1])", "normals": "[3,H,W] or [H,W,3]"}


def to_channels_first(array: np.ndarray, task: str) -> np.ndarray:
    """A loaded prediction -> float32 [C,h,w] (C = 1 depth, 3 normals); ValueError naming the expected shape."""
    shape = tuple(array.shape)
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"dtype {array.dtype} is not a real number type")
    if task == "depth":
        if array.ndim == 2:
            array = array[None]
        elif array.ndim == 3 and shape[0] == 1:
            pass
        elif array.ndim == 3 and shape[2] == 1:
            array = array.transpose(2, 0, 1)
        else:
            hint = " (a normal map?)" if 3 in shape and array.ndim == 3 else ""
            raise ValueError(f"shape {shape}{hint}; depth must be {SHAPES['depth']}")
    else:
        if array.ndim == 3 and shape[0] == 3:
            pass
        elif array.ndim == 3 and shape[2] == 3:
            array = array.transpose(2, 0, 1)
        else:
            raise ValueError(f"shape {shape}; normals must be {SHAPES['normals']}")
    if min(array.shape[1:]) < 1:
        raise ValueError(f"shape {shape} is empty")
    return np.ascontiguousarray(array, dtype=np.float32)


@register("predictions")
class SavedPredictions(Method):
    """Any model's saved predictions, Marigold layout: predictions[depth|disparity|normals]:DIR."""

    tasks = ("depth", "normals")
    spec_options = KINDS
    spec_argument = "folder"
    reads_saved_predictions = True

    def __init__(self, task, options):
        super().__init__(task, options)
        folder = options.extra.get("spec_argument")
        if not folder:
            raise ValueError("method 'predictions' needs the folder of the saved predictions: --methods "
                             "predictions:DIR (or predictions[disparity]:DIR for disparity outputs)")
        self.given = str(folder)
        self.folder = Path(folder).expanduser()
        self.kind = options.extra.get("spec_option") or ("normals" if task == "normals" else "depth")
        if self.kind not in KINDS or task not in KINDS[self.kind]:
            raise ValueError(f"predictions[{self.kind}] cannot be scored on a {task} dataset")
        if not self.folder.is_dir():
            raise FileNotFoundError(f"prediction folder {self.folder} does not exist (from --methods "
                                    f"predictions:{self.given}); give the folder that holds the pred_*.npy layout")

    @property
    def contract(self) -> OutputContract:
        return OutputContract(kind=self.kind, affine_invariant=self.kind != "normals")

    def path(self, relpath: str) -> Path:
        return self.folder / relpath

    def load(self, relpath: str) -> np.ndarray:
        """DIR/relpath -> float32 [C,h,w]. FileNotFoundError when absent; ValueError (a short reason) when the file
        is unreadable, misshapen or holds NaN or inf."""
        path = self.path(relpath)
        if not path.is_file():
            raise FileNotFoundError(str(path))
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise ValueError(f"unreadable .npy ({err})") from None
        pred = to_channels_first(np.asarray(array), self.task)
        bad = int((~np.isfinite(pred)).sum())
        if bad:
            raise ValueError(f"{bad} NaN or inf values")
        return pred

    def predict(self, rgb, generators):
        raise RuntimeError("'predictions' reads saved files: the engine calls load(), never predict()")

    def describe(self) -> dict:
        return {"method": self.name, "variant": f"{self.kind}:{self.given.rstrip('/')}",
                "checkpoint": str(self.folder.resolve()), "steps": 0, "eta": 0.0, "kind": self.kind,
                "folder": str(self.folder.resolve())}
