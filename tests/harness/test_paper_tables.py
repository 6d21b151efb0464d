"""Published tables (results/paper/*.csv), Avg. Rank (math.md section 7) and the `tables` subcommand."""
import math
import re

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.paper_tables import load_published, paper_table
from harness.ranks import avg_rank, column_ranks, format_rank


def printed_ranks(n):
    table = load_published(n)
    return avg_rank(table), table.drop_duplicates("method").set_index("method")["printed_avg_rank"]


def test_every_printed_avg_rank_of_table_1_is_recomputed_from_its_entries():
    ranks, printed = printed_ranks(1)
    assert len(ranks) == 15
    assert {m: format_rank(r) for m, r in ranks.items()} == {m: f"{p:.1f}" for m, p in printed.items()}


def test_table_2_matches_except_the_documented_rounding_case():
    ranks, printed = printed_ranks(2)
    assert len(ranks) == 9
    mismatched = [m for m in ranks.index if float(format_rank(ranks[m])) != printed[m]]
    assert mismatched == ["DPBridge (SD1.5)"]
    assert ranks["DPBridge (SD1.5)"] == 7.25 and printed["DPBridge (SD1.5)"] == 7.3  # exact; the paper rounds up
    assert ranks["DSINE"] == 3.25 and printed["DSINE"] == 3.2  # exact; the paper rounds down
    assert format_rank(7.25, rounding="half_up") == "7.3" and format_rank(3.25) == "3.2"


def test_competition_ranking_shares_the_best_rank_and_follows_each_metric_direction():
    wide = pd.DataFrame({"d/abs_rel": [1.0, 2.0, 2.0, 3.0], "d/delta1": [90.0, 95.0, 95.0, 80.0]},
                        index=["a", "b", "c", "d"])
    ranks = column_ranks(wide)
    assert ranks["d/abs_rel"].tolist() == [1, 2, 2, 4]  # lower is better
    assert ranks["d/delta1"].tolist() == [3, 1, 1, 4]  # higher is better
    assert avg_rank(wide).tolist() == [2.0, 1.5, 1.5, 4.0]


def test_missing_cells_are_skipped_not_ranked_last():
    tidy = pd.DataFrame({"method": ["a", "a", "b", "b", "c"], "dataset": ["x", "y", "x", "y", "x"],
                         "metric": ["mean", "a11_25", "mean", "a11_25", "mean"],
                         "value": [10.0, 50.0, 12.0, 60.0, 9.0]})
    ranks = avg_rank(tidy)
    assert ranks["c"] == 1.0  # ranked on its one cell only
    assert ranks["a"] == (2 + 2) / 2 and ranks["b"] == (3 + 1) / 2


def fake_run(folder, method, values):
    """A hand-built run folder: summary.csv rows with the tidy columns a run writes (fractions for depth)."""
    folder.mkdir(parents=True)
    rows = [{"method": method, "variant": "default", "dataset": d, "group": g, "task": t, "perturbation": "none",
             "level": 0, "steps": 50, "metric": m, "value": v, "ci_low": np.nan, "ci_high": np.nan}
            for (d, t, m, v) in values for g in ("all", "indoor")]
    pd.DataFrame(rows).to_csv(folder / "summary.csv", index=False)
    return folder


BEST_DEPTH = [(d, "depth", m, v) for d in ("nyuv2", "kitti", "eth3d", "scannet", "diode")
              for m, v in (("abs_rel", 0.01), ("delta1", 0.999))]


def test_a_measured_row_is_ranked_jointly_with_the_published_ones(tmp_path):
    summary = pd.read_csv(fake_run(tmp_path / "run", "oracle", BEST_DEPTH) / "summary.csv")
    before = paper_table(1).set_index("method")
    after = paper_table(1, summary).set_index("method")
    row = after.loc["oracle (measured)"]
    assert row["source"] == "measured" and row["nyuv2/abs_rel"] == pytest.approx(1.0)
    assert row["nyuv2/delta1"] == pytest.approx(99.9) and row["avg_rank"] == 1.0  # rank 1 in every column
    assert math.isnan(row["printed_avg_rank"])
    published = after[after["source"] == "published"]
    assert published["avg_rank"].tolist() == pytest.approx((before["avg_rank"] + 1).tolist())  # all move down one
    assert (published["printed_avg_rank"] == before["printed_avg_rank"]).all()


