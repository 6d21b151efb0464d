import json

import torch

from harness.pretrain import PretrainConfig, _lr_lambda, pretrain, pretrained_loss_at
from methods.backbones import load_backbone


def test_pretrain_writes_a_loadable_backbone_with_its_report(tmp_path, private_cache):
    cfg = PretrainConfig(pool_count=8, val_count=4, batch=4, vae_steps=2, unet_steps=2, warmup=1,
                         output=str(tmp_path / "bb"))
    summary = pretrain(cfg, "python -m harness pretrain --set vae_steps=2")
    backbone = load_backbone(tmp_path / "bb")
    assert backbone.scaling_factor == summary["scaling_factor"] > 0
    for key in ("vae_rgb_mae_pm1", "vae_depth_mae_pm1", "vae_normals_mean_deg"):
        assert summary[key] >= 0
    written = json.loads((tmp_path / "bb" / "training_summary.json").read_text())
    assert written["command"] == "python -m harness pretrain --set vae_steps=2"
    loss = pretrained_loss_at(backbone, torch.randn(2, 4, 16, 16), k=500)
    assert 0 < loss < 10


def test_pretrain_schedule_warms_up_and_decays():
    f = _lr_lambda(10, 110, final_ratio=0.05)
    assert f(0) == 0.1 and f(9) == 1.0
    assert abs(f(110) - 0.05) < 1e-12
