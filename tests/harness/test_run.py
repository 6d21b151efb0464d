import json
from types import SimpleNamespace


import numpy as np
import pandas as pd
import pytest
import torch

from harness import evaluate
from harness.registry import method_class
from harness.run import RunConfig, run
from harness.runio import read_jsonl

CFG = RunConfig(methods=("constant", "ramp"), datasets=("synthetic", "synthetic_normals"), count=6, batch_size=4)


def test_run_writes_rows_summary_and_manifest(tmp_path):
    folder, summary = run(CFG, str(tmp_path / "r"), progress=False)
    assert (folder / "summary.csv").is_file() and (folder / "summary.md").is_file()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["datasets"]["synthetic"]["count"] == 6
    assert len(manifest["datasets"]["synthetic"]["list_fingerprint"]) == 16
    assert manifest["methods"]["ramp__synthetic"]["alignment"] == "least_squares"
    assert manifest["methods"]["ramp__synthetic_normals"]["alignment"] == "none"
    assert manifest["methods"]["ramp__synthetic"]["aggregation"] == "per_image"  # depth: per image, then the mean
    assert manifest["methods"]["ramp__synthetic_normals"]["aggregation"] == "pooled"
    text = (folder / "summary.md").read_text()
    assert "settings: seed 0; eta 0; dtype float32; device cpu; size_fit pad" in text
    assert "± = half-width of the percentile bootstrap 95% interval over images" in text
    assert manifest["intervals"] == {"method": "percentile bootstrap over images", "level": 0.95, "draws": 2000,
                                     "seed": 0, "min_paired_samples": 20}
    assert "ramp at native size" in text and " failed |" not in text
    rows = summary[(summary.method == "ramp") & (summary.dataset == "synthetic") & (summary.group == "all")]
    assert set(rows.metric) >= {"abs_rel", "delta1", "silog"}
    assert (rows.n_samples == 6).all()
    per_sample = read_jsonl(folder / "ramp__synthetic" / "rows.jsonl")
    assert rows.set_index("metric").loc["abs_rel", "value"] == pytest.approx(np.mean([r["abs_rel"] for r in per_sample]))
    groups = set(summary.group)
    assert groups == {"all", "indoor", "outdoor"}
    for column in ("checkpoint", "steps", "seed", "eta", "ensemble_size", "dtype", "device", "processing_res", "alignment",
                   "aggregation", "list_fingerprint", "variant", "perturbation", "level", "split"):
        assert column in summary.columns


class Killed(Exception):
    pass


def test_a_killed_run_resumes_without_recomputing_and_ends_with_the_same_summary(tmp_path, monkeypatch):
    _, reference = run(CFG, str(tmp_path / "ref"), progress=False)

    calls = {"n": 0}
    original = evaluate.evaluate_pairs

    def kill_after_first_batch(*args, **kwargs):
        def on_batch():
            calls["n"] += 1
            raise Killed()
        return original(*args, **{**kwargs, "on_batch": on_batch})

    monkeypatch.setattr("harness.run.evaluate_pairs", kill_after_first_batch)
    with pytest.raises(Killed):
        run(CFG, str(tmp_path / "k"), progress=False)
    monkeypatch.setattr("harness.run.evaluate_pairs", original)
    done = read_jsonl(tmp_path / "k" / "ramp__synthetic" / "rows.jsonl")
    assert len(done) == 4  # the first batch finished and was kept

    predicted = []
    real_predict = method_class("ramp").predict
    monkeypatch.setattr(method_class("ramp"), "predict",
                        lambda self, rgb, g: predicted.append(rgb.shape[0]) or real_predict(self, rgb, g))
    _, resumed = run(CFG, str(tmp_path / "k"), progress=False)
    # the kill came after the first depth batch: 2 depth samples and all 6 normals samples were left for ramp
    assert sum(predicted) == 2 + 6
    pd.testing.assert_frame_equal(resumed, reference)


def test_a_torn_last_line_is_dropped_and_its_sample_recomputed(tmp_path):
    folder, reference = run(CFG, str(tmp_path / "r"), progress=False)
    path = folder / "constant__synthetic" / "rows.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])  # a kill in the middle of the last append
    assert len(read_jsonl(path)) == 5
    _, again = run(CFG, str(tmp_path / "r"), progress=False)
    pd.testing.assert_frame_equal(again, reference)
    assert len(read_jsonl(path)) == 6


