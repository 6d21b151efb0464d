"""`ablate`: missing checkpoints named with their command, --train regenerates them, Table 3 from run folders."""
import json
import sys
from pathlib import Path

import pytest

import methods.trained as trained_mod
from harness.ablate import AblateConfig, ablate, missing_checkpoints

CFG = AblateConfig(variants=("full", "ft"), baselines=("i2sb",), reference=False, steps=(1, 2), count=2,
                   iterations=1, batch_size=2)
SD_DIR = Path(__file__).resolve().parents[1] / "methods"
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
    commit = json.loads((folder / "steps1" / "ft" / "manifest.json").read_text())["git_commit"]  # the row's code
    assert set(table[table.row == "ft"].git_commit) == {commit} and f"commit {commit[:7]}" in md
    # the paper's claims as paired comparisons of the rows present; the others are named as not measured
    import pandas as pd

    claims = pd.read_csv(folder / "claims.csv")
    assert set(zip(claims.row_a, claims.row_b)) == {("i2sb", "full")} and set(claims.steps) == {1, 2}
    assert claims.b_minus_a.notna().all()  # 2 images (and one per group): too few for an interval (compare.py)
    assert claims.ci_low.isna().all() and not claims.distinguishable.any() and not claims.distinguishable_holm.any()
    assert set(claims.group) == {"all", "indoor", "outdoor"}
    text = (folder / "claims.md").read_text()
    assert "| 2 | all | DPBridge beats I2SB" in text and "| 2 | outdoor | DPBridge beats I2SB" in text
    assert "not measured: DAN helps, with image consistency" in text
    assert "caveat: rows ft, full output v" in text  # their DAN claims test the UNet's input only
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


def test_the_grid_at_scale_starts_from_the_paper_defaults(tmp_path, monkeypatch):
    """dpbridge_sd21's grid: variants overlay the paper's defaults (eps, pixel IC) and keep the backbone; its rows
    train on HyperSim + Virtual KITTI with the method's preset and are scored on NYUv2 and KITTI."""
    sys.path.insert(0, str(SD_DIR))
    from sd_fixtures import write_tiny_sd

    import methods.dpbridge_sd as dpbridge_sd
    from harness.ablate import checkpoint_of, train_command
    from harness.trainables import trained_method_config

    backbone = write_tiny_sd(tmp_path / "sd21")
    monkeypatch.setattr(dpbridge_sd, "CHECKPOINT_ROOT", tmp_path / "checkpoints")
    cfg = AblateConfig(method="dpbridge_sd21", backbone=str(backbone), variants=("ft",))
    assert cfg.dataset_names() == ("nyuv2", "kitti") and cfg.baseline_rows() == () and cfg.budget() is None
    assert checkpoint_of("dpbridge_sd21[ft]") == tmp_path / "checkpoints" / "dpbridge_sd21_depth_ft"
    assert train_command("dpbridge_sd21[ft]", cfg) == (f"python -m harness train --method dpbridge_sd21 --task depth "
                                                       f"--variant ft --datasets hypersim,vkitti --backbone {backbone}")
    method_cfg, export = trained_method_config("dpbridge_sd21", "depth", "ft", [], str(backbone))
    assert (method_cfg.parameterization, method_cfg.dan, method_cfg.image_consistency) == ("eps", "off", "off")
    assert method_cfg.backbone == str(backbone) and method_cfg.processing_res == 768
    assert export == tmp_path / "checkpoints" / "dpbridge_sd21_depth_ft"
    full, _ = trained_method_config("dpbridge_sd21", "depth", "full", [], str(backbone))
    assert (full.parameterization, full.image_consistency, full.ic_max_k) == ("eps", "pixel", 759)
    from methods.dpbridge import DPBridgeTiny

    assert "ic_latent" in dpbridge_sd.DPBridgeSD21.spec_options and "ic_pixel" not in dpbridge_sd.DPBridgeSD21.spec_options
    assert "ic_pixel" in DPBridgeTiny.spec_options and "ic_latent" not in DPBridgeTiny.spec_options  # = full there
    with pytest.raises(ValueError, match="baselines i2sb are tiny-world models"):
        AblateConfig(method="dpbridge_sd21", baselines=("i2sb",)).baseline_rows()
    with pytest.raises(FileNotFoundError, match="dpbridge_sd21_depth_ft"):
        ablate(cfg, str(tmp_path / "out"))

    import harness.train
    from harness.ablate import regenerate, training_sets
    from harness.cli import training_roots_apart

    assert training_sets(cfg) == {"hypersim", "vkitti"} and training_sets(AblateConfig()) == set()
    given = ["nyuv2=/d/nyu", "hypersim=/d/hs", "vkitti=/d/vk"]
    assert training_roots_apart(given, training_sets(cfg), cfg.dataset_names()) == (
        ["nyuv2=/d/nyu"], {"hypersim": "/d/hs", "vkitti": "/d/vk"})  # the rest goes on to the benchmarks' check
    assert training_roots_apart(given, set(), cfg.dataset_names()) == (given, {})  # without --train: refused there
    calls = []
    monkeypatch.setattr(harness.train, "train", lambda m, c, command, method_name, data_roots: calls.append(
        (c.datasets, data_roots)))
    regenerate(["dpbridge_sd21[ft]"], cfg, train_roots={"hypersim": "/d/hs", "vkitti": "/d/vk"})
    assert calls == [("hypersim,vkitti", {"hypersim": "/d/hs", "vkitti": "/d/vk"})]  # the preset's sets, their roots


