"""Training from dataset adapters (harness.train_data) with an in-test adapter: batches, flips, errors, train()."""
import json

import numpy as np
import pytest
import torch

from datasets.base import Dataset, DatasetSpec, Sample
from datasets.training import TrainingSet
from harness.train_data import DatasetBatches, dataset_batches, method_train_settings, parse_mix, preset_settings


class Ramps(TrainingSet, Dataset):
    """Left-to-right ramps: RGB brightens and depth grows to the right; normals all (0.6, 0, 0.8). Sizes vary."""

    spec = DatasetSpec(task="depth")

    def __init__(self, normals: bool = True):
        self.with_normals = normals

    def ids(self):
        return [f"r{i}" for i in range(4)]

    def load(self, sample_id):
        h, w = 70 + int(sample_id[1]), 90
        ramp = np.tile(np.linspace(0, 1, w, dtype=np.float32), (h, 1))
        rgb = np.repeat((ramp * 255).astype(np.uint8)[..., None], 3, axis=2)
        normals = np.broadcast_to(np.array([0.6, 0.0, 0.8], np.float32), (h, w, 3)).copy()
        return Sample(id=sample_id, rgb=rgb, valid=np.ones((h, w), bool), depth=1 + 4 * ramp,
                      normals=normals if self.with_normals else None)


class FakeModel:
    """What DatasetBatches needs of a model: size_multiple and encode (here a 4x average pool to 4 channels)."""

    size_multiple = 16

    def encode(self, image):
        pooled = torch.nn.functional.avg_pool2d(image, 4)
        return torch.cat([pooled, pooled[:, :1]], dim=1)


def _draw(task, seed, batch=3):
    source = DatasetBatches({"ramps": Ramps()}, {"ramps": 1.0}, task, FakeModel())
    return source.draw(batch, torch.Generator().manual_seed(seed), lambda n, g: torch.randint(1, 1000, (n,),
                                                                                             generator=g), "cpu")


def test_batches_are_cropped_to_the_size_multiple_and_reproducible():
    x_T, x_0, target, valid, t, noise = _draw("depth", 0)
    assert target.shape == (3, 3, 64, 80) and valid.shape == (3, 1, 64, 80)  # 70..73 x 90 -> 64 x 80
    assert x_T.shape == x_0.shape == noise.shape == (3, 4, 16, 20) and t.shape == (3,)
    again = _draw("depth", 0)
    assert all(torch.equal(a, b) for a, b in zip((x_T, x_0, target, valid, t, noise), again))
    assert not torch.equal(_draw("depth", 1)[0], x_T)


def test_a_flip_flips_image_and_map_together_and_negates_the_normal_x():
    flipped_seen = set()
    for seed in range(6):
        x_T, _, target, *_ = _draw("depth", seed)
        for i in range(3):
            rgb_rises = x_T[i, 0, :, -1].mean() > x_T[i, 0, :, 0].mean()
            depth_rises = target[i, 0, :, -1].mean() > target[i, 0, :, 0].mean()
            assert rgb_rises == depth_rises  # image and depth flipped together
            flipped_seen.add(bool(rgb_rises))
    assert flipped_seen == {True, False}  # both orientations occur
    _, _, normals, *_ = _draw("normals", 3, batch=8)
    signs = set(torch.sign(normals[:, 0]).unique().tolist())
    assert signs == {-1.0, 1.0} and torch.allclose(normals[:, 0].abs(), torch.tensor(0.6))


def test_a_dataset_without_the_tasks_ground_truth_fails_before_training():
    with pytest.raises(ValueError, match="training dataset ramps, sample r0: no normals ground truth"):
        DatasetBatches({"ramps": Ramps(normals=False)}, {"ramps": 1.0}, "normals", FakeModel())


def test_mix_weights_are_normalised_and_checked():
    assert parse_mix("hypersim=0.9,vkitti=0.1", ["hypersim"]) == {"hypersim": 1.0}
    assert parse_mix("", ["a", "b"]) == {"a": 0.5, "b": 0.5}
    with pytest.raises(ValueError, match="gives no weight to ramps"):
        parse_mix("hypersim=0.9,vkitti=0.1", ["ramps"])
    with pytest.raises(ValueError, match="expected NAME=WEIGHT"):
        parse_mix("hypersim", ["hypersim"])


def test_presets_are_named_and_only_real_backbone_methods_use_one():
    assert preset_settings("paper")["preset"] == "paper" and preset_settings("paper")["grad_accum"] == 8
    assert method_train_settings("dpbridge_sd21", None)["lr"] == 3e-5
    assert method_train_settings("dpbridge_tiny", "ramps") == {"datasets": "ramps"}
    with pytest.raises(ValueError, match="unknown training preset"):
        preset_settings("papr")


