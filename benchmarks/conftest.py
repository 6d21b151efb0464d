"""Benchmarks (pytest-benchmark): collected only when asked, `python -m pytest benchmarks --benchmark-enable`.

The repository's testpaths is tests/, so the normal test command never collects these. They run on the CPU with
the shipped tiny checkpoints; set OMP_NUM_THREADS to fix the thread count (the numbers depend on it).
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="session")
def depth_method():
    from harness.registry import build_method
    from methods.base import RunOptions

    return build_method("dpbridge_tiny", "depth", RunOptions(steps=10))


@pytest.fixture(scope="session")
def tiny_input():
    """One tiny-world image at the method's processing size: float32 [1,3,64,64] in [-1,1]."""
    from datasets.synthetic import SyntheticDepth
    from harness.evaluate import prepare_batch

    sample = SyntheticDepth().load(SyntheticDepth().ids()[0])
    return prepare_batch([sample], (64, 64)), sample


@pytest.fixture(autouse=True, scope="session")
def _record_threads():
    print(f"\ntorch threads: {torch.get_num_threads()} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})")
