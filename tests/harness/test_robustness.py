import json

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.memory import BatchTooLargeError
from harness.perturb import conditions
from harness.registry import method_class
from harness.robustness import robustness
from harness.run import RunConfig, run
from harness.runio import read_jsonl

CFG = RunConfig(methods=("dpbridge_tiny",), datasets=("synthetic",), steps=1, count=2, batch_size=2)


def count_predictions(monkeypatch, name):
    cls, seen = method_class(name), []
    real = cls.predict

    def spy(self, rgb, gens):
        seen.append(rgb.shape[0])
        return real(self, rgb, gens)

    monkeypatch.setattr(cls, "predict", spy)
    return seen


def test_robustness_rows_table_and_plot_reuse_clean_predictions(tmp_path, monkeypatch):
    out = tmp_path / "r"
    _, clean_summary = run(CFG, str(out), progress=False)
    clean_file = out / "dpbridge_tiny__synthetic" / "pred" / "test__00000.npy"
    clean_bytes = clean_file.read_bytes()

    seen = count_predictions(monkeypatch, "dpbridge_tiny")
    both = conditions(["gaussian", "uniform"], {"gaussian": (0.1,), "uniform": (0.2,)})
    _, summary, table = robustness(CFG, both, str(out), progress=False)
    assert sum(seen) == 4  # 2 images x the 2 noisy cells: the clean ones came from the run's cache
    assert clean_file.read_bytes() == clean_bytes

    noisy = np.load(out / "dpbridge_tiny__synthetic__gaussian-0.1" / "pred" / "test__00000.npy")
    assert not np.array_equal(noisy, np.load(clean_file))
    assert list(zip(table["noise"], table["level"])) == [("none", 0.0), ("gaussian", 0.1), ("uniform", 0.2)]
    assert set(summary["perturbation"]) == {"none", "gaussian", "uniform"}
    key = (summary.perturbation == "none") & (summary.metric == "abs_rel") & (summary.group == "all")
    ref = clean_summary[(clean_summary.metric == "abs_rel") & (clean_summary.group == "all")]
    assert summary[key]["value"].iloc[0] == pytest.approx(ref["value"].iloc[0])
    assert table["synthetic abs_rel"].iloc[0] == pytest.approx(100 * ref["value"].iloc[0])
    tidy = pd.read_csv(out / "robustness.csv")
    assert {"perturbation", "level", "ci_low", "ci_high"} <= set(tidy.columns)
    recorded = json.loads((out / "robustness.json").read_text())
    assert [c["label"] for c in recorded["conditions"]] == ["gaussian-0.1", "uniform-0.2"]
    assert "| uniform | c=0.2 |" in (out / "table4.md").read_text()
    assert (out / "table4.png").read_bytes()[:4] == b"\x89PNG"

    paired = pd.read_csv(out / "paired.csv")
    assert list(zip(paired.noise, paired.metric)) == [("gaussian", "abs_rel"), ("gaussian", "delta1"),
                                                       ("uniform", "abs_rel"), ("uniform", "delta1")]
    clean_rows = read_jsonl(out / "dpbridge_tiny__synthetic" / "rows.jsonl")
    noisy_rows = read_jsonl(out / "dpbridge_tiny__synthetic__gaussian-0.1" / "rows.jsonl")
    by_id = {r["id"]: r["abs_rel"] for r in clean_rows}
    expected = np.mean([r["abs_rel"] - by_id[r["id"]] for r in noisy_rows])
    first = paired.iloc[0]
    assert first.b_minus_a == pytest.approx(expected) and first.n_samples == 2
    assert np.isnan(first.ci_low) and not paired.distinguishable.any()  # 2 images: too few for an interval
    assert paired.distinguishable_holm.dtype == bool


def test_robustness_pairs_each_noisy_cell_with_the_clean_one_on_enough_images(tmp_path):
    from harness.compare import MIN_PAIRED

    cfg = RunConfig(methods=("dpbridge_tiny",), datasets=("synthetic",), steps=1, count=MIN_PAIRED, batch_size=10)
    robustness(cfg, conditions(["gaussian"], {"gaussian": (0.3,)}), str(tmp_path / "r"), progress=False)
    paired = pd.read_csv(tmp_path / "r" / "paired.csv")
    assert (paired.n_samples == MIN_PAIRED).all()
    assert (paired.ci_low <= paired.b_minus_a).all() and (paired.b_minus_a <= paired.ci_high).all()
    assert (paired.p_holm >= paired.p_value).all()


