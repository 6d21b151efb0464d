"""I2SB, BBDM, the noise-to-map and the one-step regression baselines: train -> export -> load -> predict through the shared code path."""
import pytest
import torch

from harness.train import TrainConfig, train
from methods.base import RunOptions
from methods.bbdm import BBDM, BBDMConfig
from methods.dpbridge import DPBridgeConfig, DPBridgeTiny
from methods.i2sb import I2SB, I2SBConfig
from methods.latent import load_trained
from methods.marigold_tiny import MarigoldTiny, MarigoldTinyConfig
from methods.regressor_tiny import RegressorTiny, RegressorTinyConfig

CASES = [(I2SB, I2SBConfig), (BBDM, BBDMConfig), (MarigoldTiny, MarigoldTinyConfig),
         (RegressorTiny, RegressorTinyConfig)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_backbone_dir):
    """One 2-iteration checkpoint per baseline (random tiny backbone, 6 scenes)."""
    import harness.pool as pool

    root = tmp_path_factory.mktemp("baselines")
    old = pool.CACHE_DIR
    pool.CACHE_DIR = root / "cache"
    try:
        out = {}
        for method, config in CASES:
            cfg = config(task="depth", backbone=str(tiny_backbone_dir))
            folder = root / method.trainable
            train(cfg, TrainConfig(iterations=1, batch=2, pool_count=2, warmup=1, output=str(root / "run" /
                                   method.trainable), export=str(folder)), "test", method_name=method.name)
            out[method] = folder
        return out
    finally:
        pool.CACHE_DIR = old


@pytest.mark.parametrize("method,config", CASES)
def test_from_scratch_unless_finetuned(method, config):
    assert config().finetune == (method.trainable in ("marigold_tiny", "regressor_tiny"))


@pytest.mark.parametrize("method", [c[0] for c in CASES])
def test_predicts_finite_depth_reproducibly(method, trained):
    m = method("depth", RunOptions(steps=3, checkpoint=str(trained[method])))
    rgb = torch.rand(2, 3, 32, 48) * 2 - 1

    def run():
        return m.predict(rgb, [torch.Generator().manual_seed(i) for i in (5, 6)])

    a, b = run(), run()
    assert a.shape == (2, 1, 32, 48) and torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert m.describe()["checkpoint"] == str(trained[method])
    assert m.describe()["method_config"]["task"] == "depth"


def test_a_checkpoint_of_another_method_is_refused(trained):
    with pytest.raises(ValueError, match="is a bbdm checkpoint, not i2sb"):
        I2SB("depth", RunOptions(checkpoint=str(trained[BBDM])))
    with pytest.raises(ValueError, match="is a i2sb checkpoint, not dpbridge"):
        DPBridgeTiny("depth", RunOptions(checkpoint=str(trained[I2SB])))
    assert isinstance(load_trained(trained[BBDM]).cfg, BBDMConfig)


def test_noise_to_map_depends_on_the_seed_and_bridges_start_from_the_image(trained):
    rgb = torch.rand(1, 3, 32, 32) * 2 - 1
    mari = MarigoldTiny("depth", RunOptions(steps=2, checkpoint=str(trained[MarigoldTiny])))
    a = mari.predict(rgb, [torch.Generator().manual_seed(0)])
    b = mari.predict(rgb, [torch.Generator().manual_seed(1)])
    assert not torch.equal(a, b)  # eta = 0 still starts from seeded noise
    i2sb = I2SB("depth", RunOptions(steps=2, checkpoint=str(trained[I2SB])))
    a = i2sb.predict(rgb, [torch.Generator().manual_seed(0)])
    b = i2sb.predict(rgb, [torch.Generator().manual_seed(1)])
    assert torch.equal(a, b)  # eta = 0: the bridge is deterministic from the image latent


def test_steps_out_of_range_fail_before_compute(trained):
    with pytest.raises(ValueError, match="steps must be in 1..999"):
        BBDM("depth", RunOptions(steps=1000, checkpoint=str(trained[BBDM])))


def test_unknown_config_key_is_refused(tmp_path, trained):
    import json
    import shutil

    folder = tmp_path / "ck"
    shutil.copytree(trained[I2SB], folder)
    record = json.loads((folder / "trained_config.json").read_text())
    record["method_config"]["beta_maxx"] = 1
    (folder / "trained_config.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="unknown i2sb config keys"):
        load_trained(folder)


def test_ablation_variant_names_its_missing_checkpoint(tmp_path, monkeypatch):
    import methods.trained as trained_mod

    monkeypatch.setattr(trained_mod, "ABLATION_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"ablate --train"):
        DPBridgeTiny("depth", RunOptions(extra={"spec_option": "scratch"}))
    assert DPBridgeConfig().finetune


def test_regressor_is_one_call_independent_of_seed_and_steps(trained):
    rgb = torch.rand(2, 3, 32, 32) * 2 - 1
    one = RegressorTiny("depth", RunOptions(steps=1, checkpoint=str(trained[RegressorTiny])))
    ten = RegressorTiny("depth", RunOptions(steps=10, checkpoint=str(trained[RegressorTiny])))
    calls = []
    hook = ten.model.unet.register_forward_hook(lambda *a: calls.append(1))
    a = one.predict(rgb, [torch.Generator().manual_seed(i) for i in (0, 1)])
    b = ten.predict(rgb, [torch.Generator().manual_seed(i) for i in (7, 8)])
    hook.remove()
    assert torch.equal(a, b) and len(calls) == 1
    assert not one.contract.stochastic and one.describe()["network_calls_per_image"] == 1
    assert ten.describe()["steps"] == 1  # what it ran, not what --steps asked for


def test_regressor_loss_is_the_latent_mse_of_its_output(trained):
    model = load_trained(trained[RegressorTiny])
    x_T, x_0 = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t, noise = torch.tensor([5, 600]), torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        losses = model.loss(x_T, x_0, None, None, t, noise)
        assert torch.allclose(losses["loss"], ((model.regress(x_T) - x_0) ** 2).mean())
        assert torch.equal(model.loss(x_T, x_0, None, None, t + 100, torch.randn_like(noise))["loss"], losses["loss"])