def test_a_folder_of_another_run_is_never_overwritten(tmp_path):
    run(CFG, str(tmp_path / "r"), progress=False)
    before = (tmp_path / "r" / "manifest.json").read_text()
    other = RunConfig(**{**CFG.__dict__, "seed": 1})
    with pytest.raises(FileExistsError, match=r"other settings \(seed: 0 -> 1, this run "):
        run(other, str(tmp_path / "r"), progress=False)
    assert (tmp_path / "r" / "manifest.json").read_text() == before


def test_a_retrained_checkpoint_never_resumes_the_predictions_of_the_old_one(tmp_path):
    from safetensors.torch import load_file, save_file

    from methods.trivial import train_mean_path
    weights = tmp_path / "mean.safetensors"
    mean = load_file(str(train_mean_path("depth")))["mean"]
    save_file({"mean": mean}, str(weights))
    cfg = RunConfig(methods=("train_mean",), datasets=("synthetic",), count=2, checkpoint=str(weights))
    run(cfg, str(tmp_path / "r"), progress=False)
    run(cfg, str(tmp_path / "r"), progress=False)  # the same weights resume
    before = (tmp_path / "r" / "manifest.json").read_text()
    save_file({"mean": mean + 1.0}, str(weights))  # retrained in place: same path, same settings
    with pytest.raises(FileExistsError, match="other weights for train_mean__synthetic"):
        run(cfg, str(tmp_path / "r"), progress=False)
    assert (tmp_path / "r" / "manifest.json").read_text() == before


def test_an_ensemble_run_says_so_in_every_row_and_table(tmp_path):
    cfg = RunConfig(methods=("dpbridge_tiny", "ramp"), datasets=("synthetic",), count=2, steps=1, ensemble_size=2)
    folder, summary = run(cfg, str(tmp_path / "r"), progress=False)
    sizes = summary.groupby("method")["ensemble_size"].unique()
    assert list(sizes["dpbridge_tiny"]) == [2] and list(sizes["ramp"]) == [1]
    text = (folder / "summary.md").read_text()
    assert "| dpbridge_tiny (mean of 2 samples) | synthetic | all |" in text and "| ramp | synthetic | all |" in text


def test_a_changed_sample_list_never_resumes_the_old_folder(tmp_path, monkeypatch):
    from datasets.synthetic import SyntheticDepth
    cfg = RunConfig(methods=("ramp",), datasets=("synthetic",), count=2)
    run(cfg, str(tmp_path / "r"), progress=False)
    before = (tmp_path / "r" / "manifest.json").read_text()
    real_ids = SyntheticDepth.ids
    monkeypatch.setattr(SyntheticDepth, "ids", lambda self: real_ids(self)[1:])  # e.g. a file gone from the root
    with pytest.raises(FileExistsError, match="another sample list of synthetic"):
        run(cfg, str(tmp_path / "r"), progress=False)
    assert (tmp_path / "r" / "manifest.json").read_text() == before


def test_only_recorded_fingerprints_are_compared():
    from harness.run import changed_weights
    new = {"methods": {"a__x": {"weights_fingerprint": "f1"}, "b__x": {"weights_fingerprint": "f2"}, "c__x": {}}}
    old = {"methods": {"a__x": {"weights_fingerprint": "f0"}, "b__x": {}, "c__x": {}}}  # b: made before fingerprints
    assert changed_weights(old, new) == ["a__x"]
    assert changed_weights(new, new) == []


def test_unknown_method_fails_before_any_compute_and_suggests_the_close_name(tmp_path):
    with pytest.raises(KeyError, match="Did you mean constant"):
        run(RunConfig(methods=("constnt",), count=2), str(tmp_path / "r"), progress=False)
    assert not (tmp_path / "r").exists()


def test_a_nan_prediction_names_the_method_and_sample(tmp_path, monkeypatch):
    monkeypatch.setattr(method_class("constant"), "predict", lambda self, rgb, g: torch.full(
        (rgb.shape[0], 1 if self.task == "depth" else 3, *rgb.shape[2:]), float("nan")))
    with pytest.raises(ValueError, match="constant predicted NaN or inf for sample test/00000"):
        run(RunConfig(methods=("constant",), datasets=("synthetic",), count=2), str(tmp_path / "r"), progress=False)


