import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import _dataset_settings, main

ROOT = Path(__file__).resolve().parents[1]


def test_ls_lists_every_registered_method_and_dataset(capsys):
    assert main(["ls", "methods"]) == 0
    out = capsys.readouterr().out
    for name in ("dpbridge_tiny", "constant", "ramp", "train_mean"):
        assert name in out
    assert main(["ls", "datasets"]) == 0
    assert "synthetic_normals" in capsys.readouterr().out


def test_unknown_dataset_exits_2_with_a_suggestion(capsys, tmp_path):
    code = main(["run", "--methods", "constant", "--datasets", "synthetc", "--output", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'synthetc'" in err and "Did you mean synthetic" in err


def test_python_dash_m_harness_runs_from_the_checkout(tmp_path):
    out = subprocess.run([sys.executable, "-m", "harness", "run", "--methods", "ramp", "--datasets", "synthetic",
                          "--count", "2", "--quiet", "--output", str(tmp_path / "r")], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "| ramp | synthetic | all | 2 |" in out.stdout
    assert (tmp_path / "r" / "summary.csv").is_file()


def test_datasets_all_means_every_registered_evaluation_dataset():
    from harness.cli import _dataset_names

    names = _dataset_names("all")
    assert {"synthetic", "synthetic_normals"} <= set(names)
    assert _dataset_names("synthetic, synthetic_normals") == ("synthetic", "synthetic_normals")


def test_the_tiny_world_split_is_chosen_with_dataset_set(tmp_path):
    code = main(["run", "--methods", "constant", "--datasets", "synthetic", "--dataset-set", "split=val",
                 "--count", "2", "--output", str(tmp_path / "r"), "--quiet"])
    assert code == 0
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["datasets"]["synthetic"]["split"] == "val"
    rows = list(csv.DictReader((tmp_path / "r" / "summary.csv").open()))
    assert rows and {r["split"] for r in rows} == {"val"}
    assert re.search(r"synthetic `[0-9a-f]+` \(val split\)", (tmp_path / "r" / "summary.md").read_text())


def test_dataset_set_names_the_settings_a_dataset_takes(capsys):
    assert main(["run", "--datasets", "synthetic", "--dataset-set", "max_depth=3"]) == 2  # a usage error, no traceback
    err = capsys.readouterr().err
    assert "error: --dataset-set max_depth: dataset synthetic takes split, seed, height, width" in err
    with pytest.raises(ValueError, match="applies to datasets named with a folder"):
        _dataset_settings(("nyuv2",), ["split=val"])  # (the run itself stops earlier, at the missing root)


@pytest.mark.parametrize("command, module, function, result", [
    ("run", "harness.run", "run", (None, None)),
    ("robustness", "harness.robustness", "robustness", (None, None, None)),
    ("latency", "harness.latency", "latency_study", (None, None))])
def test_the_inference_options_reach_the_config_of_each_command(monkeypatch, command, module, function, result):
    import importlib

    configs = []  # the config each call of the command's study function received (a launched rank's return)
    record = lambda cfg, *a, **k: (configs.append(cfg), result)[1]  # noqa: E731
    monkeypatch.setattr(importlib.import_module(module), function, record)
    argv = [command, "--methods", "dpbridge_tiny", "--datasets", "synthetic"] + (
        ["--noise", "gaussian"] if command == "robustness" else [])
    assert main(argv) == 0
    assert main(argv + ["--dtype", "bfloat16", "--channels-last", "--compile", "--bmm-attention"]) == 0
    plain, chosen = configs
    assert (plain.dtype, plain.channels_last, plain.compile, plain.bmm_attention) == ("float32", False, False, False)
    assert (chosen.dtype, chosen.channels_last, chosen.compile, chosen.bmm_attention) == ("bfloat16", True, True, True)


@pytest.mark.parametrize("command, function, result", [("run", "run", (None, None)),
                                                      ("robustness", "robustness", (None, None, None))])
def test_run_and_robustness_take_the_same_run_options(monkeypatch, command, function, result, tmp_path):
    """A robustness study reuses a run's clean cells only when their settings agree: it must be able to say them."""
    import importlib

    configs = []
    monkeypatch.setattr(importlib.import_module(f"harness.{command}"), function,
                        lambda cfg, *a, **k: (configs.append(cfg), result)[1])
    assert main([command, "--methods", "dpbridge_tiny", "--datasets", "synthetic", "--checkpoint", str(tmp_path),
                 "--ensemble", "3", "--dataset-set", "split=val", "--continue-on-error", "--retry-failed",
                 "--size-fit", "round", "--processing-res", "32"]) == 0
    cfg, = configs
    assert (cfg.checkpoint, cfg.ensemble_size, cfg.dataset_args) == (str(tmp_path), 3, {"synthetic": {"split": "val"}})
    assert (cfg.continue_on_error, cfg.retry_failed, cfg.size_fit, cfg.processing_res) == (True, True, "round", 32)


def test_ctrl_c_says_what_was_kept_instead_of_a_traceback(monkeypatch, capsys):
    import harness.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "latency", interrupted)
    monkeypatch.setitem(cli.COMMANDS, "compare", interrupted)
    assert cli.main(["latency"]) == 130
    assert "interrupted: each finished cell is in the study's cells.jsonl" in capsys.readouterr().err
    assert cli.main(["compare", "a", "b"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"


@pytest.mark.parametrize("argv, message", [
    (["--methods", "constant,constant"], "--methods names constant more than once"),
    (["--datasets", "synthetic,synthetic"], "--datasets names synthetic more than once"),
    (["--methods", ""], "nothing to evaluate"),  # given empty: not the default methods
    (["--eta", "5"], "--eta must lie in [0, 1]"),
    (["--eta", "nan"], "--eta must lie in [0, 1]"),
    (["--device", "gpu0"], "--device 'gpu0' is not a torch device"),
])
def test_settings_that_cannot_run_are_refused_before_the_run_folder_is_claimed(tmp_path, capsys, argv, message):
    defaults = {"--methods": "constant", "--datasets": "synthetic"}
    given = dict(zip(argv[::2], argv[1::2]))
    args = [x for k, v in {**defaults, **given}.items() for x in (k, v)]
    assert main(["run", *args, "--count", "2", "--output", str(tmp_path / "r")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # the corrected command is not blocked by a folder of other settings


def test_cuda_on_a_torch_without_it_is_refused_by_name(tmp_path, capsys, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["run", "--methods", "constant", "--datasets", "synthetic", "--count", "1", "--device", "cuda",
                 "--output", str(tmp_path / "r")]) == 2
    assert "--device cuda: this torch" in capsys.readouterr().err and not (tmp_path / "r").exists()


@pytest.mark.parametrize("content", ["", "[1]", "{not json"])
def test_a_damaged_manifest_in_the_output_folder_is_named_and_left_alone(tmp_path, capsys, content):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "manifest.json").write_text(content)
    assert main(["run", "--methods", "constant", "--datasets", "synthetic", "--count", "1",
                 "--output", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'r' / 'manifest.json'} is damaged" in err and "move that folder away" in err
    assert (tmp_path / "r" / "manifest.json").read_text() == content


@pytest.mark.parametrize("content", ["", "[1]", '{"method": "dpbridge"}'])
def test_a_damaged_checkpoint_config_is_named(tmp_path, capsys, content):
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "trained_config.json").write_text(content)
    assert main(["run", "--methods", "dpbridge_tiny", "--datasets", "synthetic", "--count", "1", "--steps", "1",
                 "--checkpoint", str(tmp_path / "ck"), "--output", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "trained_config.json is damaged" in err and "pass another --checkpoint" in err


def test_a_damaged_train_mean_file_is_named_with_the_command_that_regenerates_it(tmp_path, capsys):
    bad = tmp_path / "mean.safetensors"
    bad.write_bytes(b"\x01" * 64)
    assert main(["run", "--methods", "train_mean", "--datasets", "synthetic", "--count", "1",
                 "--checkpoint", str(bad), "--output", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: not a readable train_mean .safetensors file" in err and "--method train_mean --task depth" in err


def test_settings_a_run_cannot_apply_are_named(tmp_path, capsys):
    """--steps for methods with a fixed step count and --count above a dataset's size change nothing: the run
    says so, and records the steps each method took."""
    assert main(["run", "--methods", "regressor_tiny,constant", "--datasets", "synthetic", "--steps", "3",
                 "--count", "2", "--output", str(tmp_path / "r"), "--quiet"]) == 0
    assert "--steps 3 does not apply to constant (0), regressor_tiny (1)" in capsys.readouterr().err
    rows = (tmp_path / "r" / "summary.csv").read_text().splitlines()
    assert all(",none,0,1,0," in r for r in rows if r.startswith("regressor_tiny,"))  # perturbation, level, steps
    assert main(["run", "--methods", "constant", "--datasets", "synthetic", "--dataset-set", "split=val",
                 "--count", "100000", "--output", str(tmp_path / "all"), "--quiet"]) == 0
    assert "--count 100000: synthetic has 100 samples; all of them are evaluated" in capsys.readouterr().err
