"""Shared fixtures. Tests run offline (HF_HUB_OFFLINE=1), on the CPU, with a private cache folder."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _cpu_threads():
    if "OMP_NUM_THREADS" not in os.environ:  # an explicit setting wins (e.g. beside a training job)
        torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tiny_backbone_dir(tmp_path_factory):
    """A randomly initialised tiny backbone saved in the diffusers layout (no training, no download)."""
    from methods.backbones import new_tiny_backbone, save_backbone

    folder = tmp_path_factory.mktemp("backbone")
    backbone = new_tiny_backbone(seed=0)
    backbone.scaling_factor = 1.0
    save_backbone(backbone, folder, {"command": "test fixture"})
    return folder


@pytest.fixture()
def private_cache(tmp_path, monkeypatch):
    """Point the training-pool cache at a temporary folder."""
    import harness.pool as pool

    monkeypatch.setattr(pool, "CACHE_DIR", tmp_path / "cache")
    return tmp_path / "cache"
