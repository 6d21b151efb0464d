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


def test_dataset_set_names_the_settings_a_dataset_takes():
    with pytest.raises(SystemExit, match="synthetic takes split, seed, height, width"):
        main(["run", "--datasets", "synthetic", "--dataset-set", "max_depth=3"])
    with pytest.raises(SystemExit, match="applies to datasets named with a folder"):
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
