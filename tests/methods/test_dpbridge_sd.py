"""dpbridge_sd15 / dpbridge_sd21 on tiny random folders in Stable Diffusion's layout: finding the backbone, refusing
the wrong one before any compute, and train -> save -> load -> predict -> evaluate through the real code path."""
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.cli import main
from methods.backbones import _encode_empty_prompt, load_backbone
from methods.dpbridge import DPBridgeConfig
from methods.sd_backbone import BackboneMismatchError, resolve_backbone
from sd_fixtures import write_tiny_sd


@pytest.fixture(scope="session")
def sd21_dir(tmp_path_factory):
    return write_tiny_sd(tmp_path_factory.mktemp("sd") / "sd21", "sd21")


@pytest.fixture(scope="session")
def sd21_checkpoint(sd21_dir, tmp_path_factory):
    """A DPBridge-SD2.1 checkpoint trained by the CLI as a user would, on HyperSim and Virtual KITTI 2 fixtures in
    their native files (the paper preset, shortened to 2 iterations of one micro-batch)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "datasets"))
    from training_fixtures import write_hypersim, write_vkitti

    tmp = tmp_path_factory.mktemp("train")
    write_hypersim(tmp / "hs", count=2, height=48, width=64)
    write_vkitti(tmp / "vk", count=2)
    roots = {"HARNESS_DATA_HYPERSIM": str(tmp / "hs"), "HARNESS_DATA_VKITTI": str(tmp / "vk")}
    old = {k: os.environ.get(k) for k in roots}
    os.environ.update(roots)
    try:
        code = main(["train", "--method", "dpbridge_sd21", "--datasets", "hypersim,vkitti", "--backbone",
                     str(sd21_dir), "--set", "iterations=2", "--set", "grad_accum=1", "--set",
                     f"output={tmp / 'run'}", "--set", f"export={tmp / 'ckpt'}", "--method-set", "processing_res=64",
                     "--method-set", "default_steps=2"])
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    assert code == 0
    return tmp / "ckpt"


def _copy_with(src, dst, edits):
    """A copy of a folder with some JSON config keys changed ({relative path: {key: value or None to delete}})."""
    shutil.copytree(src, dst)
    for rel, changes in edits.items():
        path = dst / rel
        cfg = json.loads(path.read_text())
        for key, value in changes.items():
            cfg.pop(key, None) if value is None else cfg.__setitem__(key, value)
        path.write_text(json.dumps(cfg))
    return dst


def test_backbone_from_flag_environment_and_hugging_face_cache(sd21_dir, tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    assert resolve_backbone("sd21", str(sd21_dir)) == sd21_dir
    monkeypatch.setenv("HARNESS_SD21", str(sd21_dir))
    assert resolve_backbone("sd21") == sd21_dir
    monkeypatch.delenv("HARNESS_SD21")
    repo = tmp_path / "hub" / "models--stabilityai--stable-diffusion-2-1-base"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots").mkdir()
    (repo / "snapshots" / ("0" * 40)).symlink_to(sd21_dir, target_is_directory=True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert resolve_backbone("sd21").resolve() == sd21_dir.resolve()


def test_absent_weights_name_every_needed_file_and_where_to_put_them(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    monkeypatch.delenv("HARNESS_SD15", raising=False)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    with pytest.raises(FileNotFoundError) as err:
        resolve_backbone("sd15")
    text = str(err.value)
    for needed in ("unet/diffusion_pytorch_model.safetensors", "vae/config.json", "text_encoder/model.safetensors",
                   "tokenizer/merges.txt", "scheduler/scheduler_config.json", "HARNESS_SD15", "--backbone",
                   "huggingface-cli download stable-diffusion-v1-5/stable-diffusion-v1-5"):
        assert needed in text


def test_incomplete_folder_names_the_missing_file(sd21_dir, tmp_path):
    broken = tmp_path / "sd21"
    shutil.copytree(sd21_dir, broken)
    (broken / "text_encoder" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks text_encoder/model.safetensors"):
        resolve_backbone("sd21", str(broken))


@pytest.mark.parametrize("edits, why", [
    ({"scheduler/scheduler_config.json": {"prediction_type": "v_prediction"}, "unet/config.json": {"sample_size": 96}},
     "predicts v_prediction at sample_size 96"),
    ({"unet/config.json": {"addition_embed_type": "text_time", "cross_attention_dim": 2048}}, "SDXL"),
    ({"unet/config.json": {"in_channels": 8}}, "already fine-tuned Marigold / DPBridge"),
    ({"unet/config.json": {"cross_attention_dim": 768}}, "cross_attention_dim is 768 \\(that is Stable Diffusion 1.5"),
    ({"vae/config.json": {"latent_channels": 16}}, "16 latent channels"),
])
def test_a_folder_of_another_family_is_refused_from_its_configs(sd21_dir, tmp_path, edits, why):
    folder = _copy_with(sd21_dir, tmp_path / "other", edits)
    with pytest.raises(BackboneMismatchError, match=why):
        resolve_backbone("sd21", str(folder))


def test_sd15_method_refuses_an_sd21_backbone_before_training(sd21_dir, tmp_path):
    code = main(["train", "--method", "dpbridge_sd15", "--backbone", str(sd21_dir), "--set",
                 f"output={tmp_path / 'o'}"])
    assert code == 2 and not (tmp_path / "o").exists()


def test_null_text_is_encoded_once_per_backbone_and_padding(sd21_dir):
    _encode_empty_prompt.cache_clear()
    first, second = load_backbone(sd21_dir).null_text, load_backbone(sd21_dir).null_text
    assert _encode_empty_prompt.cache_info().misses == 1 and _encode_empty_prompt.cache_info().hits == 1
    assert first.shape == (1, 2, 1024) and torch.equal(first, second)  # [BOS, EOS], as Marigold encodes it
    padded = load_backbone(sd21_dir, null_text_padding="max_length")
    assert _encode_empty_prompt.cache_info().misses == 2
    assert padded.null_text.shape == (1, 77, 1024) and "padding max_length, 77 tokens" in padded.null_text_source
    # the text encoder is causal: the padded embedding's first two rows are the unpadded one
    torch.testing.assert_close(padded.null_text[:, :2], first, rtol=1e-4, atol=1e-5)


def test_an_unknown_null_text_padding_is_refused_naming_the_choices(sd21_dir):
    with pytest.raises(ValueError, match="null_text_padding='left'.*none, max_length"):
        load_backbone(sd21_dir, null_text_padding="left")
    with pytest.raises(ValueError, match="null_text_padding='left'"):
        DPBridgeConfig(null_text_padding="left")


def test_trained_checkpoint_records_backbone_and_paper_preset(sd21_checkpoint, sd21_dir):
    summary = json.loads((sd21_checkpoint / "training_summary.json").read_text())
    assert summary["method_config"]["backbone"] == str(sd21_dir)
    train_cfg = summary["train_config"]
    assert train_cfg["preset"] == "paper" and train_cfg["lr"] == 3e-5 and train_cfg["warmup"] == 100
    assert train_cfg["batch"] == 2 and train_cfg["iterations"] == 2 and train_cfg["grad_accum"] == 1  # --set wins
    assert summary["train_data"] == {"hypersim": {"samples": 2, "probability": 0.9},
                                     "vkitti": {"samples": 2, "probability": 0.1}}


def test_checkpoint_evaluates_on_the_tiny_world(sd21_checkpoint, tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--methods", "dpbridge_sd21", "--datasets", "synthetic", "--count", "2", "--checkpoint",
                 str(sd21_checkpoint), "--output", str(out), "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    described = manifest["methods"]["dpbridge_sd21__synthetic"]
    assert described["backbone_family"] == "sd21" and described["checkpoint"] == str(sd21_checkpoint)
    assert described["steps"] == 2 and described["processing_res"] == 64
    assert described["method_config"]["null_text_padding"] == "none"
    assert "padding none, 2 tokens" in described["null_text"]
    import pandas as pd

    rows = pd.read_csv(out / "summary.csv")
    mine = rows[(rows.method == "dpbridge_sd21") & (rows.group == "all")]
    assert (mine.n_samples == 2).all() and np.isfinite(mine.value).all() and len(mine) > 0


def test_checkpoint_is_evaluated_with_the_null_text_padding_it_records(sd21_checkpoint, tmp_path):
    from harness.registry import build_method
    from methods.base import RunOptions

    padded = tmp_path / "padded"
    shutil.copytree(sd21_checkpoint, padded)
    record = json.loads((padded / "trained_config.json").read_text())
    record["method_config"]["null_text_padding"] = "max_length"
    (padded / "trained_config.json").write_text(json.dumps(record))
    for folder, tokens in ((sd21_checkpoint, 2), (padded, 77)):
        method = build_method("dpbridge_sd21", "depth", RunOptions(checkpoint=str(folder)))
        assert method.model.null_text.shape == (1, tokens, 1024)
        assert method.describe()["method_config"]["null_text_padding"] == ("none" if tokens == 2 else "max_length")


def test_checkpoint_of_another_backbone_is_refused_before_loading(sd21_checkpoint):
    from harness.registry import build_method
    from methods.base import RunOptions

    with pytest.raises(ValueError, match="cross_attention_dim 1024 does not match Stable Diffusion 1.5"):
        build_method("dpbridge_sd15", "depth", RunOptions(checkpoint=str(sd21_checkpoint)))
    with pytest.raises(ValueError, match="trained for depth, not normals"):
        build_method("dpbridge_sd21", "normals", RunOptions(checkpoint=str(sd21_checkpoint)))


def test_checkpoint_with_wrong_channels_is_refused(sd21_checkpoint, tmp_path):
    from harness.registry import build_method
    from methods.base import RunOptions

    bad = _copy_with(sd21_checkpoint, tmp_path / "bad", {"unet/config.json": {"in_channels": 4}})
    with pytest.raises(ValueError, match="unet has 4 -> 4 channels; a DPBridge checkpoint has 8"):
        build_method("dpbridge_sd21", "depth", RunOptions(checkpoint=str(bad)))


def test_moved_backbone_is_found_again_or_named(sd21_checkpoint, sd21_dir, tmp_path, monkeypatch):
    import huggingface_hub.constants as hc
    from harness.registry import build_method
    from methods.base import RunOptions

    moved = tmp_path / "ckpt"
    shutil.copytree(sd21_checkpoint, moved)
    record = json.loads((moved / "trained_config.json").read_text())
    record["method_config"]["backbone"] = str(tmp_path / "gone")
    (moved / "trained_config.json").write_text(json.dumps(record))
    monkeypatch.delenv("HARNESS_SD21", raising=False)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    with pytest.raises(FileNotFoundError, match="trained on the backbone folder .*gone, which does not exist"):
        build_method("dpbridge_sd21", "depth", RunOptions(checkpoint=str(moved)))
    monkeypatch.setenv("HARNESS_SD21", str(sd21_dir))
    method = build_method("dpbridge_sd21", "depth", RunOptions(checkpoint=str(moved)))
    assert method.model.cfg.backbone == str(sd21_dir)


def test_missing_checkpoint_says_how_to_train_one(tmp_path):
    from harness.registry import build_method
    from methods.base import RunOptions

    with pytest.raises(FileNotFoundError, match="harness train --method dpbridge_sd21 --task depth --datasets"):
        build_method("dpbridge_sd21", "depth", RunOptions(checkpoint=str(tmp_path / "none")))


@pytest.mark.slow
def test_full_size_sd21_unet_takes_one_training_step_at_low_resolution(sd21_dir, tmp_path):
    """SD2.1-base's real UNet shape (865 M parameters, random weights from its config; no download)."""
    from diffusers import UNet2DConditionModel

    from methods.dpbridge import DPBridgeConfig, DPBridgeModel

    full = dict(sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, layers_per_block=2,
                cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True)
    folder = tmp_path / "sd21_full"
    shutil.copytree(sd21_dir, folder)
    shutil.rmtree(folder / "unet")
    UNet2DConditionModel(**full).save_pretrained(folder / "unet")
    resolve_backbone("sd21", str(folder))  # still an SD2.1-base folder
    model = DPBridgeModel.build(DPBridgeConfig(backbone=str(folder)))
    assert sum(p.numel() for p in model.unet.parameters()) > 860e6
    x_T, x_0, noise = (torch.randn(1, 4, 8, 8) for _ in range(3))  # 64 x 64 px
    out = model.loss(x_T, x_0, torch.zeros(1, 3, 64, 64), torch.ones(1, 1, 64, 64, dtype=torch.bool),
                     torch.tensor([300]), noise)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and model.unet.conv_in.weight.grad.abs().sum() > 0


def test_an_sd15_folder_is_an_sd15_backbone_and_not_an_sd21_one(tmp_path):
    sd15 = write_tiny_sd(tmp_path / "sd15", "sd15")
    assert resolve_backbone("sd15", str(sd15)) == sd15
    with pytest.raises(BackboneMismatchError, match="cross_attention_dim is 768 \\(that is Stable Diffusion 1.5\\)"):
        resolve_backbone("sd21", str(sd15))


def test_the_sd_method_predicts_at_sizes_its_unet_does_not_divide(sd21_checkpoint):
    """480x640 (NYUv2 native) has a 60x80 latent that an SD UNet's three downsamplings do not divide; like Marigold,
    the harness processes it as it is. Here: 40x56, a 5x7 latent under the fixture UNet's one downsampling."""
    from harness.registry import build_method
    from methods.base import RunOptions

    method = build_method("dpbridge_sd21", "depth", RunOptions(checkpoint=str(sd21_checkpoint), steps=1))
    assert method.contract.size_multiple == 8  # the VAE's downsampling
    out = method.predict(torch.rand(1, 3, 40, 56) * 2 - 1, [torch.Generator().manual_seed(0)])
    assert out.shape == (1, 1, 40, 56) and torch.isfinite(out).all()
