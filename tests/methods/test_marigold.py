"""`marigold` through diffusers' Marigold pipelines, on tiny random folders written by diffusers' save_pretrained."""
import json

import numpy as np
import pytest
import torch

from harness.cli import main
from harness.registry import build_method
from methods.base import RunOptions
from sd_fixtures import write_tiny_marigold


@pytest.fixture(scope="session")
def marigold_depth_dir(tmp_path_factory):
    return write_tiny_marigold(tmp_path_factory.mktemp("marigold") / "depth", "depth")


@pytest.fixture(scope="session")
def marigold_normals_dir(tmp_path_factory):
    return write_tiny_marigold(tmp_path_factory.mktemp("marigold") / "normals", "normals")


def _gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_depth_prediction_is_per_sample_seeded_and_recorded(marigold_depth_dir):
    method = build_method("marigold", "depth", RunOptions(checkpoint=str(marigold_depth_dir), steps=2,
                                                          ensemble_size=2))
    rgb = torch.rand(2, 3, 32, 48) * 2 - 1
    both = method.predict(rgb, _gens([1, 2]))
    assert both.shape == (2, 1, 32, 48) and torch.isfinite(both).all()
    assert torch.allclose(method.predict(rgb[1:], _gens([2])), both[1:], atol=1e-5)  # not batch-dependent
    assert not torch.allclose(method.predict(rgb[1:], _gens([3])), both[1:])
    described = method.describe()
    assert described["steps"] == 2 and described["ensemble_size"] == 2
    assert described["pipeline"] == "MarigoldDepthPipeline" and described["default_processing_res"] == 64
    assert method.contract.kind == "depth" and method.contract.processing_res == 64


def test_normals_are_unit_vectors(marigold_normals_dir):
    method = build_method("marigold", "normals", RunOptions(checkpoint=str(marigold_normals_dir), steps=1))
    out = method.predict(torch.rand(1, 3, 32, 32) * 2 - 1, _gens([0]))
    assert out.shape == (1, 3, 32, 32)
    assert torch.allclose(out.norm(dim=1), torch.ones(1, 32, 32), atol=1e-3)
    assert method.steps == 1 and method.ensemble_size == 1


def test_run_on_the_tiny_world_from_the_environment_variable(marigold_depth_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_MARIGOLD_DEPTH", str(marigold_depth_dir))
    out = tmp_path / "run"
    assert main(["run", "--methods", "marigold", "--datasets", "synthetic", "--count", "2", "--output", str(out),
                 "--quiet"]) == 0
    described = json.loads((out / "manifest.json").read_text())["methods"]["marigold__synthetic"]
    assert described["checkpoint"] == str(marigold_depth_dir) and described["steps"] == 2  # the folder's default
    import pandas as pd

    rows = pd.read_csv(out / "summary.csv")
    mine = rows[(rows.method == "marigold") & (rows.group == "all")]
    assert len(mine) > 0 and (mine.n_samples == 2).all() and np.isfinite(mine.value).all()


def test_a_normals_folder_is_refused_for_depth(marigold_normals_dir):
    with pytest.raises(ValueError, match="holds a MarigoldNormalsPipeline, not a MarigoldDepthPipeline"):
        build_method("marigold", "depth", RunOptions(checkpoint=str(marigold_normals_dir)))


def test_absent_checkpoint_names_the_files_and_where_they_go(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    monkeypatch.delenv("HARNESS_MARIGOLD_NORMALS", raising=False)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    with pytest.raises(FileNotFoundError) as err:
        build_method("marigold", "normals", RunOptions())
    for needed in ("model_index.json", "unet/diffusion_pytorch_model.safetensors", "HARNESS_MARIGOLD_NORMALS",
                   "--checkpoint", "huggingface-cli download prs-eth/marigold-normals-v1-1"):
        assert needed in str(err.value)


def test_an_incomplete_folder_names_what_it_lacks(marigold_depth_dir, tmp_path):
    import shutil

    broken = tmp_path / "m"
    shutil.copytree(marigold_depth_dir, broken)
    (broken / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="lacks vae/diffusion_pytorch_model.safetensors"):
        build_method("marigold", "depth", RunOptions(checkpoint=str(broken)))


@pytest.mark.parametrize("damaged", ["model_index.json", "unet/config.json"])
def test_a_damaged_config_names_the_file(marigold_depth_dir, tmp_path, damaged):
    import shutil

    broken = tmp_path / "m"
    shutil.copytree(marigold_depth_dir, broken)
    (broken / damaged).write_text("{")
    with pytest.raises(ValueError, match=f"cannot read {broken / damaged}"):
        build_method("marigold", "depth", RunOptions(checkpoint=str(broken)))


@pytest.mark.parametrize("dtype, autocast", [("float32", None), ("bfloat16", torch.bfloat16)])
def test_the_dtype_option_runs_the_pipeline_s_unet_under_autocast(marigold_depth_dir, dtype, autocast):
    method = build_method("marigold", "depth", RunOptions(checkpoint=str(marigold_depth_dir), steps=1, dtype=dtype))
    seen = []  # (autocast on, its dtype) inside each UNet call
    method.pipe.unet.register_forward_hook(lambda *_: seen.append(
        (torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"))))
    out = method.predict(torch.rand(1, 3, 32, 32) * 2 - 1, _gens([0]))
    assert seen and all(on == (autocast is not None) for on, _ in seen)
    if autocast is not None:
        assert {d for _, d in seen} == {autocast}
    assert torch.isfinite(out).all()