def test_out_of_memory_batch_stops_clearly_and_keeps_finished_work(tmp_path, monkeypatch):
    cfg = RunConfig(methods=("ramp",), datasets=("synthetic",), count=6, batch_size=2)
    cls, calls = method_class("ramp"), []
    real = cls.predict

    def second_batch_too_large(self, rgb, gens):
        calls.append(rgb.shape[0])
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(self, rgb, gens)

    monkeypatch.setattr(cls, "predict", second_batch_too_large)
    out = tmp_path / "oom"
    with pytest.raises(BatchTooLargeError, match=f"--batch-size 1 --output {out}"):
        run(cfg, str(out), progress=False)
    kept = read_jsonl(out / "ramp__synthetic" / "rows.jsonl")
    assert [r["id"] for r in kept] == ["test/00000", "test/00001"]
    assert len(list((out / "ramp__synthetic" / "pred").glob("*.npy"))) == 2

    monkeypatch.setattr(cls, "predict", real)
    smaller = RunConfig(**{**cfg.__dict__, "batch_size": 1})
    _, summary = run(smaller, str(out), progress=False)  # the same folder accepts the smaller batch
    assert json.loads((out / "manifest.json").read_text())["batch_sizes_used"] == [1, 2]
    assert len(read_jsonl(out / "ramp__synthetic" / "rows.jsonl")) == 6
    assert (summary[summary.group == "all"].n_samples == 6).all()


def test_steps_outside_the_schedule_fail_before_any_work(tmp_path):
    for steps, message in ((0, "steps must be >= 1"), (1000, "999")):
        out = tmp_path / f"s{steps}"
        with pytest.raises(ValueError, match=message):
            run(RunConfig(methods=("dpbridge_tiny",), datasets=("synthetic",), steps=steps, count=1), str(out),
                progress=False)
        assert not out.exists()


def test_cli_errors_and_listing(capsys, tmp_path):
    assert main(["robustness", "--noise", "gausian", "--output", str(tmp_path / "x")]) == 2
    assert "Did you mean gaussian" in capsys.readouterr().err
    assert main(["robustness", "--noise", "salt_pepper", "--levels", "salt_pepper=2"]) == 2
    assert "p must lie in (0, 1]" in capsys.readouterr().err
    assert main(["robustness", "--noise", "gaussian", "--levels", "gaussian=0.04", "--levels", "gaussian=0.08",
                 "--output", str(tmp_path / "x")]) == 2
    assert "--levels names gaussian twice; give all its levels in one option" in capsys.readouterr().err
    assert main(["latency", "--steps", "0,10", "--output", str(tmp_path / "l")]) == 2
    assert "step counts >= 1" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "l").exists()
    assert main(["ls", "perturbations"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("gaussian", "uniform", "poisson", "salt_pepper"))


def test_a_later_study_in_the_folder_keeps_the_earlier_conditions_in_table_4(tmp_path, monkeypatch):
    out = tmp_path / "r"
    robustness(CFG, conditions(["gaussian"], {"gaussian": (0.1,)}), str(out), progress=False)
    seen = count_predictions(monkeypatch, "dpbridge_tiny")
    _, summary, table = robustness(CFG, conditions(["poisson"], {"poisson": (25.0,)}), str(out), progress=False)
    assert sum(seen) == 2  # the poisson cell only: the clean and gaussian cells came from the folder's cache
    assert list(zip(table["noise"], table["level"])) == [("none", 0.0), ("gaussian", 0.1), ("poisson", 25.0)]
    assert set(summary["perturbation"]) == {"none", "gaussian", "poisson"}
    recorded = json.loads((out / "robustness.json").read_text())
    assert [c["label"] for c in recorded["conditions"]] == ["gaussian-0.1", "poisson-25"]
    text = (out / "table4.md").read_text()
    assert "| gaussian | sigma=0.1 |" in text and "| poisson | lam=25 |" in text
    assert "settings: seed 0; eta 0; dtype float32; device cpu; size_fit pad" in text
    assert "sample lists (fingerprint)" in text
    assert "methods/weights/dpbridge_tiny_depth" in text
    assert (table["seed"] == "0").all() and table["checkpoints"].str.contains("synthetic: methods/weights").all()
    fingerprint = summary["list_fingerprint"].iloc[0]  # every number with the settings that made it
    assert (table["list_fingerprint"] == f"synthetic: {fingerprint}").all()
    assert (table["alignment"] == "synthetic: least_squares").all()
    assert (table["processing_res"] == "synthetic: 64").all()
    assert (table["aggregation"] == "synthetic: per_image").all() and (table["ensemble_size"] == "1").all()


def test_a_condition_recorded_that_is_no_longer_valid_is_named(tmp_path):
    out = tmp_path / "r"
    robustness(CFG, conditions(["gaussian"], {"gaussian": (0.1,)}), str(out), progress=False)
    path = out / "robustness.json"
    record = json.loads(path.read_text())
    record["conditions"][0]["level"] = 7.0
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="robustness.json lists condition 'gaussian-0.1', which is not valid now"):
        robustness(CFG, conditions(["uniform"]), str(out), progress=False)


