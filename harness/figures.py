"""`python -m harness figures RUN [RUN...]`: qualitative grids (input | GT | each method) from cached predictions.

Never runs a model: each method's prediction is read from the run folder's cache (``<cell>/pred/<id>.npy``,
written by ``harness.evaluate``) or, for saved predictions (``predictions:DIR``), from that folder; the input and
ground truth come from the dataset as the run's manifest configured it. Depth predictions are resized to the GT
and aligned exactly as scored (the alignment recorded in the manifest), so every depth panel of a sample shares
the GT's colour scale; under each prediction its per-pixel error (AbsRel |p - g| / g, or the angular error in
degrees) on the valid pixels.

Selection (deterministic): ``--ids`` in the order given, then ``--random N`` drawn with ``--seed`` from the
remaining ids shared by every run, then the K best and K worst samples by the rank method's per-sample AbsRel
(depth) or mean angular error (normals) from its rows; without any of these, ``DEFAULT_RANDOM`` random samples.
One PNG per dataset shared by the runs (or per ``--datasets``): ``<output>/<dataset>_<size>.png``, never
overwritten without ``--overwrite`` (harness.figure_layout draws it).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional

import numpy as np

from harness.compare import same_images
from harness.evaluate import safe_name
from harness.metrics import angular_error_deg
from harness.pictures import ERROR_COLORMAP, colorize, normals_to_rgb8
from harness.registry import build_method, method_class, parse_method_spec
from harness.runio import read_json_object, read_jsonl
from harness.scoring import aligned_depth, resize_to

DEFAULT_RANDOM = 4
RANK_METRIC = {"depth": "abs_rel", "normals": "mean"}  # lower is better for both
ERROR_RANGE = {"depth": 0.5, "normals": 60.0}  # colour scale top of the error maps: AbsRel, degrees


@dataclass(frozen=True)
class FigureConfig:
    ids: tuple[str, ...] = ()
    random: int = 0
    seed: int = 0
    best_worst: int = 0
    size: str = "column"  # "column" (3.3 in at 300 dpi) or "slide" (1920x1080)
    rank_method: Optional[str] = None  # method name or cell whose rows rank best/worst; None = first one
    overwrite: bool = False
    datasets: tuple[str, ...] = ()  # only these datasets of the runs (empty = every dataset they share)


class NoCachedPredictions(FileNotFoundError):
    """A run cell without the cached prediction of a sample (the message names the folder and the fix)."""


@dataclass
class Cell:
    """One method's column: where its predictions are and how they were scored."""

    run: Path
    folder: Path  # <run>/<cell>__<dataset>
    label: str
    alignment: str
    saved: object = None  # a methods.saved instance (reads files) or None (the run's cache)
    _rows: Optional[dict] = None

    def rows(self) -> dict[str, dict]:
        if self._rows is None:
            self._rows = {r["id"]: r for r in read_jsonl(self.folder / "rows.jsonl")}
        return self._rows

    def prediction(self, dataset, sample_id: str) -> np.ndarray:
        """float32 [C,h,w] as cached by the run (never computed here)."""
        if self.saved is not None:
            return self.saved.load(dataset.prediction_relpath(sample_id))
        path = self.folder / "pred" / f"{safe_name(sample_id)}.npy"
        if not path.is_file():
            raise NoCachedPredictions(
                f"{self.folder} has no cached prediction for {sample_id} ({path} is missing), so no figure can show "
                f"it. Cached predictions are written by `python -m harness run`: the run's command run again predicts "
                f"the missing ones of the samples it scored (or pick samples of this run with --ids)")
        try:
            pred = np.load(path, allow_pickle=False).astype(np.float32)
        except (ValueError, OSError, EOFError) as err:
            raise ValueError(f"{path}: unreadable cached prediction ({err}); delete it and run the run's command "
                             f"again to recompute it") from None
        channels = 3 if dataset.spec.task == "normals" else 1
        if pred.ndim != 3 or pred.shape[0] != channels:
            raise ValueError(f"{path}: cached prediction of shape {list(pred.shape)}, expected [{channels},h,w]; "
                             f"delete it and run the run's command again to recompute it")
        return pred


def read_manifest(run: Path) -> dict:
    path = Path(run) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run} is not a run folder ({path} is missing); give folders written by "
                                f"`python -m harness run`")
    return read_json_object(path, "run its command again with a new --output")


def run_datasets(manifest: dict) -> dict:
    """name -> dataset instance, rebuilt from the run's config (lazy: samples load on demand)."""
    from harness.run import RunConfig, build_dataset

    known = {f.name for f in fields(RunConfig)}
    cfg = RunConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in manifest["config"].items()
                       if k in known})
    built = [build_dataset(text, cfg) for text in cfg.datasets]
    return {ds.name: ds for ds in built}


