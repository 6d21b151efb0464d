import pandas as pd
import pytest
import torch

from harness.cli import main
from harness.diagnose import DiagnoseConfig, diagnose, sampled_latents, scene_generators, scene_latents
from methods.backbones import WEIGHTS_DIR
from methods.dpbridge import load_checkpoint

CFG = DiagnoseConfig(count=3, times=(999, 1), steps=(1, 2), ensemble=2)


def test_rows_cover_times_steps_and_the_ensemble_with_their_settings():
    rows = pd.DataFrame(diagnose(CFG))
    assert list(rows.kind) == ["posterior_mean"] * 2 + ["sample"] * 2 + ["ensemble"]
    assert list(rows.t[:2]) == [999, 1] and list(rows.steps[2:]) == [1, 2, 2] and rows.members.iloc[-1] == 2
    first = rows.latent_mse.iloc[0]
    assert rows.ratio_to_first_estimate.tolist() == pytest.approx((rows.latent_mse / first).tolist())
    # from x_1 the shipped model recovers x_0 far better than from the image alone
    assert rows.latent_mse.iloc[1] < 0.1 * first
    assert set(rows.weights_fingerprint) == {rows.weights_fingerprint[0]} and len(rows.weights_fingerprint[0]) == 16
    assert (rows.split == "val").all() and (rows["count"] == 3).all()
    # intervals over the 3 scenes hold their estimates; the first estimate's ratio to itself is 1 in every draw
    assert ((rows.ci_low <= rows.latent_mse) & (rows.latent_mse <= rows.ci_high)).all()
    assert ((rows.ratio_ci_low <= rows.ratio_to_first_estimate) & (rows.ratio_to_first_estimate
                                                                    <= rows.ratio_ci_high)).all()
    assert rows.ratio_ci_low.iloc[0] == pytest.approx(1.0) and rows.ratio_ci_high.iloc[0] == pytest.approx(1.0)
    assert (rows.ci_high > rows.ci_low).all()


def test_intervals_over_scenes_are_paired_and_absent_for_one_scene():
    import numpy as np

    from harness.diagnose import scene_intervals

    first = np.array([1.0, 2.0, 4.0, 8.0])
    twice = scene_intervals(2 * first, first)  # every resample has the same ratio
    assert twice["ratio_ci_low"] == pytest.approx(2.0) and twice["ratio_ci_high"] == pytest.approx(2.0)
    assert twice["ci_low"] < 2 * first.mean() < twice["ci_high"]
    assert all(np.isnan(v) for v in scene_intervals(first[:1], first[:1]).values())


def test_the_ensemble_is_the_mean_of_successive_draws():
    model = load_checkpoint(WEIGHTS_DIR / "dpbridge_tiny_depth").eval()
    x_T, _ = scene_latents(model, "depth", "val", 2)
    with torch.inference_mode():
        gens = scene_generators(0, 2)
        draws = [sampled_latents(model, x_T, 2, 0.0, gens) for _ in range(3)]
        mean = sampled_latents(model, x_T, 2, 0.0, scene_generators(0, 2), members=3)
    assert torch.allclose(mean, sum(draws) / 3, atol=1e-6)


def test_cli_writes_csv_and_refuses_a_checkpoint_of_the_other_task(tmp_path, capsys):
    out = tmp_path / "d.csv"
    assert main(["diagnose", "--count", "2", "--steps", "1", "--ensemble", "1", "--output", str(out)]) == 0
    table = pd.read_csv(out)
    assert "sample" in set(table.kind) and "ensemble" not in set(table.kind)
    assert "posterior_mean" in capsys.readouterr().out
    assert main(["diagnose", "--task", "depth", "--checkpoint", str(WEIGHTS_DIR / "dpbridge_tiny_normals"),
                 "--count", "2"]) == 2
    assert "trained for normals, not depth" in capsys.readouterr().err
    assert main(["diagnose", "--count", "2", "--output", str(out)]) == 2  # never replaced unasked
    assert "exists; pass --overwrite" in capsys.readouterr().err and pd.read_csv(out).equals(table)


@pytest.mark.parametrize("argv, message", [
    (["--steps", "1,abc"], "--steps takes comma-separated integers, got '1,abc'"),
    (["--checkpoint", str(WEIGHTS_DIR / "bbdm_tiny_depth")], "is a bbdm checkpoint, not dpbridge: diagnose measures"),
    (["--output", "no_such_folder/d.csv"], "folder no_such_folder does not exist"),
])
def test_cli_names_what_is_wrong_before_any_work(argv, message, capsys, monkeypatch):
    import harness.diagnose as diagnose_module

    monkeypatch.setattr(diagnose_module, "scene_latents", None)  # any work would fail on this instead
    assert main(["diagnose", "--count", "2", *argv]) == 2
    assert message in capsys.readouterr().err


def test_a_bad_count_or_ensemble_is_named():
    with pytest.raises(ValueError, match=r"got --ensemble 0$"):
        diagnose(DiagnoseConfig(ensemble=0))
    with pytest.raises(ValueError, match=r"got --count 0, --steps \(empty\)$"):
        diagnose(DiagnoseConfig(count=0, steps=()))
