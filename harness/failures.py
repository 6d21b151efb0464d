"""Samples that cannot be scored: stop with a message naming the sample and the fix, or (``--continue-on-error``)
record a failed row and go on.

A sample fails when its files cannot be decoded or read (ValueError / OSError from the adapter), its valid mask
is empty or too small to align, or the method's prediction holds NaN or inf. Errors of the code itself (a model
that raises RuntimeError, a wrong output shape for a whole batch) always stop the run.
A failed row is ``{"id", "group", "failed": true, "reason"}`` in ``rows.jsonl``; it counts as finished (a resumed
run does not retry it unless asked: ``--retry-failed``, harness.run.forget_rows_to_redo), is left out of every
metric and counted in the summary's ``n_failed`` column.
"""
from __future__ import annotations

from typing import Union

from datasets.base import Sample

SAMPLE_FAILURES = (ValueError, OSError)
FIX = ("fix or remove that sample, or pass --continue-on-error (RunConfig.continue_on_error) to record it as a "
       "failed row with its reason and score the rest")


class SampleError(ValueError):
    """One sample could not be scored and the run was asked to stop (the message names it and the fix)."""


def failed_row(sample_id: str, err: BaseException, group: str = "") -> dict:
    return {"id": sample_id, "group": group, "failed": True, "reason": f"{type(err).__name__}: {err}"}


def stop(where: str, sample_id: str, err: BaseException) -> SampleError:
    return SampleError(f"{where}: sample {sample_id} failed ({type(err).__name__}: {err}); {FIX}")


def load_or_fail(dataset, sample_id: str, keep_going: bool) -> Union[Sample, dict]:
    """The sample, or (``keep_going``) its failed row; else a SampleError naming it."""
    try:
        return dataset.load(sample_id)
    except SAMPLE_FAILURES as err:
        if not keep_going:
            raise stop(f"dataset {dataset.name}", sample_id, err) from err
        return failed_row(sample_id, err)


def is_failed(row: dict) -> bool:
    return bool(row.get("failed"))


def nan_stats(task: str) -> dict[str, tuple[float, float, float]]:
    """Summary statistics of a cell whose every sample failed: each metric NaN (value, ci_low, ci_high)."""
    from harness.metrics import DEPTH_METRICS, NORMAL_METRICS

    nan = float("nan")
    return {m: (nan, nan, nan) for m in (DEPTH_METRICS if task == "depth" else NORMAL_METRICS)}
