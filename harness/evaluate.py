"""method x dataset -> cached predictions -> aligned metrics -> per-sample rows (resumable).

Layout of a run folder:
    manifest.json                      resolved config, versions, device, fingerprints, protocol settings
    <method>__<dataset>/rows.jsonl     one line per finished sample (appended and fsynced as computed)
                                       (or its failed row with --continue-on-error: harness.failures)
    <method>__<dataset>/rows.rank<r>-of-<N>.jsonl   the same, per process while launched on N (harness.distributed)
    <method>__<dataset>/pred/<id>.npy  prediction at processing resolution, float16 where that copy is faithful
                                       (harness.evaluate.cache_copy), else float32
    <method>__<dataset>/err/<id>.npy   normals only: angular errors (float32) for the exact pooled median
    <method>__<dataset>/missing.json   saved predictions: ids without a file (--allow-missing), not scored
    summary.csv, summary.md            written at the end from the rows (see harness.summary)
A killed run started again with the same command skips finished rows, rescoring cached predictions without
running the network, and ends with the same summary as an uninterrupted run.

Saved predictions (methods.saved, ``reads_saved_predictions``): the engine asks the dataset where each sample's
file lies (``prediction_relpath``), checks every file not scored yet before scoring anything (one error lists every
bad sample), reads them through the method's ``load`` and caches no copy (rows are still appended, so resume works).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional, get_args

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from datasets.base import Dataset, Sample
from harness.distributed import processes, read_rows, rows_path
from harness.failures import FIX, SAMPLE_FAILURES, failed_row, load_or_fail, stop
from harness.manifest import stable_seed
from harness.memory import out_of_memory_guard
from harness.perturb import Condition
from harness.prefetch import a_core_is_free_for_loading, batches_loaded
from harness.runio import append_jsonl, atomic_save_npy
from harness.scoring import alignment_for, score_depth, score_normals
from methods.base import Method


def sample_seed(seed: int, sample_id: str) -> int:
    """Per-sample seed: the same sample gets the same noise whatever its batch, order or process."""
    return stable_seed(f"{seed}:{sample_id}")


def resolved_processing_res(override: Optional[int], dataset_res: Optional[int], method_res: int) -> int:
    """The long side a method sees on a dataset (0 = native): ``override`` (``--processing-res``) if given, else
    the dataset's protocol value (protocol.md: NYUv2, KITTI, ScanNet native, ETH3D 756, DIODE 640; the normals
    sets native), else the method's own (e.g. 768 for the SD backbones, 64 in the tiny world), else native."""
    if override is not None:
        return override
    return dataset_res if dataset_res is not None else method_res


# How an image meets a network's size multiple (the SD VAE's 8, the tiny one's 4): "pad" resizes it to the
# processing resolution exactly (long side ``res``, the other side floored, as Marigold's resize_to_max_edge),
# pads right and bottom by repeating the edge pixels and crops the prediction back, as Marigold's pipeline does
# (ETH3D's 504 x 756 runs as 504 x 760); "round" resizes each side to the nearest multiple instead (504 x 752: the
# long side is then not the protocol's; Sintel's native 436 x 1024 becomes 432 x 1024). [choice: protocol.md
# gives the resolution, not how it meets the multiple]
SizeFit = Literal["pad", "round"]
SIZE_FITS: tuple[str, ...] = get_args(SizeFit)
DEFAULT_SIZE_FIT: SizeFit = "pad"
SIZE_FIT_BEFORE_OPTION: SizeFit = "round"  # what a run or predict folder written before the option ran with


def check_size_fit(size_fit: str) -> None:
    if size_fit not in SIZE_FITS:
        raise ValueError(f"--size-fit must be one of {', '.join(SIZE_FITS)}, got {size_fit!r}")