def run_cells(run: Path, manifest: dict, dataset: str) -> list[Cell]:
    """The run's method columns on ``dataset``, in the order of its --methods."""
    cells = []
    for text in manifest["config"]["methods"]:
        folder = Path(run) / f"{parse_method_spec(text).cell}__{dataset}"
        info = manifest["methods"].get(folder.name)
        if info is None:  # the method does not serve this dataset's task
            continue
        saved = None
        if method_class(text).reads_saved_predictions:  # a file reader, not a model
            from methods.base import RunOptions

            saved = build_method(text, manifest["datasets"][dataset]["protocol"]["task"], RunOptions())
        label = info.get("method", text) + ("" if info.get("variant", "default") == "default"
                                            else f" [{info['variant'].split(':')[0]}]")
        cells.append(Cell(Path(run), folder, label, info.get("alignment", "none"), saved))
    return cells


def select_ids(all_ids: list[str], rows: dict[str, dict], task: str, cfg: FigureConfig) -> list[tuple[str, str]]:
    """(id, why) in display order; ``rows`` are the rank method's per-sample rows (failed rows never ranked)."""
    chosen: list[tuple[str, str]] = []
    known = set(all_ids)
    unknown = [i for i in cfg.ids if i not in known]
    if unknown:
        raise ValueError(f"--ids {', '.join(unknown)} not in every run (first ids: {', '.join(all_ids[:3])})")
    chosen += [(i, "") for i in cfg.ids]
    n_random = cfg.random or (DEFAULT_RANDOM if not cfg.ids and not cfg.best_worst else 0)
    rest = [i for i in all_ids if i not in set(cfg.ids)]
    if n_random:
        rng = np.random.default_rng(cfg.seed)
        picks = rng.choice(len(rest), size=min(n_random, len(rest)), replace=False)
        chosen += [(rest[int(k)], "random") for k in picks]
    if cfg.best_worst:
        metric = RANK_METRIC[task]
        scored = sorted((r[metric], i) for i, r in rows.items() if i in known and not r.get("failed"))
        chosen += [(i, f"best {n + 1}") for n, (_, i) in enumerate(scored[:cfg.best_worst])]
        chosen += [(i, f"worst {n + 1}") for n, (_, i) in enumerate(scored[::-1][:cfg.best_worst])]
    seen, out = set(), []
    for i, why in chosen:
        if i not in seen:
            seen.add(i)
            out.append((i, why))
    return out


def depth_panels(sample, spec, preds: list[Optional[np.ndarray]], alignments: list[str]):
    """GT and aligned predictions coloured on the GT's range; error maps (AbsRel) on the valid pixels."""
    from harness.pictures import DEPTH_COLORMAP, normalise01

    valid, gt = sample.valid, sample.depth
    lo, hi = (float(gt[valid].min()), float(gt[valid].max())) if valid.any() else (0.0, 1.0)
    scale = lambda d: np.clip((d - lo) / max(hi - lo, 1e-12), 0, 1)  # noqa: E731
    gt_img = colorize(scale(gt), DEPTH_COLORMAP, valid)
    maps, errors = [], []
    for pred, alignment in zip(preds, alignments):
        if pred is None:
            maps.append(None), errors.append(None)
            continue
        full = resize_to(pred, *gt.shape)[0]
        if valid.sum() >= 2:
            aligned, _ = aligned_depth(pred, sample, spec, alignment)  # as scored (ETH3D's subsampled fit too)
            maps.append(colorize(scale(aligned), DEPTH_COLORMAP))
            err = np.where(valid, np.abs(aligned - gt) / np.where(valid, gt, 1.0), 0.0)
        else:  # nothing to align to: show the raw prediction's own range
            maps.append(colorize(normalise01(full), DEPTH_COLORMAP))
            err = np.zeros_like(gt)
        errors.append(colorize(err / ERROR_RANGE["depth"], ERROR_COLORMAP, valid))
    return gt_img, maps, errors


def normals_panels(sample, preds: list[Optional[np.ndarray]]):
    """GT and predicted normals as RGB; error maps (angular error, degrees) on the valid pixels."""
    valid = sample.valid
    gt_img = normals_to_rgb8(sample.normals)
    gt_img[~valid] = 128
    maps, errors = [], []
    for pred in preds:
        if pred is None:
            maps.append(None), errors.append(None)
            continue
        full = resize_to(pred, *valid.shape).transpose(1, 2, 0)  # [H,W,3]
        full = full / np.maximum(np.linalg.norm(full, axis=-1, keepdims=True), 1e-6)
        maps.append(normals_to_rgb8(full))
        err = np.zeros(valid.shape)
        if valid.any():
            err[valid] = angular_error_deg(full, sample.normals, valid, sample=sample.id)
        errors.append(colorize(err / ERROR_RANGE["normals"], ERROR_COLORMAP, valid))
    return gt_img, maps, errors