@pytest.mark.parametrize("argv, message", [
    (["--method", "dpbridge_tinny"], "unknown method 'dpbridge_tinny'"),  # before it asks for NYUv2's data
    (["--steps", "10,abc"], "--steps takes comma-separated integers, got '10,abc'"),
    (["--steps", "0"], "--steps must list step counts >= 1"),
    (["--count", "-3"], "--count must be >= 1"),
    (["--iterations", "-5"], "--iterations must be >= 1"),
    (["--baselines", "constant"], "--baselines constant: not a trained tiny-world model"),
    (["--variants", "full,full"], "--variants names full more than once"),
    (["--steps", "1,1"], "--steps names 1 more than once"),
    (["--method", "i2sb"], "i2sb offers no ablation variants")])
def test_bad_arguments_are_refused_before_any_work(argv, message, tmp_path, capsys):
    from harness.cli import main

    assert main(["ablate", "--output", str(tmp_path / "a"), *argv]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "a").exists()


def test_a_grid_without_a_pair_to_compare_still_writes_its_claims_file():
    import pandas as pd

    from harness.claims import CLAIM_COLUMNS, claims_markdown

    skipped = ["DAN helps at 1 steps: rows ft / full not evaluated"]
    text = claims_markdown(pd.DataFrame(columns=list(CLAIM_COLUMNS)), skipped)
    assert text.startswith("| steps | claim") and "not measured: DAN helps" in text


def test_the_dan_caveat_follows_the_rows_parameterisation(tmp_path):
    from harness.claims import dan_caveats

    for row, parameterization in (("full", "eps"), ("ft_ic", "eps"), ("i2sb", "v")):
        (tmp_path / "steps10" / row).mkdir(parents=True)
        manifest = {"methods": {"m__synthetic": {"method_config": {"parameterization": parameterization}}}}
        (tmp_path / "steps10" / row / "manifest.json").write_text(json.dumps(manifest))
    assert dan_caveats(tmp_path, (10,)) == []  # eps rows (i2sb is not a DAN row)
    manifest["methods"]["m__synthetic"]["method_config"]["parameterization"] = "v"
    (tmp_path / "steps10" / "ft_ic" / "manifest.json").write_text(json.dumps(manifest))
    assert dan_caveats(tmp_path, (10,)) == [dan_caveats.__globals__["V_OUTPUT_DAN_CAVEAT"].format(rows="ft_ic")]


SHIPPED_ROWS = ["--baselines", "none", "--no-reference", "--count", "2", "--steps", "1", "--batch-size", "2", "--quiet"]


