import json

import pytest
import torch
from safetensors.torch import load_file

from harness.train import TrainConfig, lr_factor, train
from methods.dpbridge import DPBridgeConfig, load_checkpoint


def _cfgs(tmp_path, backbone, **kw):
    method = DPBridgeConfig(task="normals", backbone=str(backbone))
    base = dict(iterations=4, batch=2, pool_count=6, checkpoint_every=2, log_every=1, warmup=2)
    base.update(kw)
    return method, TrainConfig(**base)


def _weights(folder):
    return load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))


def test_resumed_training_equals_uninterrupted_training(tmp_path, tiny_backbone_dir, private_cache):
    method, cfg = _cfgs(tmp_path, tiny_backbone_dir)
    full = TrainConfig(**{**cfg.__dict__, "output": str(tmp_path / "a"), "export": str(tmp_path / "ea")})
    train(method, full, "test")
    # the same run stopped after 2 iterations (a checkpoint), then started again with the full length
    half = TrainConfig(**{**cfg.__dict__, "iterations": 2, "output": str(tmp_path / "b"), "export": str(tmp_path / "eb")})
    train(method, half, "test")
    resumed = TrainConfig(**{**half.__dict__, "iterations": 4})
    train(method, resumed, "test")
    a, b = _weights(tmp_path / "ea"), _weights(tmp_path / "eb")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    log = [json.loads(line) for line in (tmp_path / "b" / "training_log.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in log if row.get("event") == "start"] == [0, 2]


def test_exported_checkpoint_loads_and_records_its_command(tmp_path, tiny_backbone_dir, private_cache):
    method, cfg = _cfgs(tmp_path, tiny_backbone_dir, iterations=1, output=str(tmp_path / "o"),
                        export=str(tmp_path / "e"))
    train(method, cfg, "python -m harness train --method dpbridge_tiny --task normals")
    model = load_checkpoint(tmp_path / "e")
    assert model.cfg.task == "normals" and model.unet.config.in_channels == 8
    summary = json.loads((tmp_path / "e" / "training_summary.json").read_text())
    assert summary["command"].startswith("python -m harness train")
    assert summary["effective_batch"] == 2 and summary["world_size"] == 1


def test_lr_schedule_warms_up_then_decays_exponentially():
    cfg = TrainConfig(iterations=1100, warmup=100, lr_final_ratio=0.01)
    assert lr_factor(0, cfg) == pytest.approx(0.01)
    assert lr_factor(99, cfg) == pytest.approx(1.0)
    assert lr_factor(100, cfg) == pytest.approx(1.0)
    assert lr_factor(600, cfg) == pytest.approx(0.1)
    assert lr_factor(1100, cfg) == pytest.approx(0.01)


def test_resuming_with_other_settings_is_refused(tmp_path, tiny_backbone_dir, private_cache):
    method, cfg = _cfgs(tmp_path, tiny_backbone_dir, iterations=2, output=str(tmp_path / "o"),
                        export=str(tmp_path / "e"))
    train(method, cfg, "test")
    other = DPBridgeConfig(task="normals", backbone=str(tiny_backbone_dir), dan="B")
    with pytest.raises(ValueError, match="another method config"):
        train(other, TrainConfig(**{**cfg.__dict__, "iterations": 4}), "test")


def test_v_parameterisation_trains_and_round_trips(tmp_path, tiny_backbone_dir, private_cache):
    method = DPBridgeConfig(task="depth", backbone=str(tiny_backbone_dir), parameterization="v")
    cfg = TrainConfig(iterations=1, batch=2, pool_count=4, output=str(tmp_path / "o"), export=str(tmp_path / "e"))
    train(method, cfg, "test")
    assert load_checkpoint(tmp_path / "e").cfg.parameterization == "v"