def make_figures(runs: list[str], cfg: FigureConfig, output: Optional[str] = None) -> list[Path]:
    """One PNG per dataset shared by the runs; returns their paths."""
    from harness.figure_layout import Grid, draw_grid

    runs = [Path(r) for r in runs]
    manifests = [read_manifest(r) for r in runs]
    shared = [d for d in manifests[0]["datasets"] if all(d in m["datasets"] for m in manifests[1:])]
    if not shared:
        raise ValueError(f"the runs {', '.join(map(str, runs))} share no dataset")
    unknown = [d for d in cfg.datasets if d not in shared]
    if unknown:
        raise ValueError(f"--datasets {', '.join(unknown)}: not in every run; the runs share {', '.join(shared)}")
    shared = [d for d in shared if d in cfg.datasets] if cfg.datasets else shared
    folder = Path(output) if output else runs[0] / "figures"
    paths = {name: folder / f"{name}_{cfg.size}.png" for name in shared}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not cfg.overwrite:  # every target checked before any is drawn
        raise FileExistsError(f"{', '.join(existing)} exist(s); pass --overwrite to replace or choose another --output")
    for name in shared:
        for r, m in zip(runs[1:], manifests[1:]):  # the same ids must be the same images
            same_images(name, manifests[0], m, runs[0], r)
    written = []
    for name in shared:
        path = paths[name]
        datasets = [run_datasets(m)[name] for m in manifests]
        cells = [c for r, m in zip(runs, manifests) for c in run_cells(r, m, name)]
        label_cells(cells)
        check_cache(cells, name)
        ds = datasets[0]
        ids = [i for i in ds.ids() if all(i in set(d.ids()) for d in datasets[1:])]
        rank = rank_cell(cells, cfg.rank_method)
        chosen = select_ids(ids, rank.rows(), ds.spec.task, cfg)
        grid = Grid(task=ds.spec.task, columns=["input", "GT"] + [c.label for c in cells],
                    rank_label=f"{rank.label}: {RANK_METRIC[ds.spec.task]}")
        for sample_id, why in chosen:
            add_sample(grid, ds, cells, sample_id, why)
        draw_grid(grid, cfg.size, path)
        written.append(path)
    return written


def label_cells(cells: list[Cell]) -> None:
    """Method labels, made unique across runs by the run folder's name."""
    counts: dict[str, int] = {}
    for c in cells:
        counts[c.label] = counts.get(c.label, 0) + 1
    for c in cells:
        if counts[c.label] > 1:
            c.label = f"{c.label} ({c.run.name})"


def check_cache(cells: list[Cell], dataset: str) -> None:
    """Refuse a cell that holds no cached prediction at all (before any drawing)."""
    for c in cells:
        if c.saved is None and not any((c.folder / "pred").glob("*.npy")):
            raise NoCachedPredictions(
                f"{c.folder} holds no cached predictions for {dataset}, so `figures` (which never runs a model) has "
                f"nothing to show. Run `python -m harness run` for this method and dataset (its predictions are "
                f"cached in <run>/<method>__<dataset>/pred/) and pass that run folder")


def rank_cell(cells: list[Cell], wanted: Optional[str]) -> Cell:
    if wanted is None:
        return cells[0]
    for c in cells:
        if wanted in (c.label, c.folder.name.split("__")[0]):
            return c
    raise ValueError(f"--rank-method {wanted!r} is none of {', '.join(c.label for c in cells)}")


def add_sample(grid, ds, cells: list[Cell], sample_id: str, why: str) -> None:
    sample = ds.load(sample_id)
    preds, notes = [], []
    for c in cells:
        row = c.rows().get(sample_id, {})
        if row.get("failed"):
            preds.append(None), notes.append("failed")
            continue
        preds.append(c.prediction(ds, sample_id))
        value = row.get(RANK_METRIC[ds.spec.task])
        notes.append("" if value is None else (f"{value:.3f}" if ds.spec.task == "depth" else f"{value:.1f}°"))
    if ds.spec.task == "depth":
        gt, maps, errors = depth_panels(sample, ds.spec, preds, [c.alignment for c in cells])
    else:
        gt, maps, errors = normals_panels(sample, preds)
    grid.add(sample_id + (f" ({why})" if why else ""), sample.rgb, gt, maps, errors, notes)
