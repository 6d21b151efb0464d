"""`run` with benchmark roots: --data-root, one error for every missing root, --skip-missing, manifest records."""
from __future__ import annotations

import json
import warnings

import pandas as pd
import pytest

from datasets.lists import ListMismatchWarning, fingerprint
from depth_fixtures import write_diode
from harness.cli import _dataset_names, main


@pytest.fixture()
def no_roots(tmp_path, monkeypatch):
    """An environment with no dataset roots configured."""
    for key in list(__import__("os").environ):
        if key.startswith(("HARNESS_DATA_", "HARNESS_LIST_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path


def test_missing_roots_fail_together_in_one_message(no_roots, capsys):
    code = main(["run", "--methods", "ramp", "--datasets", "nyuv2,kitti,synthetic", "--quiet",
                 "--output", str(no_roots / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "2 dataset(s) have no data" in err
    assert "nyuv2: no root given" in err and "kitti: no root given" in err and "--data-root kitti=PATH" in err
    assert not (no_roots / "r").exists()


def test_skip_missing_runs_the_rest_and_says_which_were_skipped(no_roots, capsys):
    code = main(["run", "--methods", "ramp", "--datasets", "nyuv2,synthetic", "--skip-missing", "--count", "1",
                 "--quiet", "--output", str(no_roots / "r")])
    out = capsys.readouterr()
    assert code == 0 and "skipped nyuv2: no root given" in out.err
    manifest = json.loads((no_roots / "r" / "manifest.json").read_text())
    assert set(manifest["datasets"]) == {"synthetic"} and list(manifest["skipped_datasets"]) == ["nyuv2"]


def test_data_root_runs_a_benchmark_and_records_its_list(no_roots, capsys):
    written = write_diode(no_roots / "diode" / "val")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ListMismatchWarning)
        code = main(["run", "--methods", "ramp", "--datasets", "diode", "--data-root", f"diode={no_roots / 'diode'}",
                     "--quiet", "--output", str(no_roots / "r")])
    assert code == 0, capsys.readouterr().err
    info = json.loads((no_roots / "r" / "manifest.json").read_text())["datasets"]["diode"]
    assert info["count"] == 3 and info["list_fingerprint"] == fingerprint(written)
    assert info["list_standard"] == "NOT STANDARD" and info["root"] == str(no_roots / "diode")
    assert info["protocol"]["clip_min"] == 0.6 and info["protocol"]["processing_res"] == 640
    summary = pd.read_csv(no_roots / "r" / "summary.csv")
    assert set(summary["group"]) == {"all", "indoor", "outdoor"}
    assert set(summary["list_fingerprint"]) == {fingerprint(written)}
    assert f"diode `{fingerprint(written)}`" in (no_roots / "r" / "summary.md").read_text()


def test_datasets_all_lists_the_benchmarks():
    assert {"nyuv2", "kitti", "eth3d", "scannet", "diode", "synthetic"} <= set(_dataset_names("all"))