def test_claims_use_only_the_rows_of_this_call_and_skip_missing_datasets_are_left_out(tmp_path, capsys,
                                                                                      monkeypatch):
    import pandas as pd

    from harness.cli import main

    monkeypatch.delenv("HARNESS_DATA_NYUV2", raising=False)
    monkeypatch.setenv("HARNESS_DATA_CONFIG", str(tmp_path / "none.conf"))
    out = str(tmp_path / "a")
    assert main(["ablate", "--variants", "full,dan_b", "--output", out, *SHIPPED_ROWS]) == 0
    assert set(pd.read_csv(tmp_path / "a" / "claims.csv").row_a) == {"dan_b"}
    argv = ["ablate", "--variants", "full", "--datasets", "synthetic,nyuv2", "--skip-missing", "--output", out]
    assert main(argv + SHIPPED_ROWS) == 0  # nyuv2 has no data here: skipped, not refused
    assert "skipped nyuv2" in capsys.readouterr().err
    assert pd.read_csv(tmp_path / "a" / "claims.csv").empty  # dan_b's folder is from the call before
    assert "not measured: DAN-A beats DAN-B (open choice) at 1 steps" in (tmp_path / "a" / "claims.md").read_text()


@pytest.mark.parametrize("setting, full, dan_b, said", [("seed", 0, 1, "seed: 1 -> 0"),
                                                        ("size_fit", "pad", "round", "size_fit: round -> pad")])
def test_a_claim_between_rows_of_different_settings_is_refused(tmp_path, setting, full, dan_b, said):
    from harness.claims import claims
    from harness.run import RunConfig, run

    for row, value in (("full", full), ("dan_b", dan_b)):
        cfg = RunConfig(methods=(f"dpbridge_tiny[{row}]",), datasets=("synthetic",), steps=1, count=2,
                        **{setting: value})
        run(cfg, str(tmp_path / "steps1" / row), progress=False)
    with pytest.raises(ValueError, match=rf"different settings \({said}\)"):
        claims(tmp_path, (1,))


def test_claims_of_several_datasets_each_get_their_line():
    import pandas as pd

    from harness.claims import CLAIM_COLUMNS, claims_markdown

    rows = [{"steps": 10, "claim": "DAN helps", "row_a": "ft", "row_b": "ft_dan", "dataset": d, "metric": m,
             "a": 0.1, "b": b, "b_minus_a": b - 0.1, "ci_low": b - 0.11, "ci_high": b - 0.09, "b_better": b < 0.1,
             "distinguishable": True} for d, b in (("nyuv2", 0.05), ("kitti", 0.2)) for m in ("abs_rel", "delta1")]
    text = claims_markdown(pd.DataFrame(rows, columns=list(CLAIM_COLUMNS)), [])  # no group: all samples
    assert "| steps | subset | claim" in text
    assert "| 10 | nyuv2 | DAN helps (ft -> ft_dan) | 10.0 / 5.0 |" in text
    assert "| 10 | kitti | DAN helps (ft -> ft_dan) | 10.0 / 20.0 |" in text
    one = [{**r, "dataset": "synthetic", "group": g} for r, g in zip(rows, ("all", "all", "indoor", "indoor"))]
    text = claims_markdown(pd.DataFrame(one, columns=list(CLAIM_COLUMNS)), [])  # one dataset, its groups
    assert "| 10 | all | DAN helps (ft -> ft_dan) | 10.0 / 5.0 |" in text
    assert "| 10 | indoor | DAN helps (ft -> ft_dan) | 10.0 / 20.0 |" in text
    assert "synthetic" not in text


def test_the_rows_carry_the_sampler_and_device_settings_given(tmp_path):
    import pandas as pd

    from harness.cli import main

    argv = ["ablate", "--variants", "full", "--eta", "0.3", "--processing-res", "32", "--output", str(tmp_path / "a")]
    assert main(argv + SHIPPED_ROWS) == 0
    table = pd.read_csv(tmp_path / "a" / "table3.csv")
    assert set(table.eta) == {0.3} and set(table.processing_res) == {32} and set(table.dtype) == {"float32"}
    assert set(table.device) == {"cpu"}
    assert "eta 0.3, dtype float32, device cpu" in (tmp_path / "a" / "table3.md").read_text()