def test_processing_size_keeps_aspect_and_rounds_to_the_multiple():
    assert evaluate.processing_size(480, 640, 64, 16, "round") == (48, 64)
    assert evaluate.processing_size(64, 64, 0, 16, "round") == (64, 64)
    assert evaluate.processing_size(352, 1216, 768, 64, "round") == (192, 768)


def test_processing_size_padded_is_the_protocol_s_size_and_the_pad_repeats_the_edges():
    assert evaluate.processing_size(4032, 6048, 756, 8) == (504, 756)  # ETH3D, as Marigold: 504 x 760 padded
    assert evaluate.padded_size((504, 756), 8) == (504, 760)
    assert evaluate.processing_size(436, 1024, 0, 8) == (436, 1024)  # Sintel native, not 432
    assert evaluate.processing_size(375, 500, 64, 8) == (48, 64)  # the short side floored (Marigold's resize)
    rgb = np.random.default_rng(0).integers(0, 256, (3, 5, 3), dtype=np.uint8)
    image = SimpleNamespace(rgb=rgb)
    batch = evaluate.prepare_batch([image], (3, 5), 4)  # [1,3,4,8]: one row and three columns repeated
    assert batch.shape == (1, 3, 4, 8) and torch.equal(batch[..., :3, :5], evaluate.prepare_batch([image], (3, 5)))
    assert torch.equal(batch[..., 3, :], batch[..., 2, :])
    assert torch.equal(batch[..., 5:], batch[..., 4:5].expand(-1, -1, -1, 3))


def test_an_image_off_the_multiple_is_padded_by_default_and_round_is_recorded_and_kept_apart(tmp_path):
    seen = []
    base = dict(methods=("dpbridge_tiny",), datasets=("synthetic",), count=1, steps=1,
                dataset_args={"synthetic": {"height": "62"}})  # 62 x 64: the tiny VAE's multiple is 4
    cls = method_class("dpbridge_tiny")
    original = cls.predict
    try:
        cls.predict = lambda self, rgb, g: (seen.append(tuple(rgb.shape[2:])), original(self, rgb, g))[1]
        padded, _ = run(RunConfig(**base), str(tmp_path / "pad"), progress=False)
        rounded, _ = run(RunConfig(**base, size_fit="round"), str(tmp_path / "round"), progress=False)
    finally:
        cls.predict = original
    assert seen == [(64, 64), (64, 64)]  # 62 padded to 64; 62 rounded (half to even) to 64 and resized
    pads, rounds = (np.load(next((f / "dpbridge_tiny__synthetic" / "pred").glob("*.npy"))) for f in (padded, rounded))
    assert pads.shape == (1, 62, 64) and rounds.shape == (1, 64, 64)  # cached at processing size, padding cropped
    assert json.loads((padded / "manifest.json").read_text())["config"]["size_fit"] == "pad"
    assert [set(pd.read_csv(f / "summary.csv").size_fit) for f in (padded, rounded)] == [{"pad"}, {"round"}]
    manifest = json.loads((rounded / "manifest.json").read_text())
    del manifest["config"]["size_fit"]  # as written before the option: those predictions were rounded
    (rounded / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FileExistsError, match="size_fit: 'round' -> 'pad'"):
        run(RunConfig(**base), str(rounded), progress=False)
    run(RunConfig(**base, size_fit="round"), str(rounded), progress=False)  # resumed as it was made


def test_sample_seed_is_stable_and_distinct():
    assert evaluate.sample_seed(0, "test/00001") == evaluate.sample_seed(0, "test/00001")
    assert evaluate.sample_seed(0, "test/00001") != evaluate.sample_seed(1, "test/00001")
    assert evaluate.sample_seed(0, "test/00001") != evaluate.sample_seed(0, "test/00002")