def processing_size(height: int, width: int, res: int, multiple: int,
                    size_fit: str = DEFAULT_SIZE_FIT) -> tuple[int, int]:
    """(h, w) an image is resized to: long side ``res`` (0 = native), aspect kept; ``size_fit`` "round": each side
    rounded to a multiple of ``multiple``; "pad": as is (``prepare_batch`` pads it to the multiple)."""
    if size_fit == "pad":
        if res > 0:
            long = max(height, width)
            height, width = max(1, height * res // long), max(1, width * res // long)
        return height, width
    if res > 0:
        scale = res / max(height, width)
        height, width = height * scale, width * scale
    return (max(multiple, int(round(height / multiple)) * multiple), max(multiple, int(round(width / multiple)) * multiple))


def padded_size(size: tuple[int, int], multiple: int) -> tuple[int, int]:
    """(h, w) rounded up to multiples of ``multiple``: the size the network runs at."""
    return size[0] + -size[0] % multiple, size[1] + -size[1] % multiple


def check_inference_settings(steps: Optional[int], batch_size: int, processing_res: Optional[int],
                             eta: float = 0.0, device: str = "cpu") -> None:
    """Refuse, before any work (and before a run folder is claimed), a step count or batch size below 1, a negative
    processing resolution (None = the default of each), an eta outside [0, 1] and a device this torch cannot use."""
    if not 0.0 <= float(eta) <= 1.0:  # also NaN
        raise ValueError(f"--eta must lie in [0, 1] (0 = deterministic, 1 = the Markovian posterior), got {eta}")
    check_device(device)
    if steps is not None and steps < 1:
        raise ValueError(f"--steps must be >= 1 (leave it out for each method's default), got {steps}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if processing_res is not None and processing_res < 0:
        raise ValueError(f"--processing-res must be >= 0 (0 = native; leave it out for each benchmark's protocol "
                         f"value, else the method's own), got {processing_res}")


def check_device(device: str) -> None:
    """A device string torch reads and this machine has (a CPU-only torch has no cuda)."""
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"--device {device!r} is not a torch device ({err}); e.g. cpu, cuda, cuda:1") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: this torch ({torch.__version__}) sees no CUDA device; use --device cpu "
                         f"or a CUDA build of torch on a machine with a GPU")


def check_processing_size(method: str, contract, size: tuple[int, int], names: list[str]) -> None:
    """Refuse a processing size (h, w) whose padded size is below the method's ``min_size``: its network would
    shrink the input below one pixel and return a degenerate map (or, at batch 1, fail inside torch)."""
    size = padded_size(size, contract.size_multiple)  # what the network runs at
    if min(size) < contract.min_size:
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        raise ValueError(f"method {method} cannot process {shown} at {size[0]}x{size[1]}: its network needs at least "
                         f"{contract.min_size} px a side; use a larger --processing-res (the method's own is "
                         f"{contract.processing_res})")


def prepare_batch(samples: list[Sample], size: tuple[int, int], multiple: int = 1) -> torch.Tensor:
    """uint8 [H,W,3] images -> float32 [B,3,h',w'] in [-1,1]: resized to ``size`` (h, w; bilinear, antialias),
    then padded right and bottom to multiples of ``multiple`` by repeating the last row and column (h' >= h)."""
    out = []
    for s in samples:
        x = torch.from_numpy(s.rgb).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        if x.shape[-2:] != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        out.append(x)
    batch = torch.cat(out)
    (h, w), (ph, pw) = size, padded_size(size, multiple)
    return F.pad(batch, (0, pw - w, 0, ph - h), mode="replicate") if (ph, pw) != (h, w) else batch


def predict_unpadded(method: Method, rgb: torch.Tensor, generators, size: tuple[int, int]) -> torch.Tensor:
    """``method.predict`` on a batch from ``prepare_batch``; the prediction [B,C,h,w] cropped back to ``size``."""
    return method.predict(rgb, generators)[..., : size[0], : size[1]]