def test_train_reads_adapters_and_records_them(tmp_path, tiny_backbone_dir, monkeypatch):
    from datasets.registry import DATASETS
    from harness.train import TrainConfig, train
    from methods.dpbridge import DPBridgeConfig, load_checkpoint

    monkeypatch.setitem(DATASETS, "ramps", Ramps)
    cfg = TrainConfig(iterations=2, batch=2, warmup=1, log_every=1, datasets="ramps", output=str(tmp_path / "o"),
                      export=str(tmp_path / "e"))
    summary = train(DPBridgeConfig(task="depth", backbone=str(tiny_backbone_dir)), cfg, "test")
    assert summary["train_data"] == {"ramps": {"samples": 4, "probability": 1.0}}
    assert json.loads((tmp_path / "e" / "training_summary.json").read_text())["train_config"]["datasets"] == "ramps"
    assert load_checkpoint(tmp_path / "e").unet.config.in_channels == 8


def test_unknown_training_dataset_names_the_close_match():
    with pytest.raises(KeyError, match="unknown dataset 'hypersimm'"):
        dataset_batches("hypersimm", "", "depth", FakeModel())


def test_the_real_training_adapters_feed_batches(tmp_path, monkeypatch):
    """HyperSim and Virtual KITTI 2 fixtures in their native files, roots from HARNESS_DATA_<NAME>."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "datasets"))
    from training_fixtures import write_hypersim, write_vkitti

    write_hypersim(tmp_path / "hs", count=2, height=48, width=64)
    write_vkitti(tmp_path / "vk", count=2)
    monkeypatch.setenv("HARNESS_DATA_HYPERSIM", str(tmp_path / "hs"))
    monkeypatch.setenv("HARNESS_DATA_VKITTI", str(tmp_path / "vk"))
    source = dataset_batches("hypersim,vkitti", "hypersim=0.9,vkitti=0.1", "depth", FakeModel())
    assert source.describe() == {"hypersim": {"samples": 2, "probability": 0.9},
                                 "vkitti": {"samples": 2, "probability": 0.1}}
    sizes = set()
    for seed in range(12):
        _, _, target, valid, _, _ = source.draw(2, torch.Generator().manual_seed(seed), lambda n, g: torch.ones(n),
                                                "cpu")
        assert target.abs().max() <= 1 and valid.any()
        sizes.add(tuple(target.shape[-2:]))
    assert sizes == {(48, 64), (352, 1216)}  # both datasets drawn, each at its own size (multiples of 16)
    with pytest.raises(ValueError, match="vkitti, sample .*: no normals ground truth"):
        dataset_batches("vkitti", "", "normals", FakeModel())


def test_each_process_encodes_only_its_rows_of_the_same_global_batch():
    class CountingModel(FakeModel):
        encoded = 0

        def encode(self, image):
            CountingModel.encoded += image.shape[0]
            return super().encode(image)

    def draw(rows):
        source = DatasetBatches({"ramps": Ramps()}, {"ramps": 1.0}, "normals", CountingModel())
        return source.draw(4, torch.Generator().manual_seed(5), lambda n, g: torch.randint(1, 1000, (n,), generator=g),
                           "cpu", rows)

    whole = draw(slice(None))
    CountingModel.encoded = 0
    halves = [draw(slice(0, 2)), draw(slice(2, 4))]
    assert CountingModel.encoded == 2 * 4  # image and map latents of 2 rows, twice
    for part, joined in zip(zip(*halves), whole):
        assert torch.equal(torch.cat(part), joined)


@pytest.mark.parametrize("names", ["synthetic", "hypersim,nyuv2", "ibims"])
def test_evaluation_datasets_are_refused_for_training(names):
    from harness.train_data import dataset_batches

    with pytest.raises(ValueError, match="evaluation datasets .* cannot be trained on"):
        dataset_batches(names, "", "depth", model=None)


def test_training_roots_come_from_data_root_and_a_missing_one_says_how_train_takes_it(tmp_path, monkeypatch):
    import sys
    from pathlib import Path

    from datasets.roots import MissingRootError

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "datasets"))
    from training_fixtures import write_hypersim

    monkeypatch.delenv("HARNESS_DATA_HYPERSIM", raising=False)
    monkeypatch.setenv("HARNESS_DATA_CONFIG", str(tmp_path / "none.conf"))
    with pytest.raises(MissingRootError, match=r"training needs every dataset it names(.|\n)*--data-root hypersim="):
        dataset_batches("hypersim", "", "depth", FakeModel())
    write_hypersim(tmp_path / "hs", count=2, height=48, width=64)
    source = dataset_batches("hypersim", "", "depth", FakeModel(), data_roots={"hypersim": str(tmp_path / "hs")})
    assert source.describe() == {"hypersim": {"samples": 2, "probability": 1.0}}


def test_train_refuses_a_data_root_without_the_datasets_it_belongs_to(tmp_path, capsys):
    from harness.cli import main

    code = main(["train", "--data-root", f"hypersim={tmp_path}", "--set", f"output={tmp_path / 'o'}"])
    assert code == 2 and "name the set with --datasets too" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
