"""method x dataset -> cached predictions -> aligned metrics -> per-sample rows (resumable).

Layout of a run folder:
    manifest.json                      resolved config, versions, device, fingerprints, protocol settings
    <method>__<dataset>/rows.jsonl     one line per finished sample (appended and fsynced as computed)
    <method>__<dataset>/pred/<id>.npy  prediction at processing resolution, float16
    <method>__<dataset>/err/<id>.npy   normals only: angular errors (float32) for the exact pooled median
    summary.csv, summary.md            written at the end from the rows (see harness.summary)
A killed run started again with the same command skips finished rows, rescoring cached predictions without
running the network, and ends with the same summary as an uninterrupted run.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from datasets.base import Dataset, Sample
from harness.runio import append_jsonl, atomic_save_npy, read_jsonl
from harness.scoring import alignment_for, score_depth, score_normals
from methods.base import Method


def sample_seed(seed: int, sample_id: str) -> int:
    """Per-sample seed: the same sample gets the same noise whatever its batch, order or process."""
    digest = hashlib.sha256(f"{seed}:{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def processing_size(height: int, width: int, res: int, multiple: int) -> tuple[int, int]:
    """(h, w) with long side ``res`` (0 = native), aspect kept, each rounded to a multiple of ``multiple``."""
    if res > 0:
        scale = res / max(height, width)
        height, width = height * scale, width * scale
    return (max(multiple, int(round(height / multiple)) * multiple), max(multiple, int(round(width / multiple)) * multiple))


def prepare_batch(samples: list[Sample], size: tuple[int, int]) -> torch.Tensor:
    """uint8 [H,W,3] images -> float32 [B,3,h,w] in [-1,1] at processing size (bilinear, antialias)."""
    out = []
    for s in samples:
        x = torch.from_numpy(s.rgb).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        if x.shape[-2:] != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        out.append(x)
    return torch.cat(out)


@dataclass
class Pair:
    """One (method, dataset) cell of a run."""

    method: Method
    dataset: Dataset
    folder: Path
    processing_res: int

    @property
    def alignment(self) -> str:
        return alignment_for(self.method.contract, self.dataset.spec)

    def pred_path(self, sample_id: str) -> Path:
        return self.folder / "pred" / f"{safe_name(sample_id)}.npy"

    def err_path(self, sample_id: str) -> Path:
        return self.folder / "err" / f"{safe_name(sample_id)}.npy"


def safe_name(sample_id: str) -> str:
    return sample_id.replace("/", "__")


def evaluate_pairs(pairs: list[Pair], dataset: Dataset, seed: int, batch_size: int,
                   progress: bool = True, on_batch: Optional[Callable[[], None]] = None) -> None:
    """Run every method of ``pairs`` (all on ``dataset``) over the samples they have not finished."""
    done = {id(p): {r["id"] for r in read_jsonl(p.folder / "rows.jsonl")} for p in pairs}
    ids = dataset.ids()
    todo = [i for i in ids if any(i not in done[id(p)] for p in pairs)]
    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    bar = tqdm(batches, desc=f"{dataset.name}", unit="batch", disable=not progress, leave=False)
    for batch_ids in bar:
        samples = [dataset.load(i) for i in batch_ids]
        for pair in pairs:
            pending = [s for s in samples if s.id not in done[id(pair)]]
            if pending:
                append_jsonl(pair.folder / "rows.jsonl", score_pending(pair, pending, seed))
        if on_batch:
            on_batch()


def score_pending(pair: Pair, samples: list[Sample], seed: int) -> list[dict]:
    """Predict (or reuse cached predictions) and score; returns one row per sample."""
    preds = predictions_for(pair, samples, seed)
    rows = []
    for s, pred in zip(samples, preds):
        if pair.dataset.spec.task == "depth":
            row = score_depth(pred, s, pair.dataset.spec, pair.alignment)
        else:
            row, errors = score_normals(pred, s)
            atomic_save_npy(pair.err_path(s.id), errors.astype(np.float32))
        rows.append({"id": s.id, "group": str(s.meta.get("scene_type", "")), **row})
    return rows


def predictions_for(pair: Pair, samples: list[Sample], seed: int) -> list[np.ndarray]:
    """Cached [C,h,w] predictions, running the method only on samples without one (then caching them)."""
    cached = {s.id: np.load(pair.pred_path(s.id)) for s in samples if pair.pred_path(s.id).is_file()}
    missing = [s for s in samples if s.id not in cached]
    by_size: dict[tuple[int, int], list[Sample]] = {}
    contract = pair.method.contract
    for s in missing:
        size = processing_size(*s.rgb.shape[:2], pair.processing_res, contract.size_multiple)
        by_size.setdefault(size, []).append(s)
    for size, group in by_size.items():
        rgb = prepare_batch(group, size)
        gens = [torch.Generator().manual_seed(sample_seed(seed, s.id)) for s in group]
        with torch.inference_mode():
            out = pair.method.predict(rgb, gens).float().cpu().numpy()  # [B,C,h,w]
        expected = 3 if contract.kind == "normals" else 1
        if out.ndim != 4 or out.shape[1] != expected:
            raise ValueError(f"method {pair.method.name} returned shape {out.shape}; expected [B,{expected},h,w]")
        for s, pred in zip(group, out):
            if not np.isfinite(pred).all():
                raise ValueError(f"method {pair.method.name} predicted NaN or inf for sample {s.id}")
            cached[s.id] = pred.astype(np.float16)
            atomic_save_npy(pair.pred_path(s.id), cached[s.id])
    return [cached[s.id].astype(np.float32) for s in samples]
