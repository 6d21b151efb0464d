import json

import pytest
import torch
import torch.nn.functional as F

import harness.pretrain as pretrain_module
from harness.manifest import device_description
from harness.pretrain import PretrainConfig, _lr_lambda, pretrain, pretrained_loss_at
from methods.backbones import load_backbone

TINY = dict(pool_count=8, val_count=4, batch=2, vae_steps=4, unet_steps=4, warmup=1, log_every=1, checkpoint_every=2)


def test_pretrain_writes_a_loadable_backbone_with_its_report(tmp_path, private_cache):
    cfg = PretrainConfig(pool_count=8, val_count=4, batch=4, vae_steps=2, unet_steps=2, warmup=1,
                         output=str(tmp_path / "run"), export=str(tmp_path / "bb"))
    summary = pretrain(cfg, "python -m harness pretrain --set vae_steps=2")
    backbone = load_backbone(tmp_path / "bb")
    assert backbone.scaling_factor == summary["scaling_factor"] > 0
    for key in ("vae_rgb_mae_pm1", "vae_depth_mae_pm1", "vae_normals_mean_deg"):
        assert summary[key] >= 0
    written = json.loads((tmp_path / "bb" / "training_summary.json").read_text())
    assert written["command"] == "python -m harness pretrain --set vae_steps=2"
    assert written["machine"] == device_description("cpu")  # the CPU kind, which sets the rounding
    assert (tmp_path / "bb" / "training_log.jsonl").read_text() == (tmp_path / "run" / "training_log.jsonl").read_text()
    loss = pretrained_loss_at(backbone, torch.randn(2, 4, 16, 16), k=500)
    assert 0 < loss < 10


class KilledAt:
    """torch.nn.functional for harness.pretrain, raising KeyboardInterrupt at the n-th mse_loss (one per step: the
    VAE's steps come first, then the UNet's)."""

    def __init__(self, n: int) -> None:
        self.calls, self.n = 0, n

    def mse_loss(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return F.mse_loss(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(F, name)


def _steps(log_path):
    """The log's training rows without their times."""
    rows = [json.loads(line) for line in log_path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows if r.get("stage") in ("vae", "unet")]


@pytest.mark.parametrize("killed_at_call", [4, 5, 8], ids=["vae-step-3", "unet-step-0", "unet-step-3"])
def test_a_killed_pretraining_resumes_to_the_same_backbone(tmp_path, private_cache, monkeypatch, killed_at_call):
    reference = pretrain(PretrainConfig(**TINY, output=str(tmp_path / "ref"), export=str(tmp_path / "ref_bb")), "ref")
    cfg = PretrainConfig(**TINY, output=str(tmp_path / "run"), export=str(tmp_path / "bb"))
    monkeypatch.setattr(pretrain_module, "F", KilledAt(killed_at_call))
    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, "run")
    assert not (tmp_path / "bb").exists()  # nothing exported by a run that did not finish
    monkeypatch.setattr(pretrain_module, "F", F)

    summary = pretrain(cfg, "run")
    resumed = summary["resumed_from"]
    assert (resumed["stage"], resumed["step"]) == {4: ("vae", 2), 5: ("vae", 4), 8: ("unet", 2)}[killed_at_call]
    for stage in ("vae", "unet"):
        ours = torch.load(tmp_path / "run" / f"checkpoint_{stage}.pt", weights_only=True)
        theirs = torch.load(tmp_path / "ref" / f"checkpoint_{stage}.pt", weights_only=True)
        assert ours["module"].keys() == theirs["module"].keys()
        for name, weight in theirs["module"].items():
            assert torch.equal(ours["module"][name], weight), f"{stage} {name}"
    for key in ("vae_final_loss_ema", "unet_final_loss_ema", "scaling_factor", "vae_rgb_mae_pm1"):
        assert summary[key] == reference[key]
    assert _steps(tmp_path / "run" / "training_log.jsonl") == _steps(tmp_path / "ref" / "training_log.jsonl")
    events = [json.loads(line) for line in (tmp_path / "bb" / "training_log.jsonl").read_text().splitlines()]
    assert [e for e in events if e.get("event") == "resume"] == [
        {"event": "resume", "resumed_stage": resumed["stage"], "steps_done": resumed["step"],
         "elapsed_s": pytest.approx(resumed["elapsed_s"], abs=0.2)}]


def test_a_run_folder_refuses_other_settings_and_a_finished_run_only_exports_again(tmp_path, private_cache):
    cfg = PretrainConfig(**TINY, output=str(tmp_path / "run"), export=str(tmp_path / "bb"))
    first = pretrain(cfg, "run")
    with pytest.raises(ValueError, match=r"run holds a run with other settings \(vae_lr: 0.001 -> 0.0001\)"):
        pretrain(PretrainConfig(**{**TINY, "vae_lr": 1e-4}, output=str(tmp_path / "run"),
                                export=str(tmp_path / "bb3")), "run")
    again = pretrain(PretrainConfig(**{**TINY, "log_every": 3}, output=str(tmp_path / "run"),
                                    export=str(tmp_path / "bb2")), "run")
    assert (again["resumed_from"]["stage"], again["resumed_from"]["step"]) == ("unet", TINY["unet_steps"])
    assert again["unet_final_loss_ema"] == first["unet_final_loss_ema"]
    assert _steps(tmp_path / "bb2" / "training_log.jsonl") == _steps(tmp_path / "bb" / "training_log.jsonl")


def test_an_attempt_that_checkpointed_nothing_does_not_bind_the_run_folder(tmp_path, private_cache, monkeypatch):
    monkeypatch.setattr(pretrain_module, "F", KilledAt(1))  # killed in the first VAE step
    with pytest.raises(KeyboardInterrupt):
        pretrain(PretrainConfig(**{**TINY, "vae_lr": 1e-4}, output=str(tmp_path / "run"),
                                export=str(tmp_path / "bb0")), "run")
    monkeypatch.setattr(pretrain_module, "F", F)
    summary = pretrain(PretrainConfig(**TINY, output=str(tmp_path / "run"), export=str(tmp_path / "bb")), "run")
    assert "resumed_from" not in summary
    assert json.loads((tmp_path / "run" / "settings.json").read_text())["vae_lr"] == PretrainConfig().vae_lr


def test_pretrain_schedule_warms_up_and_decays():
    f = _lr_lambda(10, 110, final_ratio=0.05)
    assert f(0) == 0.1 and f(9) == 1.0
    assert abs(f(110) - 0.05) < 1e-12


def test_pretrain_settings_that_cannot_run_are_refused():
    with pytest.raises(ValueError, match="checkpoint_every must be at least 1; got 0"):
        PretrainConfig(checkpoint_every=0)


def test_an_unreadable_checkpoint_is_named_with_the_fix(tmp_path, private_cache):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint_vae.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"checkpoint_vae.pt cannot be read as a checkpoint \(UnpicklingError\); "
                                         r"delete it to redo"):
        pretrain(PretrainConfig(**TINY, output=str(tmp_path / "run"), export=str(tmp_path / "bb")), "run")


