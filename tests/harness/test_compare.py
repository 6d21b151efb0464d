import json
import numpy as np
import pandas as pd
import pytest

from harness.compare import MIN_PAIRED, compare, paired_difference
from harness.run import RunConfig, run
from harness.runio import read_jsonl


def test_paired_difference_of_identical_rows_is_zero_and_not_distinguishable():
    rng = np.random.default_rng(0)
    a = pd.DataFrame({m: rng.random(20) + 0.1 for m in ["abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "delta1",
                                                         "delta2", "delta3", "i_rmse", "silog"]})
    out = pd.DataFrame(paired_difference(a, a.copy(), "depth"))
    assert (out.b_minus_a == 0).all() and not out.distinguishable.any() and (out.p_value == 1).all()


def test_a_consistent_improvement_is_distinguishable_and_signed():
    rng = np.random.default_rng(1)
    base = rng.random(30) + 0.5
    cols = ["abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "delta1", "delta2", "delta3", "i_rmse", "silog"]
    a = pd.DataFrame({m: base for m in cols})
    b = pd.DataFrame({m: base - 0.1 + 0.01 * rng.standard_normal(30) for m in cols})
    out = pd.DataFrame(paired_difference(a, b, "depth")).set_index("metric")
    assert out.loc["abs_rel", "b_minus_a"] == pytest.approx(-0.1, abs=0.01)
    assert out.loc["abs_rel", "distinguishable"] and out.loc["abs_rel", "ci_high"] < 0
    assert out.loc["abs_rel", "p_value"] < 1e-10  # a shift of 10 standard errors


def test_pooled_normals_difference_uses_ratios_of_sums():
    a = pd.DataFrame({"sum_err": [10.0, 30.0], "n_valid": [1, 3], **{f"below_{k}": [0, 3] for k in
                                                                     ["a5", "a7_5", "a11_25", "a22_5", "a30"]}})
    b = a.copy()
    b["sum_err"] = [10.0, 0.0]
    out = pd.DataFrame(paired_difference(a, b, "normals")).set_index("metric")
    assert out.loc["mean", "a"] == pytest.approx(10.0) and out.loc["mean", "b"] == pytest.approx(2.5)


def test_compare_two_methods_of_one_run(tmp_path):
    cfg = RunConfig(methods=("constant", "ramp"), datasets=("synthetic",), count=2 * MIN_PAIRED)
    folder, _ = run(cfg, str(tmp_path / "r"), progress=False)
    table = compare(folder, folder, "constant", "ramp")
    row = table[table.group == "all"].set_index("metric").loc["abs_rel"]
    assert row["n_samples"] == 2 * MIN_PAIRED and row["method_a"] == "constant" and row["method_b"] == "ramp"
    # each sample group (the summary's indoor / outdoor) is compared on its own samples, as Table 3's columns
    cells = {c: {r["id"]: r for r in read_jsonl(folder / f"{c}__synthetic" / "rows.jsonl")}
             for c in ("constant", "ramp")}
    by_group = table[table.metric == "abs_rel"].set_index("group")
    assert set(by_group.index) == {"all", "indoor", "outdoor"}
    assert by_group.loc["indoor", "n_samples"] + by_group.loc["outdoor", "n_samples"] == 2 * MIN_PAIRED
    for group in ("indoor", "outdoor"):
        ids = [i for i, r in cells["ramp"].items() if r["group"] == group]
        diff = np.mean([cells["ramp"][i]["abs_rel"] - cells["constant"][i]["abs_rel"] for i in ids])
        assert by_group.loc[group, "b_minus_a"] == pytest.approx(diff)
    # Holm over every row of the comparison: never below the row's own p; it can only take lines away
    tested = table.dropna(subset=["p_value"])
    assert len(tested) == len(table[table.n_samples >= MIN_PAIRED]) > 0 and (tested.p_holm >= tested.p_value).all()
    assert (table.distinguishable_holm == ((table.p_holm < 0.05) & table.distinguishable)).all()
    with pytest.raises(ValueError, match="name one with --method-a"):
        compare(folder, folder)


def test_compare_names_each_side_s_settings_and_refuses_unfinished_or_different_images(tmp_path):
    base = dict(methods=("ramp",), datasets=("synthetic",), count=4)
    a, _ = run(RunConfig(**base), str(tmp_path / "a"), progress=False)
    b, _ = run(RunConfig(**base, seed=1), str(tmp_path / "b"), progress=False)
    table = compare(a, b)
    row = table[table.group == "all"].set_index("metric").loc["abs_rel"]
    assert (row["run_a"], row["run_b"], row["seed_a"], row["seed_b"]) == (str(a), str(b), 0, 1)
    assert row["steps_a"] == row["steps_b"] == 0 and row["checkpoint_a"] == "-"
    assert (row["alignment_a"], row["device_a"]) == ("least_squares", "cpu")
    assert row["unit"] == "fraction (papers print x100)"
    assert row["processing_res_a"] == row["processing_res_b"] and row["list_fingerprint_a"] == row["list_fingerprint_b"]
    assert row["git_commit_a"] == json.loads((a / "manifest.json").read_text())["git_commit"]

    other, _ = run(RunConfig(**base, dataset_args={"synthetic": {"seed": "5"}}), str(tmp_path / "w"), progress=False)
    with pytest.raises(ValueError, match=r"read synthetic with different settings \(seed: 0 -> 5\)"):
        compare(a, other)  # the same ids test/00000.. name another world's images
    (b / "summary.csv").unlink()  # as if killed before the end
    with pytest.raises(ValueError, match="unfinished run"):
        compare(a, b)


def test_a_damaged_manifest_is_named_with_the_fix(tmp_path, capsys):
    from harness.cli import main

    folder, _ = run(RunConfig(methods=("constant", "ramp"), datasets=("synthetic",), count=2), str(tmp_path / "r"),
                    progress=False)
    (folder / "manifest.json").write_text('{"methods": ')  # as a hand edit or a damaged disk would leave it
    assert main(["compare", str(folder), str(folder), "--method-a", "constant", "--method-b", "ramp"]) == 2
    err = capsys.readouterr().err
    assert f"{folder / 'manifest.json'} is damaged (not valid JSON" in err and "with a new --output" in err


def test_the_cli_does_not_replace_an_existing_csv(tmp_path, capsys):
    from harness.cli import main

    folder, _ = run(RunConfig(methods=("constant", "ramp"), datasets=("synthetic",), count=4), str(tmp_path / "r"),
                    progress=False)
    out = tmp_path / "diff.csv"
    args = ["compare", str(folder), str(folder), "--method-a", "constant", "--method-b", "ramp", "--output", str(out)]
    assert main(args) == 0 and pd.read_csv(out)["run_a"].eq(str(folder)).all()
    printed = capsys.readouterr().out
    assert f"settings of both sides: run {folder}; variant default" in printed and "settings that differ" not in printed
    out.write_text("mine\n")
    assert main(args) == 2 and out.read_text() == "mine\n" and "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0 and "b_minus_a" in out.read_text()
    assert main(args[:-1] + [str(tmp_path), "--overwrite"]) == 2  # a folder: refused, nothing left behind
    assert "is a folder; name the file to write" in capsys.readouterr().err
    assert not list(tmp_path.glob(".*tmp*"))


def test_fewer_than_min_paired_samples_give_no_interval_even_for_a_consistent_shift():
    cols = ["abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "delta1", "delta2", "delta3", "i_rmse", "silog"]
    base = np.random.default_rng(2).random(MIN_PAIRED) + 0.5
    a = pd.DataFrame({m: base for m in cols})
    b = a - 0.01  # every image better: a percentile interval of 2-19 images would exclude zero
    few = pd.DataFrame(paired_difference(a.iloc[:-1], b.iloc[:-1], "depth"))
    assert few[["ci_low", "ci_high", "p_value"]].isna().all().all() and not few.distinguishable.any()
    enough = pd.DataFrame(paired_difference(a, b, "depth"))
    assert enough.distinguishable.all()


def test_the_interval_does_not_depend_on_the_order_rows_were_written(tmp_path):
    folder, _ = run(RunConfig(methods=("constant", "ramp"), datasets=("synthetic",), count=MIN_PAIRED),
                    str(tmp_path / "r"), progress=False)
    before = compare(folder, folder, "constant", "ramp")
    rows = folder / "ramp__synthetic" / "rows.jsonl"
    rows.write_text("".join(reversed(rows.read_text().splitlines(keepends=True))))  # as a resumed run may write
    after = compare(folder, folder, "constant", "ramp")
    pd.testing.assert_frame_equal(before[["ci_low", "ci_high", "p_value"]], after[["ci_low", "ci_high", "p_value"]])


def test_one_shared_sample_gives_no_interval_and_nothing_distinguishable(tmp_path):
    folder, _ = run(RunConfig(methods=("constant", "ramp"), datasets=("synthetic",), count=1), str(tmp_path / "r"),
                    progress=False)
    table = compare(folder, folder, "constant", "ramp")
    assert table["ci_low"].isna().all() and table["ci_high"].isna().all() and not table["distinguishable"].any()
    assert (table["b_minus_a"] != 0).any()


def test_runs_of_other_counts_are_refused_for_their_samples_not_their_images(tmp_path):
    a, _ = run(RunConfig(methods=("ramp",), datasets=("synthetic",), count=2), str(tmp_path / "a"), progress=False)
    b, _ = run(RunConfig(methods=("ramp",), datasets=("synthetic",), count=3), str(tmp_path / "b"), progress=False)
    with pytest.raises(ValueError, match=r"scored different samples \(2 vs 3, 2 shared\)"):
        compare(a, b)


def test_a_named_method_absent_from_a_shared_dataset_leaves_that_dataset_out(tmp_path):
    both = ("synthetic", "synthetic_normals")
    a, _ = run(RunConfig(methods=("marigold_tiny", "ramp"), datasets=both, steps=1, count=2), str(tmp_path / "a"),
               progress=False)
    table = compare(a, a, "marigold_tiny", "ramp")
    assert set(table["dataset"]) == {"synthetic"}
    assert table.attrs["skipped"] == [f"synthetic_normals (marigold_tiny not in {a} there)"]


def test_pooled_normals_rmse_is_the_root_of_the_pooled_squares():
    a = pd.DataFrame({"sum_err": [10.0, 30.0], "sum_sq_err": [100.0, 300.0], "n_valid": [1, 3],
                      **{f"below_{k}": [0, 3] for k in ["a5", "a7_5", "a11_25", "a22_5", "a30"]}})
    out = pd.DataFrame(paired_difference(a, a.copy(), "normals")).set_index("metric")
    assert out.loc["rmse", "a"] == pytest.approx(10.0) and out.loc["rmse", "b_minus_a"] == 0
    assert out.loc["a30", "unit"] == "%" and "median" not in out.index
