"""Your own data: ``--datasets folder:DIR`` (or ``folder[depth]:DIR`` / ``folder[normals]:DIR``).

Layout (files matched by their path without suffix, sub-folders allowed; that path is the sample id)::

    DIR/rgb/<name>.png|.jpg|.jpeg|.bmp|.tif|.tiff|.webp   8-bit colour images
    DIR/depth/<name>.png    16-bit PNG in millimetres (value / depth_png_scale = metres; 0 = no depth)
             /<name>.npy    float [H,W] (or [H,W,1]) in metres (0, NaN, inf = no depth)
    DIR/normals/<name>.npy  float [H,W,3] unit normals, canonical frame (x right, y up, z toward the viewer)
               /<name>.png  8-bit RGB, (n + 1) / 2 * 255 (all-zero pixels = no normal)     [optional]
    DIR/mask/<name>.png     8-bit, nonzero = valid (or .npy bool [H,W])                       [optional]
    DIR/spec.json           protocol settings (below)                                         [optional]

The task is the option (``folder[normals]:DIR``), else ``task`` in spec.json, else depth when ``depth/`` exists.
Every present folder must match ``rgb/`` one to one; the depth / normals / mask of a sample must have its RGB's
size. Both are checked from the file headers when the dataset is built, and one error lists every offending file.

spec.json (every key optional; ``--dataset-set KEY=VALUE`` on the command line overrides it)::

    {"task": "depth", "min_depth": 0.001, "max_depth": "inf", "clip_min": null, "clip_max": null,
     "processing_res": 0, "alignment": "least_squares", "depth_png_scale": 1000.0,
     "normals_aggregation": "pooled", "normals_x": "right"}

min_depth / max_depth: valid GT range in metres (exclusive); clip_min / clip_max: the prediction clip after
alignment (null = the valid range); processing_res: long side the method sees (0 = the method's own or native);
alignment: least_squares (the method's output kind picks depth or disparity space) | least_squares_disparity
(methods that output disparity only; a depth method is refused) | none (no fit: metric evaluation); normals_x:
"left" for files in DSINE's x-left frame.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional

import numpy as np

from datasets import decode
from datasets.base import Dataset, DatasetSpec, Sample
from datasets.registry import register

RGB_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
GT_SUFFIXES = {"depth": (".png", ".npy"), "normals": (".npy", ".png"), "mask": (".png", ".npy")}
SPEC_FILE = "spec.json"
LIST_LIMIT = 10


@dataclass(frozen=True)
class FolderSettings:
    """The protocol of a user's folder (spec.json keys); defaults as documented in the module docstring."""

    task: Optional[str] = None  # None = depth when depth/ exists, else normals
    min_depth: float = 1e-3  # metres
    max_depth: float = math.inf
    clip_min: Optional[float] = None  # None = min_depth
    clip_max: Optional[float] = None  # None = max_depth
    processing_res: int = 0
    alignment: str = "least_squares"
    depth_png_scale: float = 1000.0  # PNG value per metre (millimetres)
    normals_aggregation: str = "pooled"
    normals_x: str = "right"

    @classmethod
    def read(cls, root: Path, overrides: dict) -> "FolderSettings":
        known = {f.name: f for f in fields(cls)}
        data = {}
        path = root / SPEC_FILE
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} is not valid JSON ({err}); see `folder` in README for its keys") from None
        data = {**data, **overrides}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown folder dataset settings {unknown} (from {path} or --dataset-set); known: "
                             f"{', '.join(known)}")
        typed = {k: _typed(k, v, known[k].type) for k, v in data.items()}
        settings = cls(**typed)
        bad = settings.invalid()
        if bad:
            raise ValueError(f"folder dataset settings (from {path} or --dataset-set): {'; '.join(bad)}")
        return settings

    def invalid(self) -> list[str]:
        """What is wrong with these settings, one phrase per setting (empty when nothing is)."""
        bad = [f"{key} {getattr(self, key)!r}: expected {' or '.join(allowed)}" for key, allowed in CHOICES.items()
               if getattr(self, key) not in allowed]
        if self.task not in (None, "depth", "normals"):
            bad.append(f"task {self.task!r}: expected depth or normals")
        if self.processing_res < 0:
            bad.append(f"processing_res {self.processing_res}: expected >= 0 (0 = the method's own or native)")
        if not self.depth_png_scale > 0:
            bad.append(f"depth_png_scale {self.depth_png_scale}: expected > 0 (PNG value per metre)")
        return bad


# the settings that take one of a few names, and those names
CHOICES = {"alignment": ("least_squares", "least_squares_disparity", "none"),
           "normals_aggregation": ("pooled", "per_image"), "normals_x": ("right", "left")}