@dataclass
class Pair:
    """One (method, dataset) cell of a run."""

    method: Method
    dataset: Dataset
    folder: Path
    processing_res: int
    missing: tuple[str, ...] = ()  # saved predictions without a file (allowed, recorded, not scored)
    noise: Optional[Condition] = None  # robustness: the input perturbation (harness.perturb); None = clean
    continue_on_error: bool = False  # a sample that fails becomes a failed row (harness.failures), not a stop
    size_fit: str = DEFAULT_SIZE_FIT  # how the processing size meets the network's multiple (``SizeFit``)

    @property
    def alignment(self) -> str:
        return alignment_for(self.method.contract, self.dataset.spec, self.dataset.name)

    def pred_path(self, sample_id: str) -> Path:
        return self.folder / "pred" / f"{safe_name(sample_id)}.npy"

    def err_path(self, sample_id: str) -> Path:
        return self.folder / "err" / f"{safe_name(sample_id)}.npy"


def safe_name(sample_id: str) -> str:
    return sample_id.replace("/", "__")


def evaluate_pairs(pairs: list[Pair], dataset: Dataset, seed: int, batch_size: int,
                   progress: bool = True, on_batch: Optional[Callable[[], None]] = None,
                   background_loading: Optional[bool] = None) -> None:
    """Run every method of ``pairs`` (all on ``dataset``) over the samples they have not finished; the next batch
    loads in a background thread when ``background_loading``, by default when a core is free for it beside every
    method's device (``harness.prefetch.a_core_is_free_for_loading``)."""
    if background_loading is None:
        background_loading = all(a_core_is_free_for_loading(p.method.options.device) for p in pairs)
    done = {id(p): finished_ids(p) | set(p.missing) for p in pairs}
    ids = dataset.ids()
    batches = processes().my_batches(ids, batch_size, lambda i: any(i not in done[id(p)] for p in pairs))
    bar = tqdm(batches, desc=f"{dataset.name}", unit="batch", disable=not progress, leave=False)
    keep_going = any(p.continue_on_error for p in pairs)
    finished = lambda i: all(i in done[id(p)] for p in pairs)  # noqa: E731  loaded only to be predicted beside
    # the others of its batch: one that fails to load (recorded as failed earlier) does not stop the run
    load = lambda ids: [load_or_fail(dataset, i, keep_going or finished(i)) for i in ids]  # noqa: E731
    for batch_ids, loaded in batches_loaded(bar, load, background_loading):
        samples = [s for s in loaded if isinstance(s, Sample)]
        for pair in pairs:
            failed = [r for r in loaded if isinstance(r, dict) and r["id"] not in done[id(pair)]]
            pending = [s for s in samples if s.id not in done[id(pair)]]
            if pending or failed:
                scored = score_pending(pair, pending, seed, batch=samples) if pending else []
                append_jsonl(rows_path(pair.folder), failed + scored)  # this process' row file
        if on_batch:
            on_batch()


def finished_ids(pair: Pair) -> set[str]:
    return {r["id"] for r in read_rows(pair.folder)}  # every process' rows (harness.distributed)


def score_pending(pair: Pair, samples: list[Sample], seed: int, batch: Optional[list[Sample]] = None) -> list[dict]:
    """Predict (or reuse cached predictions) and score ``samples``; returns one row per sample. ``batch``: the
    loaded batch they belong to, predicted as in a run that never stopped (a resume that scores some of its
    samples again, their predictions gone, gets the floats of that batch, not of a smaller one)."""
    whole = samples if batch is None or pair.method.reads_saved_predictions else batch
    by_id = dict(zip([s.id for s in whole], predictions_for(pair, whole, seed, {s.id for s in samples})))
    rows = []
    for s in samples:
        pred = by_id[s.id]
        group = str(s.meta.get("scene_type", ""))
        try:
            if pair.dataset.spec.task == "depth":
                row = score_depth(pred, s, pair.dataset.spec, pair.alignment)
            else:
                row, errors = score_normals(pred, s)
                atomic_save_npy(pair.err_path(s.id), errors.astype(np.float32))
        except SAMPLE_FAILURES as err:  # empty valid mask, NaN/inf prediction, ...
            if not pair.continue_on_error:
                raise stop(f"{pair.method.name} on {pair.dataset.name}", s.id, err) from err
            rows.append(failed_row(s.id, err, group))
            continue
        rows.append({"id": s.id, "group": group, **row})
    return rows