def test_a_method_that_serves_no_dataset_is_refused_before_any_work(tmp_path):
    cfg = RunConfig(methods=("dpbridge_tiny", "marigold_tiny"), datasets=("synthetic_normals",), count=1)
    with pytest.raises(ValueError, match="marigold_tiny predicts depth, and none of --datasets"):
        robustness(cfg, conditions(["gaussian"]), str(tmp_path / "r"), progress=False)
    with pytest.raises(ValueError, match="marigold_tiny predicts depth"):
        run(cfg, str(tmp_path / "r"), progress=False)
    assert not (tmp_path / "r").exists()


def test_clean_cells_come_from_a_finished_run_of_more_methods_with_the_same_settings(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    wide = RunConfig(methods=("dpbridge_tiny", "ramp"), datasets=("synthetic",), steps=1, count=2, batch_size=2)
    run(wide, str(runs / "wide"), progress=False)
    run(RunConfig(**{**wide.__dict__, "steps": 2}), str(runs / "other_steps"), progress=False)  # not the same cell
    seen = count_predictions(monkeypatch, "dpbridge_tiny")
    gaussian = conditions(["gaussian"], {"gaussian": (0.1,)})
    _, summary, _ = robustness(CFG, gaussian, str(runs / "study"), progress=False, donors=runs)
    assert sum(seen) == 2  # the noisy cell alone: the clean one was copied
    clean = runs / "study" / "dpbridge_tiny__synthetic"
    assert (clean / "pred" / "test__00000.npy").read_bytes() == \
        (runs / "wide" / "dpbridge_tiny__synthetic" / "pred" / "test__00000.npy").read_bytes()
    origin = json.loads((clean / "copied_from.json").read_text())
    assert origin["run"] == str(runs / "wide") and origin["git_commit"] == \
        json.loads((runs / "wide" / "manifest.json").read_text())["git_commit"]
    # the copy is what the study would have predicted itself
    seen.clear()
    _, alone, _ = robustness(CFG, gaussian, str(tmp_path / "alone"), progress=False, donors=tmp_path / "none")
    assert sum(seen) == 4
    assert (tmp_path / "alone" / "dpbridge_tiny__synthetic" / "pred" / "test__00000.npy").read_bytes() == \
        (clean / "pred" / "test__00000.npy").read_bytes()
    pd.testing.assert_frame_equal(summary, alone)


def test_a_run_of_other_settings_or_unfinished_gives_no_clean_cells(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    run(RunConfig(**{**CFG.__dict__, "methods": ("dpbridge_tiny", "ramp"), "steps": 2}), str(runs / "steps2"),
        progress=False)
    run(RunConfig(**{**CFG.__dict__, "methods": ("dpbridge_tiny", "ramp")}), str(runs / "unfinished"), progress=False)
    (runs / "unfinished" / "summary.csv").unlink()
    seen = count_predictions(monkeypatch, "dpbridge_tiny")
    robustness(CFG, conditions(["gaussian"], {"gaussian": (0.1,)}), str(runs / "study"), progress=False, donors=runs)
    assert sum(seen) == 4 and not (runs / "study" / "dpbridge_tiny__synthetic" / "copied_from.json").exists()


def test_a_cell_is_the_same_when_its_manifest_reads_back_tuples_as_lists():
    from harness.clean_cells import describes_the_same_cell

    record = {"methods": {"m__d": {"steps": 10, "resolution": (64, 64)}}, "datasets": {"d": {"resolution": (64, 64)}}}
    written = json.loads(json.dumps(record))  # as the donor's manifest.json reads back
    assert describes_the_same_cell(record, written, "m__d", "d")
    written["methods"]["m__d"]["steps"] = 20
    assert not describes_the_same_cell(record, written, "m__d", "d")
