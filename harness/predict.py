"""`python -m harness predict`: run a method on your own images (any size and aspect) and write its maps.

Each image is resized to the method's processing resolution (long side, each side a multiple of the method's
``size_multiple``, as in evaluation), predicted with a per-image seed (``sample_seed(seed, name)``), resized back
to the image's own size (bilinear, antialias) and written under the output folder, keeping the name of the file
(and its sub-folder when a folder was given):

- depth:   ``<name>_depth.npy`` (float32 [H,W], the raw affine-invariant prediction, larger = farther),
           ``<name>_depth.png`` (16-bit, normalised per image to 0 = nearest .. 65535 = farthest; not metric),
           ``<name>_depth_colored.png`` (8-bit RGB, colormap ``harness.pictures.DEPTH_COLORMAP``, near = warm);
- normals: ``<name>_normals.npy`` (float32 [H,W,3] unit, x right, y up, z toward the viewer),
           ``<name>_normals.png`` (8-bit RGB, ``round((n + 1) / 2 * 255)``).

Nothing is overwritten: an image whose outputs all exist is skipped (listed in the message; that is also how an
interrupted call resumes), an image with only some of them is an error naming them, and a folder made with other
settings (``predict.json``) is refused.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from harness.evaluate import (DEFAULT_SIZE_FIT, SIZE_FIT_BEFORE_OPTION, check_inference_settings, check_processing_size,
                              check_size_fit, predict_unpadded, prepare_batch, processing_size, sample_seed)
from harness.pictures import (DEPTH_COLORMAP, IMAGE_SUFFIXES, check_image, colorize, depth_to_uint16, normalise01,
                              normals_to_rgb8, read_rgb, write_png)
from harness.registry import build_method, parse_method_spec
from harness.runio import atomic_save_npy, atomic_write_text, read_json_object
from harness.scoring import resize_to
from methods.base import RunOptions

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
SETTINGS_FILE = "predict.json"


@dataclass(frozen=True)
class PredictConfig:
    """Everything that changes the written maps (recorded in ``predict.json`` in the output folder)."""

    method: str
    task: str = "depth"
    steps: Optional[int] = None  # None = the method's default
    eta: float = 0.0
    seed: int = 0
    batch_size: int = 8
    device: str = "cpu"
    dtype: str = "float32"
    processing_res: Optional[int] = None  # None = the method's own (0 = the image's native size)
    colormap: str = DEPTH_COLORMAP
    size_fit: str = DEFAULT_SIZE_FIT  # how the processing size meets the network's multiple (harness.evaluate)


@dataclass(frozen=True)
class InputImage:
    path: Path
    name: str  # output name without suffix, relative to the output folder (posix), e.g. "street/img_001"


def check_config(cfg: PredictConfig) -> None:
    """Refuse settings that cannot run, before anything is read or recorded."""
    if cfg.task not in ("depth", "normals"):
        raise ValueError(f"unknown task {cfg.task!r}; expected depth or normals")
    check_inference_settings(cfg.steps, cfg.batch_size, cfg.processing_res, cfg.eta, cfg.device)
    check_size_fit(cfg.size_fit)


def collect_inputs(paths: list[str], output: Optional[Path] = None) -> tuple[list[InputImage], list[Path]]:
    """Files as given (must be images) and image files under folders (recursively, sorted); returns the images
    and the non-image files found in folders (reported, not read). Files in the ``output`` folder, or in any
    folder of earlier predictions (one holding a predict.json), are not inputs. Raises when a path does not exist,
    when an explicitly named file is not an image, or when two inputs would write the same output names."""
    images, ignored = [], []
    for text in paths:
        p = Path(text)
        if p.is_dir():
            files = sorted(q for q in p.rglob("*") if q.is_file())
            outputs = {f.parent.resolve() for f in files if f.name == SETTINGS_FILE}
            outputs |= {output.resolve()} if output is not None else set()
            for f in files:
                if outputs & set(f.resolve().parents):
                    continue  # predictions of this command, not photos
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    images.append(InputImage(f, f.relative_to(p).with_suffix("").as_posix()))
                else:
                    ignored.append(f)
        elif p.is_file():
            images.append(InputImage(p, p.stem))
        else:
            raise FileNotFoundError(f"{p} does not exist; pass image files or folders of images")
    for img in images:
        check_image(img.path)
    by_name: dict[str, Path] = {}
    for img in images:
        if img.name in by_name:
            raise ValueError(f"{by_name[img.name]} and {img.path} would both write {img.name}_*: rename one or "
                             f"predict them in separate calls with different --output")
        by_name[img.name] = img.path
    if not images:
        raise ValueError(f"no image files in {', '.join(paths)} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return images, ignored


def output_paths(folder: Path, name: str, task: str) -> dict[str, Path]:
    if task == "depth":
        return {"npy": folder / f"{name}_depth.npy", "png16": folder / f"{name}_depth.png",
                "colored": folder / f"{name}_depth_colored.png"}
    return {"npy": folder / f"{name}_normals.npy", "rgb": folder / f"{name}_normals.png"}


def default_output(cfg: PredictConfig) -> Path:
    return RESULTS_DIR / "predict" / f"{parse_method_spec(cfg.method).cell}__{cfg.task}"


def claim_output(folder: Path, cfg: PredictConfig, resolved: Optional[dict] = None) -> None:
    """Record the settings in the output folder, or refuse a folder written with other settings. ``resolved``: what
    the defaults came to (the method's description, with its steps and checkpoint, and the processing resolution),
    recorded beside them (a folder written before it was recorded is compared on the settings alone)."""
    path = folder / SETTINGS_FILE
    record = {**asdict(cfg), **({"resolved": resolved} if resolved is not None else {})}
    if path.is_file():
        previous = read_json_object(path, "choose another --output (the maps there cannot be matched to settings)")
        previous.setdefault("size_fit", SIZE_FIT_BEFORE_OPTION)  # written before the option: made so
        if "resolved" not in previous:
            record.pop("resolved", None)
        if previous != record:
            changed = sorted(k for k in set(previous) | set(record) if previous.get(k) != record.get(k))
            raise FileExistsError(f"{folder} holds predictions made with other settings ({', '.join(changed)}); "
                                  f"choose another --output or move that folder away; nothing was written")
        return
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")


def split_done(images: list[InputImage], folder: Path, task: str) -> tuple[list[InputImage], list[InputImage]]:
    """(to do, already done); raises naming the files of an image whose outputs exist only in part, unless a call of
    this command was cut short writing them (its settings file is there and the image's .npy, written last, is not:
    they are written again; claim_output then checks that the settings are the same)."""
    todo, done, partial = [], [], []
    resumed = (folder / SETTINGS_FILE).is_file()
    for img in images:
        paths = output_paths(folder, img.name, task)
        exists = [p.is_file() for p in paths.values()]
        if all(exists):
            done.append(img)
        elif any(exists) and not (resumed and not paths["npy"].is_file()):
            partial.append(img)
        else:
            todo.append(img)
    if partial:
        names = ", ".join(str(p) for img in partial for p in output_paths(folder, img.name, task).values()
                          if p.is_file())
        raise FileExistsError(f"{len(partial)} images have only some of their outputs in {folder} ({names}); "
                              f"delete those files (or choose another --output) and run again; nothing was written")
    return todo, done


def predict_batch(method, images: list[np.ndarray], names: list[str], cfg: PredictConfig, res: int) -> list[np.ndarray]:
    """uint8 [H,W,3] images -> predictions at each image's own size: depth [H,W], normals [H,W,3] (float32)."""
    contract = method.contract
    out: list[Optional[np.ndarray]] = [None] * len(images)
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, rgb in enumerate(images):
        by_size.setdefault(processing_size(*rgb.shape[:2], res, contract.size_multiple, cfg.size_fit), []).append(i)
    for size, idx in by_size.items():
        x = prepare_batch([SimpleNamespace(rgb=images[i]) for i in idx], size, contract.size_multiple)  # [b,3,h',w']
        gens = [torch.Generator().manual_seed(sample_seed(cfg.seed, names[i])) for i in idx]
        check_processing_size(method.name, contract, size, [names[i] for i in idx])
        with torch.inference_mode():
            pred = predict_unpadded(method, x, gens, size).float().cpu().numpy()  # [b,C,h,w]
        for i, p in zip(idx, pred):
            if not np.isfinite(p).all():
                raise ValueError(f"method {method.name} predicted NaN or inf for {names[i]}")
            full = resize_to(p, *images[i].shape[:2])  # [C,H,W]
            if cfg.task == "normals":
                full = full / np.maximum(np.linalg.norm(full, axis=0, keepdims=True), 1e-6)
                out[i] = full.transpose(1, 2, 0).astype(np.float32)
            else:
                out[i] = full[0].astype(np.float32)
    return out


def write_outputs(folder: Path, name: str, pred: np.ndarray, cfg: PredictConfig) -> None:
    """Every output file of one image (each atomic; the .npy last, so an image with its .npy is complete and one
    without it was cut short by a kill: split_done redoes it)."""
    paths = output_paths(folder, name, cfg.task)
    if cfg.task == "depth":
        write_png(paths["png16"], depth_to_uint16(pred))
        write_png(paths["colored"], colorize(normalise01(pred), cfg.colormap))
    else:
        write_png(paths["rgb"], normals_to_rgb8(pred))
    atomic_save_npy(paths["npy"], pred.astype(np.float32))


def predict(cfg: PredictConfig, inputs: list[str], output: Optional[str] = None,
            progress: bool = True) -> dict:
    """Predict every image of ``inputs``; returns {"folder", "written", "skipped", "ignored"} (names / paths)."""
    check_config(cfg)
    folder = Path(output) if output else default_output(cfg)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"--output {folder} is a file; choose a folder for the maps")
    images, ignored = collect_inputs(inputs, folder)
    options = RunOptions(steps=cfg.steps, eta=cfg.eta, device=cfg.device, dtype=cfg.dtype)
    method = build_method(cfg.method, cfg.task, options)
    if method.reads_saved_predictions:
        raise ValueError(f"{cfg.method} reads saved predictions and cannot predict new images; choose a model, "
                         f"e.g. --method dpbridge_tiny")
    todo, done = split_done(images, folder, cfg.task)
    res = cfg.processing_res if cfg.processing_res is not None else method.contract.processing_res
    claim_output(folder, cfg, json.loads(json.dumps({"method": method.describe(), "processing_res": res})))
    batches = [todo[i:i + cfg.batch_size] for i in range(0, len(todo), cfg.batch_size)]
    for batch in tqdm(batches, desc=f"predict {cfg.task}", unit="batch", disable=not progress):
        rgbs = [read_rgb(img.path) for img in batch]
        preds = predict_batch(method, rgbs, [img.name for img in batch], cfg, res)
        for img, pred in zip(batch, preds):
            write_outputs(folder, img.name, pred, cfg)
    return {"folder": folder, "written": [i.name for i in todo], "skipped": [i.name for i in done],
            "ignored": ignored}