def test_published_csvs_have_the_expected_rows():
    t1, t2, t3, t4 = (load_published(n) for n in (1, 2, 3, 4))
    assert t1["method"].nunique() == 15 and len(t1) == 15 * 10 - 4
    assert set(t1[t1["method"] == "DepthFM"]["dataset"]) == {"nyuv2", "kitti", "diode"}
    assert t2["method"].nunique() == 9 and len(t2) == 9 * 8 - 2
    assert "scannet_normals" not in set(t2[t2["method"] == "EESNU"]["dataset"])
    assert len(t3) == 5 * 4 and t3.drop_duplicates("row")[["ft", "dan", "ic"]].sum().tolist() == [4, 3, 3]
    assert len(t4) == 13 * 8 and t4.drop_duplicates("row")["noise"].value_counts().to_dict() == {
        "gaussian": 4, "uniform": 4, "poisson": 2, "salt_pepper": 2, "none": 1}
    assert (t1["scale"] == "x100").all() and t1.set_index(["method", "dataset", "metric"]).loc[
        ("DPBridge (SD1.5)", "nyuv2", "abs_rel"), "value"] == 6.9


def test_cli_writes_the_four_tables_with_a_measured_run(tmp_path, capsys):
    run = fake_run(tmp_path / "run", "dpbridge_tiny", BEST_DEPTH[:2] + [("nyuv2_normals", "normals", "mean", 9.0)])
    out = tmp_path / "tables"
    assert main(["tables", str(run), "--output", str(out)]) == 0
    for n in (1, 2, 3, 4):
        assert (out / f"table{n}.md").is_file() and (out / f"table{n}.csv").is_file()
    printed = capsys.readouterr().out
    assert "| dpbridge_tiny (measured) | measured | - | 1.0* | 99.9* |" in printed
    table2 = pd.read_csv(out / "table2.csv")
    assert table2["source"].tolist() == ["published"] * 9 + ["measured"]
    assert main(["tables", str(tmp_path / "missing"), "--output", str(out)]) == 2


def test_cli_without_runs_writes_the_published_tables_with_both_ranks(tmp_path, capsys):
    assert main(["tables", "--output", str(tmp_path)]) == 0
    table1 = pd.read_csv(tmp_path / "table1.csv")
    assert len(table1) == 15 and (table1["source"] == "published").all()
    assert (table1["avg_rank"].map(format_rank).astype(float) == table1["printed_avg_rank"]).all()
    assert "| DPBridge (SD1.5) | published | BM | 18.1 |" in (tmp_path / "table2.md").read_text()


def test_tables_name_the_measured_settings_refuse_to_overwrite_and_name_runs_they_leave_out(tmp_path, capsys):
    run = fake_run(tmp_path / "run", "dpbridge_tiny", BEST_DEPTH[:2])
    summary = pd.read_csv(run / "summary.csv").assign(seed=3, checkpoint="ckpt/x", n_samples=8)
    summary.to_csv(run / "summary.csv", index=False)
    tiny = fake_run(tmp_path / "tiny", "dpbridge_tiny", [("synthetic", "depth", "abs_rel", 0.2)])
    out = tmp_path / "tables"
    assert main(["tables", str(run), str(tiny), "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert "run tiny: none of its datasets and metrics is in Tables 1-4" in err and "run run:" not in err
    table1 = (out / "table1.md").read_text()
    assert "- run / dpbridge_tiny / default / 50: seed 3" in table1 and "checkpoint ckpt/x" in table1
    assert "nyuv2 n=8" in table1
    before = (out / "table1.csv").read_text()
    assert main(["tables", "--output", str(out)]) == 2  # a second call would lose the measured rows
    assert "pass --overwrite" in capsys.readouterr().err and (out / "table1.csv").read_text() == before
    assert main(["tables", "--output", str(out), "--overwrite"]) == 0
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "summary.csv").write_text("")
    assert main(["tables", str(tmp_path / "empty"), "--output", str(tmp_path / "t2")]) == 2
    assert "empty" in capsys.readouterr().err


@pytest.mark.parametrize("text, refusal", [("dataset,value\nnyuv2,0.1\n", r"lacks the column\(s\) method, metric"),
                                           ("method,dataset,metric,value\n", "holds no rows"),
                                           ("method,dataset\nm,d\nm,d,x,y,z\n", "is not a summary CSV")])
def test_a_summary_the_tables_cannot_read_is_named_with_the_fix(tmp_path, capsys, text, refusal):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "summary.csv").write_text(text)
    assert main(["tables", str(tmp_path / "r"), "--output", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "r" / "summary.csv") in err and re.search(refusal, err)


def test_measured_labels_are_qualified_only_by_what_tells_them_apart():
    from harness.paper_tables import _labels

    entries = pd.DataFrame({"method": ["m", "m", "m"], "variant": ["default"] * 3, "steps": [10, 10, 50],
                            "run": ["a", "b", "a"]})
    assert _labels(entries) == ["m (measured, steps=10, run=a)", "m (measured, steps=10, run=b)",
                                "m (measured, steps=50)"]
    same_steps = entries.assign(steps=10).iloc[:2]
    assert _labels(same_steps) == ["m (measured, run=a)", "m (measured, run=b)"]