def test_every_row_records_the_commit_the_call_started_from(tmp_path, monkeypatch):
    import pandas as pd

    import harness.manifest
    from harness.cli import main

    commits = iter(["c0"] + [f"c{i}+dirty" for i in range(1, 20)])  # the tree edited while the rows run
    monkeypatch.setattr(harness.manifest, "git_commit", lambda: next(commits))
    argv = ["ablate", "--variants", "full,dan_b", "--output", str(tmp_path / "a"), *SHIPPED_ROWS, "--steps", "1,2"]
    assert main(argv) == 0  # four run folders, each started after the one before
    table = pd.read_csv(tmp_path / "a" / "table3.csv")
    assert len(set(zip(table.row, table.steps))) == 4 and set(table.git_commit) == {"c0"}
    assert "commit c0;" in (tmp_path / "a" / "table3.md").read_text()


def test_a_claim_between_rows_of_different_budgets_carries_a_caveat():
    import pandas as pd

    from harness.claims import budget_caveats

    found = pd.DataFrame({"row_a": ["ft_ic", "ft_ic", "i2sb"], "row_b": ["full", "full", "full"],
                          "claim": ["DAN helps", "DAN helps", "DPBridge beats I2SB"]})  # two metrics of one claim
    assert budget_caveats(found, {"ft_ic": 1000, "full": 1000, "i2sb": 1000}) == []
    notes = budget_caveats(found, {"ft_ic": 1000, "full": 1000, "i2sb": 500})
    assert notes == ["caveat: DPBridge beats I2SB: i2sb was trained for 500 iterations and full for 1000, so this "
                     "claim does not compare equal budgets (retrain one of them with --set iterations=N)"]
    assert budget_caveats(found.iloc[:0], {}) == []


def test_claims_give_each_verdict_alone_and_after_holm_over_the_table():
    import pandas as pd

    from harness.claims import CLAIM_COLUMNS, claims_markdown
    from harness.multiplicity import with_holm

    def line(claim, b, p):  # B lower in AbsRel and higher in delta1, each interval excluding 0
        return [{"steps": 10, "claim": claim, "row_a": "ft", "row_b": "full", "dataset": "synthetic", "group": "all",
                 "metric": m, "a": 0.3, "b": v, "b_minus_a": v - 0.3, "ci_low": v - 0.3 - abs(v - 0.3) / 2,
                 "ci_high": v - 0.3 + abs(v - 0.3) / 2, "b_better": True, "distinguishable": True, "p_value": q,
                 "n_samples": 100, "seed": 0, "eta": 0.0}
                for m, v, q in (("abs_rel", b, p[0]), ("delta1", 0.6 - b, p[1]))]

    rows = line("clear", 0.2, (1e-6, 1e-6)) + line("marginal", 0.29, (0.03, 0.04))
    table = with_holm(pd.DataFrame(rows))[list(CLAIM_COLUMNS)]
    text = claims_markdown(table, [])
    assert "| holds? | after Holm |" in text
    assert "clear (ft -> full)" in text and text.split("clear (ft -> full)")[1].split("\n")[0].endswith("| yes | yes |")
    # Holm: 0.03 x 2 = 0.06 and 0.04 x 1 -> 0.06: the marginal line no longer stands
    marginal = text.split("marginal (ft -> full)")[1].split("\n")[0]
    assert marginal.endswith("| yes | not distinguishable |")
    assert "corrects over all 4 tests" in text and "1 of 2 lines change" in text
    old = table.drop(columns=["p_value", "p_holm", "distinguishable_holm"])  # a claims.csv from before the column
    text = claims_markdown(old, [])
    assert text.split("marginal (ft -> full)")[1].split("\n")[0].endswith("| yes | - |") and "Holm" not in \
        text.split("\n- ")[-1]