def test_a_vae_batch_row_is_its_kind_of_image_flipped_by_the_drawn_coin():
    from harness.pool import render_pool
    from methods.targets import flip_horizontal, rgb_to_tensor, target_image

    pool = render_pool("train", 6, 0, 16, cache=False, workers=1)
    idx, kinds = torch.tensor([0, 1, 2, 3, 4, 5, 2, 2]), torch.tensor([0, 1, 2, 0, 1, 2, 1, 0])
    torch.manual_seed(5)
    batch = pretrain_module._vae_images(pool, idx, kinds)
    assert batch.is_contiguous(memory_format=torch.channels_last)  # as it always was: the rounding depends on it
    torch.manual_seed(5)
    flips = torch.rand(len(idx)) < 0.5  # the only random draw of a batch
    assert flips.any() and not flips.all()
    for row, (i, kind, flip) in enumerate(zip(idx.tolist(), kinds.tolist(), flips.tolist())):
        one = slice(i, i + 1)
        image = [rgb_to_tensor(pool["rgb"][one]),
                 target_image("depth", pool["depth"][one], None, pool["valid"][one]),
                 target_image("normals", None, pool["normals"][one], pool["valid"][one])][kind]
        if flip:
            image = flip_horizontal(image, "normals" if kind == 2 else None)
        assert torch.equal(batch[row], image[0]), (row, kind, flip)


def test_an_export_folder_of_other_settings_is_never_replaced(tmp_path, private_cache):
    pretrain(PretrainConfig(**TINY, output=str(tmp_path / "run"), export=str(tmp_path / "bb")), "first")
    before = (tmp_path / "bb" / "training_summary.json").read_text()
    other = PretrainConfig(**{**TINY, "seed": TINY.get("seed", 0) + 1}, output=str(tmp_path / "run2"),
                           export=str(tmp_path / "bb"))
    with pytest.raises(FileExistsError, match=r"holds a backbone pretrained with other settings \(seed: "):
        pretrain(other, "second")  # e.g. the shipped methods/weights/tiny_backbone
    assert (tmp_path / "bb" / "training_summary.json").read_text() == before and not (tmp_path / "run2").exists()


def test_an_export_folder_pretrain_did_not_write_is_never_replaced(tmp_path, private_cache):
    (tmp_path / "bb").mkdir()
    (tmp_path / "bb" / "notes.txt").write_text("mine")  # e.g. --set export=methods/weights
    with pytest.raises(FileExistsError, match=r"bb exists and holds no training_summary.json.*--set export=DIR"):
        pretrain(PretrainConfig(**TINY, output=str(tmp_path / "run"), export=str(tmp_path / "bb")), "first")
    assert (tmp_path / "bb" / "notes.txt").read_text() == "mine"


def test_a_kill_during_the_export_leaves_no_half_backbone_and_the_same_command_exports_it(tmp_path, private_cache,
                                                                                       monkeypatch):
    cfg = PretrainConfig(**TINY, output=str(tmp_path / "run"), export=str(tmp_path / "bb"))
    real_copy = pretrain_module.shutil.copy

    def killed(*args, **kwargs):  # the export's last file: the weights are written by then
        raise KeyboardInterrupt

    monkeypatch.setattr(pretrain_module.shutil, "copy", killed)
    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, "run")
    monkeypatch.setattr(pretrain_module.shutil, "copy", real_copy)
    assert not (tmp_path / "bb").exists()  # a half-written backbone would load, or refuse the next export
    pretrain(cfg, "run")
    assert load_backbone(tmp_path / "bb").scaling_factor > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bb", "cache", "run"]