def test_the_prediction_cache_keeps_float32_where_float16_would_change_the_map():
    unit = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 8, 8)
    assert evaluate.cache_copy(unit).dtype == np.float16  # the diffusion methods' maps: half the disk
    millimetres = unit * 30000 + 50000  # up to 80 m in mm: beyond float16's 65504
    offset = unit * 0.25 + 1000  # disparity 999.75 .. 1000.25: float16 steps of 0.5 there
    for pred in (millimetres, offset):
        kept = evaluate.cache_copy(pred)
        assert kept.dtype == np.float32 and np.array_equal(kept, pred)


def test_a_method_predicting_millimetres_scores_as_its_map_in_metres(tmp_path, monkeypatch):
    cfg = RunConfig(methods=("ramp",), datasets=("synthetic",), count=3)
    _, metres = run(cfg, str(tmp_path / "m"), progress=False)
    real_predict = method_class("ramp").predict
    monkeypatch.setattr(method_class("ramp"), "predict", lambda self, rgb, g: real_predict(self, rgb, g) * 1000 + 70000)
    folder, millimetres = run(cfg, str(tmp_path / "mm"), progress=False)
    assert np.load(folder / "ramp__synthetic" / "pred" / "test__00000.npy").dtype == np.float32
    pd.testing.assert_series_equal(millimetres.value, metres.value, rtol=1e-4)


def test_checkpoint_names_exactly_one_method_that_loads_weights(tmp_path):
    weights = "methods/weights/train_mean_depth.safetensors"
    for methods, which in ((("train_mean", "dpbridge_tiny"), "2 methods that load weights"),
                           (("ramp",), "no method that loads weights")):
        cfg = RunConfig(methods=methods, datasets=("synthetic",), count=2, checkpoint=weights)
        with pytest.raises(ValueError, match=f"--checkpoint {weights} replaces the weights of one method, .*{which}"):
            run(cfg, str(tmp_path / "r"), progress=False)
    assert not (tmp_path / "r").exists()
    cfg = RunConfig(methods=("train_mean", "ramp"), datasets=("synthetic",), count=2, checkpoint=weights)
    _, summary = run(cfg, str(tmp_path / "ok"), progress=False)
    assert set(summary.method) == {"train_mean", "ramp"}


def test_resolved_processing_res_puts_the_flag_then_the_protocol_then_the_method():
    from harness.evaluate import resolved_processing_res

    assert resolved_processing_res(None, 0, 768) == 0  # NYUv2, KITTI, ScanNet, the normals sets: native
    assert resolved_processing_res(None, 756, 768) == 756  # ETH3D
    assert resolved_processing_res(None, None, 768) == 768  # no protocol value (a folder, the tiny world)
    assert resolved_processing_res(None, None, 0) == 0
    assert resolved_processing_res(512, 756, 768) == 512  # --processing-res


@pytest.mark.parametrize("protocol_res, seen_size", [(0, (64, 64)), (40, (40, 40)), (None, (32, 32))])
def test_a_benchmark_s_processing_resolution_takes_precedence_over_the_method_s(tmp_path, monkeypatch, protocol_res,
                                                                               seen_size):
    import dataclasses

    from datasets.synthetic import SyntheticDepth
    from methods.base import OutputContract

    cls, seen = method_class("ramp"), []
    original = cls.predict
    monkeypatch.setattr(cls, "contract", property(lambda self: OutputContract(kind="depth", processing_res=32,
                                                                              size_multiple=8)))
    monkeypatch.setattr(cls, "predict", lambda self, rgb, g: (seen.append(tuple(rgb.shape[-2:])),
                                                              original(self, rgb, g))[1])
    init = SyntheticDepth.__init__

    def with_protocol_res(self, *a, **k):  # the tiny world (64 px) as a benchmark declaring a resolution
        init(self, *a, **k)
        self.spec = dataclasses.replace(self.spec, processing_res=protocol_res)

    monkeypatch.setattr(SyntheticDepth, "__init__", with_protocol_res)
    folder, _ = run(RunConfig(methods=("ramp",), datasets=("synthetic",), count=2), str(tmp_path / "r"),
                    progress=False)
    assert set(seen) == {seen_size}
    assert json.loads((folder / "manifest.json").read_text())["methods"]["ramp__synthetic"]["processing_res"] == (
        32 if protocol_res is None else protocol_res)


