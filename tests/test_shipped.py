"""The shipped tiny checkpoints: small, regenerable, loadable, and better than the trivial references."""
import json

import pytest
import torch

from harness.registry import build_method
from harness.run import RunConfig, run
from methods.backbones import WEIGHTS_DIR, load_backbone, recorded_path
from methods.base import RunOptions
from methods.dpbridge import load_checkpoint

MAX_BYTES = 10 * 1024 * 1024
FOLDERS = ["tiny_backbone", "dpbridge_tiny_depth", "dpbridge_tiny_normals", "regressor_tiny_depth",
           "regressor_tiny_normals"]


@pytest.mark.parametrize("name", FOLDERS)
def test_checkpoint_is_small_and_says_how_to_regenerate_it(name):
    folder = WEIGHTS_DIR / name
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert 0 < total < MAX_BYTES
    summary = json.loads((folder / "training_summary.json").read_text())
    assert summary["command"].startswith("python -m harness ")
    assert (folder / "training_log.jsonl").read_text().strip()


def test_backbone_loads_with_its_measured_scaling_factor():
    backbone = load_backbone(WEIGHTS_DIR / "tiny_backbone")
    summary = json.loads((WEIGHTS_DIR / "tiny_backbone" / "training_summary.json").read_text())
    assert backbone.scaling_factor == pytest.approx(summary["scaling_factor"])
    assert backbone.null_text.shape == (1, 8, 32)


@pytest.mark.parametrize("task", ["depth", "normals"])
def test_dpbridge_tiny_checkpoint_predicts(task):
    model = load_checkpoint(WEIGHTS_DIR / f"dpbridge_tiny_{task}")
    assert model.cfg.task == task and model.unet.config.in_channels == 8
    out = model.predict_image(torch.zeros(2, 3, 64, 64), 2, 0.0, [torch.Generator().manual_seed(i) for i in range(2)])
    assert out.shape == (2, 3, 64, 64) and torch.isfinite(out).all()


def test_dpbridge_tiny_beats_the_ramp_on_validation_scenes(tmp_path):
    """A regression check on the val split (the test split is for the reported numbers only)."""
    cfg = RunConfig(methods=("dpbridge_tiny", "ramp"), count=16, dataset_args={
        "synthetic": {"split": "val"}, "synthetic_normals": {"split": "val"}})
    _, summary = run(cfg, str(tmp_path / "r"), progress=False)
    s = summary[summary.group == "all"].set_index(["method", "metric"])["value"]
    assert s["dpbridge_tiny", "abs_rel"] < s["ramp", "abs_rel"]
    assert s["dpbridge_tiny", "mean"] < s["ramp", "mean"]


def test_shipped_weights_are_recorded_by_their_path_in_the_repository(tmp_path):
    """So the summary of the README's main command is the same file in every clone; other weights keep their
    absolute path."""
    assert build_method("dpbridge_tiny", "normals", RunOptions()).describe()["checkpoint"] == \
        "methods/weights/dpbridge_tiny_normals"
    assert build_method("train_mean", "depth", RunOptions()).describe()["checkpoint"] == \
        "methods/weights/train_mean_depth.safetensors"
    assert recorded_path(tmp_path / "elsewhere") == str((tmp_path / "elsewhere").resolve())


TRAINED = sorted(p.parent.relative_to(WEIGHTS_DIR).as_posix() for p in WEIGHTS_DIR.rglob("training_summary.json")
                 if json.loads(p.read_text())["command"].startswith("python -m harness train "))


@pytest.mark.parametrize("name", TRAINED)
def test_the_recorded_command_would_regenerate_the_folder_not_be_refused(name):
    """train refuses to replace a checkpoint trained with other settings: its own command must pass that check."""
    import shlex
    from pathlib import Path

    from harness.cli import build_parser, train_configs
    from harness.train import check_export, result_settings

    folder = WEIGHTS_DIR / name
    argv = shlex.split(json.loads((folder / "training_summary.json").read_text())["command"])[3:]
    kept = [a for i, a in enumerate(argv) if not (a.startswith(("output=", "export=")) or
                                                  (a == "--set" and argv[i + 1].startswith(("output=", "export="))))]
    args = build_parser().parse_args(kept)
    method_cfg, cfg = train_configs(args)
    check_export(folder, method_cfg, result_settings(cfg), world_size=1)
    with pytest.raises(FileExistsError, match="trained with other settings"):
        check_export(folder, method_cfg, {**result_settings(cfg), "seed": result_settings(cfg)["seed"] + 1}, 1)
    with pytest.raises(FileExistsError, match=r"other settings \(world_size: 1 -> 2\)"):
        check_export(folder, method_cfg, result_settings(cfg), world_size=2)
    export = Path(cfg.export) if cfg.export else WEIGHTS_DIR / f"{args.method}_{method_cfg.task}"
    assert export.resolve() == folder.resolve()  # and it is this folder the command writes
