"""`ablate`: missing checkpoints named with their command, --train regenerates them, Table 3 from run folders."""
import json

import pytest

import methods.trained as trained_mod
from harness.ablate import AblateConfig, ablate, missing_checkpoints

CFG = AblateConfig(variants=("full", "ft"), baselines=("i2sb",), reference=False, steps=(1, 2), count=2,
                   iterations=1, batch_size=2)
TINY_TRAINING = {"batch": 2, "pool_count": 2, "warmup": 1}


@pytest.fixture()
def weights(tmp_path, monkeypatch, private_cache):
    monkeypatch.setattr(trained_mod, "WEIGHTS_DIR", tmp_path / "weights")
    monkeypatch.setattr(trained_mod, "ABLATION_DIR", tmp_path / "weights" / "ablation")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "weights"


def test_missing_checkpoints_fail_with_their_commands(weights):
    assert missing_checkpoints(CFG) == ["dpbridge_tiny[full]", "dpbridge_tiny[ft]", "i2sb"]
    with pytest.raises(FileNotFoundError, match=r"(?s)3 ablation checkpoint.*--variant ft --set iterations=1.*"
                                                r"ablate --train"):
        ablate(CFG, "out")


def test_train_then_table3_with_design_columns(weights, tmp_path):
    folder, table = ablate(CFG, "out", train_missing=True, progress=False, train_settings=TINY_TRAINING)
    assert (weights / "ablation" / "dpbridge_tiny_depth_ft" / "trained_config.json").is_file()
    assert (weights / "i2sb_tiny_depth" / "trained_config.json").is_file()
    assert set(table.row) == {"full", "ft", "i2sb"} and set(table.steps) == {1, 2}
    assert set(table.metric) == {"abs_rel", "delta1"}
    ft = table[table.row == "ft"].iloc[0]
    assert (ft.finetune, ft.dan, ft.image_consistency, ft.train_iterations) == (True, "off", "off", 1)
    i2sb = table[table.row == "i2sb"].iloc[0]
    assert (i2sb.finetune, i2sb.dan) == (False, "-")
    md = (folder / "table3.md").read_text()
    assert "| ft | ✓ | off | off | 1 |" in md and "**2 steps**" in md
    # a second call trains nothing and reads the finished runs: the same table
    before = (folder / "table3.csv").read_text()
    ablate(CFG, "out", progress=False)
    assert (folder / "table3.csv").read_text() == before
    # a checkpoint whose settings are not its variant's is refused
    path = weights / "ablation" / "dpbridge_tiny_depth_ft" / "trained_config.json"
    record = json.loads(path.read_text())
    record["method_config"]["dan"] = "A"
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="not trained with the settings of variant ft"):
        ablate(CFG, "out2", progress=False)
