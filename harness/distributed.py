"""Several processes on one machine or several (`accelerate launch`, `torchrun`): who this process is, waiting for
the others, which samples are its own, and the per-process row files of a run folder.

The launcher starts N copies of one command and tells each its place through the environment (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT: torchrun's env:// rendezvous, which `accelerate launch` uses underneath).
Evaluation exchanges no tensors, so the processes join a gloo group only to wait for each other; without
WORLD_SIZE (a plain `python -m harness ...`) nothing is joined and every function here is the single-process one.

Sharding: the dataset's id list is cut into the batches one process would make on a fresh run, and batch k goes to
process k mod N. Every sample is therefore predicted in the same batch, with the same seed, as in a single-process
run (the numbers are the same), and which process owns a sample depends only on N, never on what is finished, so
processes that read the folder at different moments never disagree.

Row files: process r of N appends its rows to ``rows.rank<r>-of-<N>.jsonl`` in each cell folder (one process
alone: ``rows.jsonl``, as always). Finished samples are read from all of them, so a run resumes whichever process
died and with any number of processes. At the end the first process folds them into ``rows.jsonl`` (the same file a
single-process run writes) and removes them. The run folder must be one folder every machine sees (shared disk).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable, Optional

from harness.runio import atomic_write_text, read_json_object, read_jsonl

ROWS = "rows.jsonl"
SHARD_ROWS = re.compile(r"rows\.rank(\d+)-of-(\d+)\.jsonl")
# How long a process waits at a barrier for the slowest one (which may be recomputing the shard of a process that
# died): long, since a wait that gives up loses nothing but stops the run.
BARRIER_TIMEOUT = timedelta(days=7)


@dataclass(frozen=True)
class Processes:
    """This process' place among the launched ones (rank 0 of 1 when not launched)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # index on this machine: picks the GPU
    group: object = None  # torch.distributed group the barriers use (None: the default one)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier(group=self.group)

    def my_batches(self, ids: list[str], batch_size: int, unfinished: Callable[[str], bool]) -> list[list[str]]:
        """This process' batches that hold an unfinished id: the full list cut into batches, batch k to process
        k mod N, each whole (its finished ids too). A resumed run so predicts the same batches as one that never
        stopped (on the CPU a network's output depends on the batch it ran in); the caller skips finished ids."""
        mine = chunks(list(ids), batch_size)[self.rank::self.world_size]
        return [batch for batch in mine if any(unfinished(i) for i in batch)]

    def device(self, device: str) -> str:
        """``cuda`` -> this process' own GPU (``cuda:<local rank>``) when several were launched; else unchanged."""
        if device != "cuda" or self.world_size == 1:
            return device
        import torch

        if torch.cuda.is_available() and self.local_rank >= torch.cuda.device_count():
            raise ValueError(f"process {self.rank} is number {self.local_rank} on its machine, which has "
                             f"{torch.cuda.device_count()} GPUs: launch at most one process per GPU")
        return f"cuda:{self.local_rank}"


def chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


_CURRENT: Optional[Processes] = None


def processes() -> Processes:
    """This process' place, joining the launcher's group on the first call (launched: WORLD_SIZE > 1)."""
    global _CURRENT
    if _CURRENT is None:
        _CURRENT = join()
    return _CURRENT


def join() -> Processes:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Processes()
    import torch.distributed as dist

    if dist.is_initialized():  # e.g. an Accelerator's group (NCCL on GPUs): barriers go over a gloo group
        group = dist.new_group(backend="gloo", timeout=BARRIER_TIMEOUT)
    else:
        dist.init_process_group(backend="gloo", timeout=BARRIER_TIMEOUT)
        group = None
    return Processes(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), group)


# ---- row files of a cell folder
def rows_path(folder: Path) -> Path:
    """The row file this process appends to."""
    p = processes()
    return folder / (ROWS if p.world_size == 1 else f"rows.rank{p.rank}-of-{p.world_size}.jsonl")


def shard_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if SHARD_ROWS.fullmatch(p.name))


def read_rows(folder: Path) -> list[dict]:
    """Rows of ``rows.jsonl`` and of every process' file; an id's first row wins (a merge killed before it removed
    the process files leaves each of their rows twice)."""
    seen, out = set(), []
    for path in [folder / ROWS, *shard_files(folder)]:
        for row in read_jsonl(path):
            if row["id"] not in seen:
                seen.add(row["id"])
                out.append(row)
    return out


def drop_failed_rows(folder: Path) -> int:
    """Rewrite every row file of ``folder`` without its failed rows (harness.failures), so a resumed run loads,
    predicts and scores those samples again; returns how many rows were dropped."""
    return drop_rows(folder, lambda row: bool(row.get("failed")))


def drop_rows(folder: Path, drop: Callable[[dict], bool]) -> int:
    """Rewrite every row file of ``folder`` without the rows ``drop`` accepts (a resumed run scores those samples
    again); returns how many rows were dropped."""
    dropped = 0
    for path in [folder / ROWS, *shard_files(folder)]:
        rows = read_jsonl(path)
        kept = [r for r in rows if not drop(r)]
        if len(kept) < len(rows):
            atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
            dropped += len(rows) - len(kept)
    return dropped


def merge_rows(folder: Path, ids: list[str]) -> dict[str, int]:
    """Fold the process row files into ``rows.jsonl``, every row in ``ids`` order (so the file is the one a single
    process writes), then remove them. Returns {"<r>-of-<N>": rows taken from that process' file}."""
    files = shard_files(folder)
    if not files:
        return {}
    rows = {r["id"]: r for r in read_jsonl(folder / ROWS)}
    taken: dict[str, int] = {}
    for path in files:
        shard = "-of-".join(SHARD_ROWS.fullmatch(path.name).groups())
        for row in read_jsonl(path):
            if row["id"] not in rows:
                rows[row["id"]] = row
                taken[shard] = taken.get(shard, 0) + 1
    order = {i: n for n, i in enumerate(ids)}
    ordered = sorted(rows, key=lambda i: (order.get(i, len(order)), i))
    atomic_write_text(folder / ROWS, "".join(json.dumps(rows[i], sort_keys=True) + "\n" for i in ordered))
    for path in files:
        path.unlink()
    return taken


def gather(run_folder: Path, cells: list[tuple[Path, list[str]]]) -> bool:
    """After evaluating: wait for every process; the first folds each cell's row files (``cells``: (cell folder,
    dataset ids)) into rows.jsonl and adds the rows each process gave to the manifest (``rows_by_process``).
    True on the process that goes on to summarise (the first), False on the others."""
    p = processes()
    p.barrier()
    if not p.is_main:
        return False
    taken: dict[str, int] = {}
    for folder, ids in cells:
        for shard, n in merge_rows(folder, ids).items():
            taken[shard] = taken.get(shard, 0) + n
    path = run_folder / "manifest.json"
    if taken and path.is_file():
        manifest = read_json_object(path, "run the command again with a new --output")
        counts = manifest.setdefault("rows_by_process", {})
        for shard, n in taken.items():
            counts[shard] = counts.get(shard, 0) + n
        atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return True


def require_shared(path: Path) -> None:
    """On a process other than the first: the file the first wrote must be visible here."""
    if not path.is_file():
        raise FileNotFoundError(f"process {processes().rank} does not see {path}, which the first process wrote: with "
                                f"several machines the run folder (--output) must be on a disk all of them share")