def _typed(key: str, value, kind: str):
    if value is None:
        return None
    try:
        if "float" in str(kind):
            return float(value)
        if "int" in str(kind):
            return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"folder dataset setting {key}={value!r} is not a number") from None
    return str(value)


def _files(folder: Path) -> dict[str, list[Path]]:
    """name (relative path without suffix, posix) -> files; hidden files ignored."""
    out: dict[str, list[Path]] = {}
    if folder.is_dir():
        for f in sorted(folder.rglob("*")):
            if f.is_file() and not f.name.startswith("."):
                out.setdefault(f.relative_to(folder).with_suffix("").as_posix(), []).append(f)
    return out


def _header_size(path: Path, kind: str) -> tuple[int, int]:
    """(H, W) from the file header (no full decode); a 16-bit PNG is required for depth/*.png."""
    if path.suffix == ".npy":
        shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        if len(shape) < 2:
            raise ValueError(f"shape {shape}, expected [H,W] or [H,W,C]")
        return int(shape[0]), int(shape[1])
    from PIL import Image

    with Image.open(path) as im:
        if kind == "depth":
            if im.mode not in ("I;16", "I;16B", "I;16L", "I"):
                raise ValueError(f"mode {im.mode}, expected a single-channel 16-bit PNG in millimetres")
        return im.size[1], im.size[0]