CACHE_TOLERANCE = 1e-3  # largest float16 rounding error allowed in a cached prediction, as a share of its range


def cache_copy(pred: np.ndarray) -> np.ndarray:
    """The copy of ``pred`` [C,h,w] that is cached and scored (a fresh run and a resumed one score the same copy):
    float16, half the disk, when its rounding stays within CACHE_TOLERANCE of the prediction's range (the maps of
    the diffusion methods, in [-1, 1], round by at most 5e-4); float32 otherwise: values beyond float16's 65504
    (metric depth in millimetres) or a small range on a large offset (disparity 1000.0 .. 1000.5), which float16
    would turn into inf or into steps of 0.5."""
    pred = pred.astype(np.float32, copy=False)
    with np.errstate(over="ignore"):
        half = pred.astype(np.float16)
    if not np.isfinite(half).all():
        return pred  # NaN/inf is reported by the caller; beyond float16's range stays float32
    span = float(pred.max() - pred.min()) or max(float(np.abs(pred).max()), 1.0)
    if float(np.abs(half.astype(np.float32) - pred).max()) <= CACHE_TOLERANCE * span:
        return half
    return pred


def cached_prediction(path: Path, what: str = "cached prediction") -> np.ndarray:
    """A prediction (or per-pixel error map, ``what``) this run cached earlier; an unreadable one (e.g. a disk that
    filled up) names its file and the fix instead of numpy's message."""
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{path}: unreadable {what} ({err}); delete it and run the same command again "
                         f"to recompute it") from None


def predictions_for(pair: Pair, samples: list[Sample], seed: int,
                    scored: Optional[set[str]] = None) -> list[np.ndarray]:
    """Cached [C,h,w] predictions, running the method on each same-size group of ``samples`` (one batch) that has a
    sample without one (then caching those). A NaN or inf prediction stops the run (unless --continue-on-error)
    only for a sample in ``scored`` (default: all), not for one predicted beside them that was recorded already."""
    if pair.method.reads_saved_predictions:  # already on disk: read them, never cache a copy
        return [saved_prediction(pair, s) for s in samples]
    cached = {s.id: cached_prediction(pair.pred_path(s.id)) for s in samples if pair.pred_path(s.id).is_file()}
    by_size: dict[tuple[int, int], list[Sample]] = {}
    contract = pair.method.contract
    for s in samples:
        size = processing_size(*s.rgb.shape[:2], pair.processing_res, contract.size_multiple, pair.size_fit)
        by_size.setdefault(size, []).append(s)
    for size, group in by_size.items():
        if all(s.id in cached for s in group):
            continue
        # a group with some cached members (a kill while its files were written) is predicted whole: on the CPU
        # a network's output depends on the batch it ran in, so a smaller batch would not give the same floats
        inputs = group if pair.noise is None else [pair.noise.apply_sample(s, seed) for s in group]
        rgb = prepare_batch(inputs, size, contract.size_multiple)
        gens = [torch.Generator().manual_seed(sample_seed(seed, s.id)) for s in group]
        guard = out_of_memory_guard(pair.method.name, pair.method.options.device, len(group), size, pair.folder)
        check_processing_size(pair.method.name, contract, size, [s.id for s in group])
        with torch.inference_mode(), guard:
            out = predict_unpadded(pair.method, rgb, gens, size).float().cpu().numpy()  # [B,C,h,w]
        expected = 3 if contract.kind == "normals" else 1
        if out.ndim != 4 or out.shape[1] != expected:
            raise ValueError(f"method {pair.method.name} returned shape {out.shape}; expected [B,{expected},h,w]")
        for s, pred in zip(group, out):
            if s.id in cached:  # kept as first written (the same batch gave the same floats)
                continue
            cached[s.id] = cache_copy(pred)
            if np.isfinite(pred).all():
                atomic_save_npy(pair.pred_path(s.id), cached[s.id])
            elif not pair.continue_on_error and (scored is None or s.id in scored):
                raise ValueError(f"method {pair.method.name} predicted NaN or inf for sample {s.id}; {FIX}")
            # else never cached, and scoring records it as failed
    return [cached[s.id].astype(np.float32) for s in samples]


