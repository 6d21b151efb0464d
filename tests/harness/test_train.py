import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import harness.train as train_module
from harness.manifest import device_description
from harness.train import TrainConfig, lr_factor, train
from harness.weight_ema import WeightEMA
from methods.dpbridge import DPBridgeConfig, load_checkpoint


def _cfgs(tmp_path, backbone, **kw):
    method = DPBridgeConfig(task="normals", backbone=str(backbone))
    base = dict(iterations=4, batch=2, pool_count=6, checkpoint_every=2, log_every=1, warmup=2)
    base.update(kw)
    return method, TrainConfig(**base)


def _weights(folder):
    return load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))


def _iteration_rows(folder):
    rows = [json.loads(line) for line in (folder / "training_log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows if "event" not in r]


@pytest.mark.parametrize("weight_ema", [0.0, 0.5])  # 0.5: the checkpoint must restore the weight average too
def test_a_killed_training_resumes_to_the_same_weights_and_log(tmp_path, tiny_backbone_dir, private_cache,
                                                               monkeypatch, weight_ema):
    method, cfg = _cfgs(tmp_path, tiny_backbone_dir, weight_ema=weight_ema)
    full = TrainConfig(**{**cfg.__dict__, "output": str(tmp_path / "a"), "export": str(tmp_path / "ea")})
    train(method, full, "test")
    killed = TrainConfig(**{**cfg.__dict__, "output": str(tmp_path / "b"), "export": str(tmp_path / "eb")})
    draws, real_draw = [], train_module.draw_batch

    def dies_at_iteration_3(*args, **kwargs):  # one draw per iteration; the last checkpoint was after iteration 1
        draws.append(1)
        if len(draws) == 4:
            raise KeyboardInterrupt
        return real_draw(*args, **kwargs)

    monkeypatch.setattr(train_module, "draw_batch", dies_at_iteration_3)
    with pytest.raises(KeyboardInterrupt):
        train(method, killed, "test")
    monkeypatch.setattr(train_module, "draw_batch", real_draw)
    assert [r["iteration"] for r in _iteration_rows(tmp_path / "b")] == [0, 1, 2]
    train(method, killed, "test")
    a, b = _weights(tmp_path / "ea"), _weights(tmp_path / "eb")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    log = [json.loads(line) for line in (tmp_path / "b" / "training_log.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in log if row.get("event") == "start"] == [0, 2]
    assert _iteration_rows(tmp_path / "b") == _iteration_rows(tmp_path / "a")  # iteration 2 logged once


@pytest.mark.parametrize("killed_between_renames", [False, True])
def test_stop_at_checkpoints_without_exporting_and_the_same_command_continues(tmp_path, tiny_backbone_dir,
                                                                             private_cache, killed_between_renames):
    method, cfg = _cfgs(tmp_path, tiny_backbone_dir, iterations=3, checkpoint_every=5)
    full = TrainConfig(**{**cfg.__dict__, "output": str(tmp_path / "a"), "export": str(tmp_path / "ea")})
    train(method, full, "test")
    split = TrainConfig(**{**cfg.__dict__, "output": str(tmp_path / "b"), "export": str(tmp_path / "eb")})
    stopped = train(method, TrainConfig(**{**split.__dict__, "stop_at": 1}), "test")
    assert stopped["stopped_at"] == 1 and not (tmp_path / "eb").exists()
    assert json.loads((tmp_path / "b" / "checkpoint" / "iteration.json").read_text())["iteration"] == 1
    if killed_between_renames:  # the next checkpoint's swap killed after checkpoint -> checkpoint.old
        (tmp_path / "b" / "checkpoint").rename(tmp_path / "b" / "checkpoint.old")
    train(method, split, "test")
    log = [json.loads(line) for line in (tmp_path / "b" / "training_log.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in log if row.get("event") == "start"] == [0, 1]  # not restarted from 0
    assert not (tmp_path / "b" / "checkpoint.old").exists()
    a, b = _weights(tmp_path / "ea"), _weights(tmp_path / "eb")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _iteration_rows(tmp_path / "b") == _iteration_rows(tmp_path / "a")


def test_weight_average_is_exported_and_leaves_the_training_unchanged(tmp_path, tiny_backbone_dir, private_cache):
    method, cfg = _cfgs(tmp_path, tiny_backbone_dir, iterations=3, checkpoint_every=5)
    runs = {}
    for name, decay in (("last", 0.0), ("avg", 0.5)):
        runs[name] = train(method, TrainConfig(**{**cfg.__dict__, "weight_ema": decay, "output": str(tmp_path / name),
                                                  "export": str(tmp_path / f"e_{name}")}), "test")
    assert _iteration_rows(tmp_path / "last") == _iteration_rows(tmp_path / "avg")  # same optimisation
    assert runs["last"]["exported_weights"] == "last iteration"
    assert runs["avg"]["exported_weights"] == "moving average, decay 0.5"
    last, avg = _weights(tmp_path / "e_last"), _weights(tmp_path / "e_avg")
    assert any(not torch.equal(last[k], avg[k]) for k in last)


def test_weight_average_follows_its_formula_and_refuses_another_decay():
    net = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(0.0)
    average = WeightEMA(net, 0.75)
    for value in (4.0, 8.0):
        with torch.no_grad():
            net.weight.fill_(value)
        average.update(net)
    assert average.average["weight"].item() == pytest.approx(0.75 * (0.25 * 4.0) + 0.25 * 8.0)
    average.copy_to(net)
    assert net.weight.item() == pytest.approx(2.75)
    with pytest.raises(ValueError, match="decay 0.75"):
        WeightEMA(net, 0.5).load_state_dict(average.state_dict())
    with pytest.raises(ValueError, match="weight_ema must lie in"):
        WeightEMA(net, 1.0)


def test_exported_checkpoint_loads_and_records_its_command(tmp_path, tiny_backbone_dir, private_cache):
    method, cfg = _cfgs(tmp_path, tiny_backbone_dir, iterations=1, output=str(tmp_path / "o"),
                        export=str(tmp_path / "e"))
    train(method, cfg, "python -m harness train --method dpbridge_tiny --task normals")
    model = load_checkpoint(tmp_path / "e")
    assert model.cfg.task == "normals" and model.unet.config.in_channels == 8
    summary = json.loads((tmp_path / "e" / "training_summary.json").read_text())
    assert summary["command"].startswith("python -m harness train")
    assert summary["effective_batch"] == 2 and summary["world_size"] == 1
    assert summary["machine"] == device_description("cpu")  # the CPU kind, which sets the rounding


def test_lr_schedule_warms_up_then_decays_exponentially():
    cfg = TrainConfig(iterations=1100, warmup=100, lr_final_ratio=0.01)
    assert lr_factor(0, cfg) == pytest.approx(0.01)
    assert lr_factor(99, cfg) == pytest.approx(1.0)
    assert lr_factor(100, cfg) == pytest.approx(1.0)
    assert lr_factor(600, cfg) == pytest.approx(0.1)
    assert lr_factor(1100, cfg) == pytest.approx(0.01)


def test_resuming_with_other_settings_is_refused(tmp_path, tiny_backbone_dir, private_cache):
    method, cfg = _cfgs(tmp_path, tiny_backbone_dir, iterations=2, output=str(tmp_path / "o"),
                        export=str(tmp_path / "e"))
    train(method, cfg, "test")
    other = DPBridgeConfig(task="normals", backbone=str(tiny_backbone_dir), dan="B")
    with pytest.raises(ValueError, match=r"another method config \(method.dan: 'A' -> 'B'\); resume"):
        train(other, TrainConfig(**{**cfg.__dict__, "iterations": 4, "export": str(tmp_path / "e3")}), "test")
    with pytest.raises(ValueError, match=r"other training settings \(iterations: 2 -> 4, lr: 0.0005 -> 0.001\)"):
        train(method, TrainConfig(**{**cfg.__dict__, "iterations": 4, "lr": 1e-3, "export": str(tmp_path / "e3")}),
              "test")
    train(method, TrainConfig(**{**cfg.__dict__, "log_every": 5, "export": str(tmp_path / "e2")}), "test")  # allowed
    assert (tmp_path / "e2" / "training_summary.json").is_file()


def test_v_parameterisation_trains_and_round_trips(tmp_path, tiny_backbone_dir, private_cache):
    method = DPBridgeConfig(task="depth", backbone=str(tiny_backbone_dir), parameterization="v")
    cfg = TrainConfig(iterations=1, batch=2, pool_count=4, output=str(tmp_path / "o"), export=str(tmp_path / "e"))
    train(method, cfg, "test")
    assert load_checkpoint(tmp_path / "e").cfg.parameterization == "v"


def test_a_stop_at_between_log_rows_leaves_the_log_of_the_run_that_never_stopped(tmp_path, tiny_backbone_dir,
                                                                                private_cache):
    method, cfg = _cfgs(tmp_path, tiny_backbone_dir, iterations=5, log_every=3, checkpoint_every=5)
    train(method, TrainConfig(**{**cfg.__dict__, "output": str(tmp_path / "a"), "export": str(tmp_path / "ea")}), "t")
    split = TrainConfig(**{**cfg.__dict__, "output": str(tmp_path / "b"), "export": str(tmp_path / "eb")})
    train(method, TrainConfig(**{**split.__dict__, "stop_at": 2}), "test")
    assert [r["iteration"] for r in _iteration_rows(tmp_path / "b")] == [0, 1]  # 1: where it stopped
    train(method, split, "test")
    assert [r["iteration"] for r in _iteration_rows(tmp_path / "b")] == [0, 3, 4]
    assert _iteration_rows(tmp_path / "b") == _iteration_rows(tmp_path / "a")


def test_a_checkpoint_folder_not_ours_or_damaged_is_refused_with_the_fix(tmp_path, tiny_backbone_dir, private_cache):
    method, cfg = _cfgs(tmp_path, tiny_backbone_dir, iterations=3, output=str(tmp_path / "o"),
                        export=str(tmp_path / "e"))
    (tmp_path / "o" / "checkpoint").mkdir(parents=True)
    (tmp_path / "o" / "checkpoint" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"checkpoint exists and holds no iteration.json.*--set output=DIR"):
        train(method, cfg, "test")
    assert (tmp_path / "o" / "checkpoint" / "notes.txt").read_text() == "mine"
    (tmp_path / "o" / "checkpoint" / "notes.txt").unlink()
    train(method, TrainConfig(**{**cfg.__dict__, "stop_at": 1}), "test")
    for weights in (tmp_path / "o" / "checkpoint").glob("model*"):
        weights.unlink()
    with pytest.raises(RuntimeError, match=r"checkpoint cannot be resumed .*remove it to train from the start"):
        train(method, cfg, "test")


@pytest.mark.parametrize("setting, said", [({"log_every": 0}, "log_every=0: must be >= 1"),
                                           ({"checkpoint_every": 0}, "checkpoint_every=0: must be >= 1"),
                                           ({"stop_at": -1}, "stop_at=-1: must be >= 0")])
def test_intervals_that_cannot_be_kept_are_refused_before_training(setting, said):
    with pytest.raises(ValueError, match=said):
        train_module.check_budget(TrainConfig(**setting))


def test_an_export_or_a_resume_with_the_weight_average_or_process_count_changed_is_refused(tmp_path):
    from dataclasses import asdict

    method = DPBridgeConfig(task="depth")
    averaged = TrainConfig(weight_ema=0.8)
    (tmp_path / "training_summary.json").write_text(json.dumps(
        {"method_config": asdict(method), "train_config": asdict(averaged), "world_size": 1}))
    plain = train_module.result_settings(TrainConfig())  # weight_ema off: left out of the settings
    with pytest.raises(FileExistsError, match=r"other settings \(weight_ema: 0.8 -> 0.0\)"):
        train_module.check_export(tmp_path, method, plain, world_size=1)
    train_module.check_export(tmp_path, method, train_module.result_settings(averaged), world_size=1)
    with pytest.raises(FileExistsError, match=r"other settings \(world_size: 1 -> 2\)"):
        train_module.check_export(tmp_path, method, train_module.result_settings(averaged), world_size=2)
    state = {"method_config": asdict(method), "train_config": plain, "world_size": 2}
    with pytest.raises(ValueError, match="trained on 2 processes, this run has 1"):
        train_module._check_resume(tmp_path, state, method, plain, world_size=1)
    with pytest.raises(ValueError, match=r"other training settings \(weight_ema: 0.0 -> 0.8\)"):
        train_module._check_resume(tmp_path, state, method, train_module.result_settings(averaged), world_size=2)


def test_weight_average_off_is_left_out_of_the_resume_settings_so_older_checkpoints_resume():
    assert "weight_ema" not in train_module.result_settings(TrainConfig())
    assert train_module.result_settings(TrainConfig(weight_ema=0.999))["weight_ema"] == 0.999


def test_an_export_folder_of_other_settings_is_never_replaced(tmp_path, tiny_backbone_dir, private_cache):
    method, cfg = _cfgs(tmp_path, tiny_backbone_dir, iterations=2, output=str(tmp_path / "o"),
                        export=str(tmp_path / "e"))
    train(method, cfg, "test")
    weights = sorted((tmp_path / "e").rglob("*.safetensors"))[0].read_bytes()
    other = TrainConfig(**{**cfg.__dict__, "lr": 1e-3, "output": str(tmp_path / "o2")})
    refused = r"holds a checkpoint trained with other settings \(lr: 0.0005 -> 0.001\)"
    with pytest.raises(FileExistsError, match=refused):
        train(method, other, "test")  # e.g. a shipped checkpoint under methods/weights/
    assert sorted((tmp_path / "e").rglob("*.safetensors"))[0].read_bytes() == weights
    train(method, TrainConfig(**{**cfg.__dict__, "output": str(tmp_path / "o3")}), "test")  # the same: regenerates
    with pytest.raises(ValueError, match="iterations=0: must be >= 1"):
        train(method, TrainConfig(**{**cfg.__dict__, "iterations": 0, "export": str(tmp_path / "e0")}), "test")


def test_a_kill_during_the_export_keeps_the_earlier_export_and_the_same_command_exports_again(
        tmp_path, tiny_backbone_dir, private_cache, monkeypatch):
    method, cfg = _cfgs(tmp_path, tiny_backbone_dir, iterations=2, output=str(tmp_path / "o"),
                        export=str(tmp_path / "e"))
    train(method, cfg, "first")

    def files(folder):
        return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    first = files(tmp_path / "e")
    again = TrainConfig(**{**cfg.__dict__, "output": str(tmp_path / "o2")})
    fresh = TrainConfig(**{**again.__dict__, "export": str(tmp_path / "e2")})
    real_copy = train_module.shutil.copy

    def killed(*args, **kwargs):  # the export's last file: the weights are written by then
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module.shutil, "copy", killed)
    for each in (again, fresh):
        with pytest.raises(KeyboardInterrupt):
            train(method, each, "first")
    monkeypatch.setattr(train_module.shutil, "copy", real_copy)
    assert files(tmp_path / "e") == first and not (tmp_path / "e2").exists()  # the earlier export, or none
    weights = Path("unet") / "diffusion_pytorch_model.safetensors"
    for each in (fresh, again):  # the finished checkpoint: nothing left to train, exported again
        train(method, each, "first")
        exported = Path(each.export)
        assert (exported / weights).read_bytes() == first[weights]  # the same settings: the same weights
        assert json.loads((exported / "training_summary.json").read_text())["train_config"]["output"] == each.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "e", "e2", "o", "o2"]  # no temporary folder left
