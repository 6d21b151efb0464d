"""Typed KEY=VALUE settings and trainable-method configs (train, ablate --train)."""
import pytest

from harness.train import TrainConfig
from harness.trainables import trained_method_config, typed_settings
from methods.dpbridge import DPBridgeConfig
from methods.i2sb import I2SBConfig


def test_settings_are_typed_by_the_dataclass():
    assert typed_settings(["dan=B", "finetune=false", "lambda_ic=2", "ic_max_k=5"], DPBridgeConfig) == {
        "dan": "B", "finetune": False, "lambda_ic": 2.0, "ic_max_k": 5}
    assert typed_settings(["iterations=7"], TrainConfig) == {"iterations": 7}


@pytest.mark.parametrize("pair,message", [
    ("dan=C", "dan must be one of A, B, off"),
    ("finetune=ture", "finetune is true or false"),
    ("ic_max_k=x", "ic_max_k must be an int"),
    ("dann=A", "cannot apply 'dann=A' to DPBridgeConfig"),
    ("dan", "expected KEY=VALUE"),
])
def test_a_typo_fails_instead_of_becoming_a_value(pair, message):
    with pytest.raises(ValueError, match=message):
        typed_settings([pair], DPBridgeConfig)


def test_variant_overlay_then_settings_and_the_shipped_folder():
    cfg, folder = trained_method_config("dpbridge_tiny", "depth", "ft", ["lambda_ic=3"])
    assert (cfg.finetune, cfg.dan, cfg.image_consistency, cfg.parameterization, cfg.lambda_ic) == (
        True, "off", "off", "v", 3.0)
    assert folder.parts[-2:] == ("ablation", "dpbridge_tiny_depth_ft")
    cfg, folder = trained_method_config("i2sb", "depth", None, [])
    assert cfg == I2SBConfig(task="depth") and folder.name == "i2sb_tiny_depth"
    with pytest.raises(ValueError, match="has no variant 'nope'"):
        trained_method_config("dpbridge_tiny", "depth", "nope", [])
    with pytest.raises(ValueError, match="not trainable here"):
        trained_method_config("ramp", "depth", None, [])
