"""train_mean's fit: settings from --set, the shipped file never replaced by a fit with other settings."""
import hashlib

import pytest
from safetensors.torch import load_file

from harness.cli import main
from harness.train_mean import fit_train_mean
from methods.trivial import train_mean_path


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_fit_with_other_settings_never_replaces_the_file(tmp_path, private_cache):
    out = tmp_path / "mean.safetensors"
    summary = fit_train_mean("depth", pool_count=3, seed=1, export=str(out))
    assert summary["export"] == str(out) and load_file(str(out))["mean"].shape == (1, 64, 64)
    before, first_map = _digest(out), load_file(str(out))["mean"]
    with pytest.raises(FileExistsError, match=r"fitted with other settings \(seed: 1 -> 2\)"):
        fit_train_mean("depth", pool_count=3, seed=2, export=str(out))
    assert _digest(out) == before
    fit_train_mean("depth", pool_count=3, seed=1, export=str(out), command="again")  # same settings: regenerated
    assert load_file(str(out))["mean"].equal(first_map)


def test_the_cli_takes_its_settings_and_refuses_the_shipped_file_under_others(tmp_path, capsys, private_cache):
    shipped = train_mean_path("depth")
    before = _digest(shipped)
    assert main(["train", "--method", "train_mean", "--set", "pool_count=2"]) == 2
    assert "fitted with other settings (pool_count: 4000 -> 2)" in capsys.readouterr().err
    assert main(["train", "--method", "train_mean", "--set", "lr=1"]) == 2
    assert "train_mean takes pool_count=..., seed=..., export=..." in capsys.readouterr().err
    assert main(["train", "--method", "train_mean", "--datasets", "hypersim"]) == 2
    assert "train_mean takes none of --datasets" in capsys.readouterr().err
    assert _digest(shipped) == before
    out = tmp_path / "m.safetensors"
    assert main(["train", "--method", "train_mean", "--task", "normals", "--set", "pool_count=2",
                 "--set", f"export={out}"]) == 0
    assert load_file(str(out))["mean"].shape == (3, 64, 64)