@register("folder")
class FolderDataset(Dataset):
    """Your own data: folder:DIR with rgb/, depth/ (16-bit PNG mm or .npy m), optional normals/, mask/, spec.json."""

    evaluation = False  # not part of `--datasets all`: it needs a folder
    spec_argument = "root"  # folder:DIR -> FolderDataset(root=DIR)
    spec_options = ("depth", "normals")  # folder[normals]:DIR -> FolderDataset(task="normals")

    def __init__(self, root: str, task: Optional[str] = None, **settings):
        self.root = Path(root).expanduser()
        if not (self.root / "rgb").is_dir():
            raise FileNotFoundError(f"{self.root / 'rgb'} does not exist: a folder dataset needs rgb/ and depth/ "
                                    f"(or normals/) beside it; see `folder` in README")
        self.settings = FolderSettings.read(self.root, settings)
        self.task = task or self.settings.task or ("depth" if (self.root / "depth").is_dir() else "normals")
        if self.task not in ("depth", "normals"):
            raise ValueError(f"folder dataset task {self.task!r}: expected depth or normals")
        s = self.settings
        self.spec = DatasetSpec(task=self.task, min_depth=s.min_depth, max_depth=s.max_depth,
                                clip_min=s.min_depth if s.clip_min is None else s.clip_min,
                                clip_max=s.max_depth if s.clip_max is None else s.clip_max,
                                processing_res=s.processing_res or None, alignment=s.alignment,
                                normals_aggregation=s.normals_aggregation)
        self.files = self._match()

    def _match(self) -> dict[str, dict[str, Path]]:
        """id -> {"rgb", "depth"/"normals", "mask"?: path}; one error lists every problem."""
        kinds = ["rgb", self.task] + [k for k in ("mask",) if (self.root / k).is_dir()]
        found = {k: _files(self.root / k) for k in kinds}
        if not found[self.task] and not (self.root / self.task).is_dir():
            raise FileNotFoundError(f"{self.root / self.task} does not exist: a {self.task} folder dataset needs it "
                                    f"(or name the task: folder[depth]:DIR / folder[normals]:DIR)")
        problems = []
        allowed = {"rgb": RGB_SUFFIXES, **GT_SUFFIXES}
        for kind, by_name in found.items():
            for name, paths in by_name.items():
                bad = [p for p in paths if p.suffix.lower() not in allowed[kind]]
                if bad:
                    problems.append(f"{bad[0]}: not a {kind} file (expected {', '.join(allowed[kind])})")
                if len(paths) > 1:
                    problems.append(f"{', '.join(map(str, paths))}: one {kind} file per name, found {len(paths)}")
        names = set(found["rgb"])
        for kind in kinds[1:]:
            for name in sorted(names - set(found[kind])):
                problems.append(f"{found['rgb'][name][0]}: no matching {kind}/{name}.* ")
            for name in sorted(set(found[kind]) - names):
                problems.append(f"{found[kind][name][0]}: no matching rgb/{name}.*")
        if not problems and not names:
            raise ValueError(f"{self.root}: no matching pairs (rgb/ is empty); put images in rgb/ and their "
                             f"{self.task} in {self.task}/ under the same names")
        if not problems:
            problems = self._check_sizes({n: {k: found[k][n][0] for k in kinds} for n in names})
        if problems:
            more = f"\n  ... and {len(problems) - LIST_LIMIT} more" if len(problems) > LIST_LIMIT else ""
            raise ValueError(f"folder dataset {self.root}: {len(problems)} problems (files are matched by name "
                             f"across rgb/, {', '.join(kinds[1:])}/; see `folder` in README):\n  "
                             + "\n  ".join(problems[:LIST_LIMIT]) + more)
        return {n: {k: found[k][n][0] for k in kinds} for n in sorted(names)}

    def _check_sizes(self, files: dict[str, dict[str, Path]]) -> list[str]:
        problems = []
        for name in sorted(files):
            sizes = {}
            for kind, path in files[name].items():
                try:
                    sizes[kind] = _header_size(path, kind)
                except (OSError, ValueError, SyntaxError) as err:
                    problems.append(f"{path}: unreadable ({err})")
            rgb = sizes.get("rgb")
            for kind, size in sizes.items():
                if rgb is not None and size != rgb:
                    problems.append(f"{files[name][kind]}: {size[0]}x{size[1]} but its RGB "
                                    f"{files[name]['rgb']} is {rgb[0]}x{rgb[1]} (resize or crop them alike)")
        return problems

    def ids(self) -> list[str]:
        return list(self.files)

    def load(self, sample_id: str) -> Sample:
        if sample_id not in self.files:
            raise ValueError(f"unknown sample {sample_id!r} in folder dataset {self.root}")
        paths = self.files[sample_id]
        rgb = decode.rgb_image(paths["rgb"].read_bytes(), str(paths["rgb"]))
        valid = np.ones(rgb.shape[:2], bool)
        if "mask" in paths:
            valid &= self._mask(paths["mask"])
        depth = normals = None
        if self.task == "depth":
            depth = self._depth(paths["depth"])
            valid &= np.isfinite(depth) & (depth > self.spec.min_depth) & (depth < self.spec.max_depth)
            depth = np.where(valid, depth, 0.0).astype(np.float32)
        else:
            normals, ok = self._normals(paths["normals"])
            valid &= ok
        if not valid.any():
            raise decode.DecodeError(f"{paths[self.task]}: no valid pixel ({self._validity()}"
                                     f"{', and the mask ' + str(paths['mask']) if 'mask' in paths else ''}); "
                                     f"the fit and every metric need some")
        return Sample(id=sample_id, rgb=rgb, valid=valid, depth=depth, normals=normals,
                      meta={"source": str(paths["rgb"])})

    def _validity(self) -> str:
        """Which GT pixels count as valid, in words."""
        if self.task == "normals":
            return "valid: a nonzero normal"
        return f"valid: finite depth in ({self.spec.min_depth:g}, {self.spec.max_depth:g}) m, 0 in a PNG = none"

    def _depth(self, path: Path) -> np.ndarray:
        """float32 [H,W] metres (NaN where the file has no depth)."""
        if path.suffix == ".npy":
            d = decode.npy(path.read_bytes(), str(path)).astype(np.float32)
            d = d[..., 0] if d.ndim == 3 and d.shape[2] == 1 else d
            if d.ndim != 2:
                raise decode.DecodeError(f"{path}: shape {d.shape}, expected depth [H,W] in metres")
            return d
        raw = decode.png16(path.read_bytes(), str(path))
        return np.where(raw > 0, raw / self.settings.depth_png_scale, np.nan).astype(np.float32)

    def _normals(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        """(unit normals float32 [H,W,3] canonical frame, valid bool [H,W])."""
        if path.suffix == ".npy":
            n = decode.npy(path.read_bytes(), str(path)).astype(np.float32)
            if n.ndim != 3 or n.shape[2] != 3:
                raise decode.DecodeError(f"{path}: shape {n.shape}, expected normals [H,W,3]")
            norm = np.linalg.norm(n, axis=-1)
            ok = np.isfinite(norm) & (norm > 0.5)
        else:
            rgb = decode.rgb_image(path.read_bytes(), str(path))
            ok = rgb.astype(np.int32).sum(-1) > 0
            n = rgb.astype(np.float32) / 255.0 * 2.0 - 1.0
        n = np.where(ok[..., None], n, (0.0, 0.0, 1.0))
        n = n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-6)
        if self.settings.normals_x == "left":
            n[..., 0] = -n[..., 0]
        return n.astype(np.float32), ok

    @staticmethod
    def _mask(path: Path) -> np.ndarray:
        if path.suffix == ".npy":
            m = np.asarray(decode.npy(path.read_bytes(), str(path)))
            m = m[..., 0] if m.ndim == 3 and m.shape[2] == 1 else m
            if m.ndim != 2:
                raise decode.DecodeError(f"{path}: shape {m.shape}, expected a mask [H,W]")
            return m.astype(bool)
        return decode.png8_mask(path.read_bytes(), str(path))

    def describe(self) -> dict:
        return {**super().describe(), "root": str(self.root.resolve()), "task": self.task,
                "settings": {f.name: getattr(self.settings, f.name) for f in fields(self.settings)}}