def test_processing_res_from_the_command_line_overrides_every_resolution_and_refuses_a_negative(tmp_path):
    from harness.cli import main

    out = tmp_path / "r"
    assert main(["run", "--methods", "ramp", "--datasets", "synthetic", "--count", "1", "--processing-res", "48",
                 "--output", str(out), "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["methods"]["ramp__synthetic"]["processing_res"] == 48 and manifest["config"]["processing_res"] == 48
    with pytest.raises(ValueError, match="--processing-res must be >= 0"):
        run(RunConfig(methods=("ramp",), datasets=("synthetic",), count=1, processing_res=-1), str(tmp_path / "n"),
            progress=False)
    assert not (tmp_path / "n").exists()


def test_the_protocol_s_native_sizes_are_processed_as_they_are_at_the_vae_s_multiple():
    from harness.evaluate import processing_size
    from harness.registry import build_method
    from methods.base import RunOptions

    tiny = build_method("dpbridge_tiny", "depth", RunOptions(steps=1)).contract.size_multiple
    assert tiny == 4  # the tiny VAE's downsampling; its UNet's two more are not required
    assert processing_size(480, 640, 0, 8) == (480, 640)  # NYUv2, ScanNet, DIODE (long side 640)
    assert processing_size(352, 1216, 0, 8) == (352, 1216)  # KITTI after the KB crop
    assert processing_size(4032, 6048, 756, 8, "round") == (504, 752)  # ETH3D rounded: 756 to 752


@pytest.mark.parametrize("count", [0, -2])
def test_a_count_below_one_is_refused_before_any_work(tmp_path, count):
    from harness.perturb import conditions
    from harness.robustness import robustness

    cfg = RunConfig(methods=("ramp",), datasets=("synthetic",), count=count)
    with pytest.raises(ValueError, match="count must be >= 1"):
        run(cfg, str(tmp_path / "r"), progress=False)
    with pytest.raises(ValueError, match="count must be >= 1"):
        robustness(cfg, conditions(("gaussian",), {}), str(tmp_path / "b"), progress=False)
    assert not (tmp_path / "r").exists() and not (tmp_path / "b").exists()


def test_an_unreadable_cached_prediction_is_named_with_the_fix(tmp_path):
    cfg = RunConfig(methods=("ramp",), datasets=("synthetic",), count=2)
    folder, _ = run(cfg, str(tmp_path / "r"), progress=False)
    cell = folder / "ramp__synthetic"
    (cell / "rows.jsonl").unlink()  # as if killed after caching the predictions, before scoring them
    broken = sorted((cell / "pred").glob("*.npy"))[0]
    broken.write_bytes(b"\x93NUMPY truncated")
    with pytest.raises(ValueError, match=f"{broken.name}: unreadable cached prediction.*delete it"):
        run(cfg, str(folder), progress=False)


def test_a_processing_resolution_too_small_for_the_network_names_the_samples_and_the_fix(tmp_path):
    cfg = RunConfig(methods=("dpbridge_tiny",), datasets=("synthetic",), steps=1, count=2, processing_res=3)
    with pytest.raises(ValueError, match=r"cannot process test/00000, test/00001 at 4x4: .*at least 16 px"):
        run(cfg, str(tmp_path / "r"), progress=False)


def test_a_run_killed_while_writing_a_batch_resumes_to_the_same_floats(tmp_path):
    import json

    cfg = RunConfig(methods=("dpbridge_tiny",), datasets=("synthetic",), steps=2, count=8, batch_size=4)
    reference, ref_summary = run(cfg, str(tmp_path / "ref"), progress=False)
    folder, _ = run(cfg, str(tmp_path / "killed"), progress=False)
    cell = folder / "dpbridge_tiny__synthetic"
    rows = (cell / "rows.jsonl").read_text().splitlines()
    (cell / "rows.jsonl").write_text("\n".join(rows[:4]) + "\n")  # the second batch had no row yet
    for i in (5, 6, 7):  # and only its first prediction file
        (cell / "pred" / f"test__0000{i}.npy").unlink()
    (folder / "summary.csv").unlink()
    _, summary = run(cfg, str(folder), progress=False)
    for i in range(8):
        name = f"test__0000{i}.npy"
        before = (reference / "dpbridge_tiny__synthetic" / "pred" / name).read_bytes()
        assert (cell / "pred" / name).read_bytes() == before
    pd.testing.assert_frame_equal(summary, ref_summary)
    assert [json.loads(r)["id"] for r in (cell / "rows.jsonl").read_text().splitlines()] == [
        f"test/0000{i}" for i in range(8)]


def test_a_scored_normals_sample_whose_error_map_is_gone_is_scored_again(tmp_path, capsys):
    cfg = RunConfig(methods=("ramp",), datasets=("synthetic_normals",), count=6, batch_size=4)
    folder, before = run(cfg, str(tmp_path / "r"), progress=False)
    err = folder / "ramp__synthetic_normals" / "err" / "test__00004.npy"
    kept = err.read_bytes()
    err.unlink()  # the summary pools every scored sample's error map
    _, after = run(cfg, str(folder), progress=False)
    assert "ramp__synthetic_normals: scoring 1 sample(s) whose pred/*.npy or err/*.npy is missing again" in (
        capsys.readouterr().err)
    assert err.read_bytes() == kept
    pd.testing.assert_frame_equal(after, before)
    err.write_bytes(kept[:40])  # torn (a disk that filled up): named with the fix, not numpy's message
    with pytest.raises(ValueError, match=r"err/test__00004.npy: unreadable error map .*delete it and run the same"):
        run(cfg, str(folder), progress=False)


def test_a_sample_scored_again_without_its_prediction_is_predicted_in_its_batch(tmp_path):
    cfg = RunConfig(methods=("dpbridge_tiny",), datasets=("synthetic_normals",), steps=2, count=8, batch_size=4)
    reference, ref_summary = run(cfg, str(tmp_path / "ref"), progress=False)
    folder, _ = run(cfg, str(tmp_path / "r"), progress=False)
    cell = folder / "dpbridge_tiny__synthetic_normals"
    name = "test__00006.npy"
    (cell / "pred" / name).unlink()  # the prediction alone: `figures` reads it
    _, summary = run(cfg, str(folder), progress=False)  # scored again, beside the cached 4, 5 and 7
    assert (cell / "pred" / name).read_bytes() == (reference / cell.name / "pred" / name).read_bytes()
    pd.testing.assert_frame_equal(summary, ref_summary)


class ListedDataset:
    """A dataset whose sample list was read from a file: its description carries that list's fingerprint."""
    name, spec = "listed", None

    def __init__(self, ids):
        self._ids = ids

    def ids(self):
        return list(self._ids)

    def describe(self):
        from harness.manifest import list_fingerprint
        return {"list_fingerprint": list_fingerprint(self._ids), "list_standard": "some standard"}


def test_a_count_run_is_fingerprinted_as_the_samples_it_evaluates():
    from harness.manifest import list_fingerprint
    from harness.run import Subset
    info = Subset(ListedDataset(["a", "b", "c", "d"]), 2).describe()
    assert info["list_fingerprint"] == list_fingerprint(["a", "b"]) != list_fingerprint(["a", "b", "c", "d"])
    assert info["subset_of_fingerprint"] == list_fingerprint(["a", "b", "c", "d"])
    assert (info["count"], info["subset_of"]) == (2, 4)


def test_a_count_run_made_before_subset_fingerprints_still_resumes_on_the_same_list_only():
    from harness.run import Subset, changed_fingerprints
    now = {"datasets": {"listed": Subset(ListedDataset(["a", "b", "c", "d"]), 2).describe()}}
    whole = now["datasets"]["listed"]["subset_of_fingerprint"]
    legacy = {"datasets": {"listed": {"list_fingerprint": whole, "count": 2, "subset_of": 4}}}  # parent's, as before
    assert changed_fingerprints(legacy, now, "datasets", "list_fingerprint") == []
    other_parent = {"datasets": {"listed": {"list_fingerprint": "0" * 16, "count": 2, "subset_of": 4}}}
    assert changed_fingerprints(other_parent, now, "datasets", "list_fingerprint") == ["listed"]
    current = {"datasets": {"listed": {**now["datasets"]["listed"], "list_fingerprint": whole}}}  # labelled: no pass
    assert changed_fingerprints(current, now, "datasets", "list_fingerprint") == ["listed"]
