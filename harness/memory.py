"""Out-of-memory on a batch: stop with an error that says so and names a batch size that may fit.

In a run, everything finished before the failing batch (cached predictions, appended rows) stays on disk, and the
same command with a smaller ``--batch-size`` and ``--output`` the run folder continues where it stopped (a run
folder accepts another batch size: harness.run.same_but_batch).
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import torch


class BatchTooLargeError(RuntimeError):
    """A batch did not fit in memory (CUDA or host)."""


def is_out_of_memory(err: BaseException) -> bool:
    if isinstance(err, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


@contextmanager
def out_of_memory_guard(method: str, device: str, batch: int, size: tuple[int, int],
                        cell_folder: Optional[Path] = None):
    """Turn an out-of-memory error inside the block into a BatchTooLargeError naming the fix; ``cell_folder``:
    the run cell whose finished work is kept (None: a latency study, whose settings include the batch size)."""
    try:
        yield
    except BaseException as err:
        if not is_out_of_memory(err):
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if batch == 1:
            advice = ("even one image does not fit: use a smaller processing resolution, --dtype bfloat16, or "
                      "another device")
        elif cell_folder is None:  # a latency study: its finished cells stay, a new study takes the smaller batch
            advice = (f"rerun with --batch-size {max(1, batch // 2)} as a new study (leave --output out or choose "
                      f"another: cells timed at batch {batch} are not mixed with smaller batches)")
        else:
            advice = (f"rerun the same command with --batch-size {max(1, batch // 2)} --output {cell_folder.parent} "
                      f"to continue there; finished samples and cached predictions are kept in {cell_folder}")
        raise BatchTooLargeError(f"method {method} ran out of memory on a batch of {batch} image(s) of "
                                 f"{size[0]}x{size[1]} on {device}: {advice}.") from err