LIST_LIMIT = 20  # sample ids an error lists before "... and N more"
MAX_ASPECT_CHANGE = 1.5  # a saved prediction whose aspect ratio differs more from the GT's is refused


class SavedPredictionError(ValueError):
    """Saved predictions that cannot be scored; the message lists every offending sample and the fix."""


def listing(items: list[str]) -> str:
    more = f"\n  ... and {len(items) - LIST_LIMIT} more" if len(items) > LIST_LIMIT else ""
    return "\n  " + "\n  ".join(items[:LIST_LIMIT]) + more


def check_saved_predictions(pair: Pair, allow_missing: bool) -> tuple[str, ...]:
    """Read every saved prediction of ``pair`` not scored yet, before anything is scored; returns the missing ids.

    One SavedPredictionError lists every unusable file (unreadable, misshapen, NaN or inf) and, unless
    ``allow_missing``, every missing one (the first LIST_LIMIT ids and the count). With ``allow_missing`` the
    missing ids are returned (recorded, not scored), unless no file at all exists (a wrong folder or layout).
    """
    ids, done, folder = pair.dataset.ids(), finished_ids(pair), pair.method.folder
    missing, bad = [], []
    for i in ids:
        if i in done:
            continue
        relpath = pair.dataset.prediction_relpath(i)
        try:
            pair.method.load(relpath)
        except FileNotFoundError:
            missing.append(i)
        except ValueError as err:
            bad.append(f"{i} ({relpath}): {err}")
    problems = []
    if bad:
        problems.append(f"{len(bad)} unusable: save depth or disparity as [H,W] (or [1,H,W], [H,W,1]) and normals "
                        f"as [3,H,W] or [H,W,3], finite numbers, with np.save (a folder holds one task: choose "
                        f"--datasets of that task, or say predictions[depth|disparity|normals]:DIR):" + listing(bad))
    nothing = bool(ids) and len(missing) == len(ids)
    if missing and (not allow_missing or nothing):
        example = folder / pair.dataset.prediction_relpath(missing[0])
        fix = ("is the folder the root of the Marigold layout?" if nothing else
               "write them, or pass --allow-missing (RunConfig.allow_missing) to score the rest")
        problems.append(f"{len(missing)} missing (expected e.g. {example}; {fix}):" + listing(missing))
    if problems:
        raise SavedPredictionError(f"saved predictions in {folder} for {pair.dataset.name} ({len(ids)} samples) "
                                   f"cannot be scored; nothing was scored.\n" + "\n".join(problems))
    return tuple(missing)


def saved_prediction(pair: Pair, sample: Sample) -> np.ndarray:
    """[C,h,w] float32 read from the prediction folder; refuses another aspect ratio than the GT's (transposed?).
    A prediction of the whole frame of a sample whose GT is a crop of it (KITTI's KB crop: meta "frame_crop") is
    cropped the same way, not resized onto the crop."""
    relpath = pair.dataset.prediction_relpath(sample.id)
    pred = pair.method.load(relpath)
    frame = sample.meta.get("frame_crop")
    if frame and list(pred.shape[1:]) == list(frame["shape"]):
        top, left, height, width = frame["box"]
        pred = pred[:, top:top + height, left:left + width]
    (h, w), (gh, gw) = pred.shape[1:], sample.valid.shape
    if abs(math.log((h * gw) / (w * gh))) > math.log(MAX_ASPECT_CHANGE):
        raise SavedPredictionError(f"sample {sample.id}: the saved prediction {pair.method.folder / relpath} is "
                                   f"{h}x{w} but the GT {gh}x{gw} (transposed?); save it at GT or processing "
                                   f"resolution")
    return pred
