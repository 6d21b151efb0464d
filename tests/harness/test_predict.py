"""`python -m harness predict`: files, dtypes, ranges, sizes, never overwriting, bad inputs."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from harness import pictures
from harness.cli import main
from harness.predict import PredictConfig, predict
from harness.registry import method_class
from methods.base import OutputContract


def write_image(path, h, w, seed=0):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / "in"
    write_image(folder / "a.png", 37, 53)
    write_image(folder / "sub" / "b.jpg", 71, 29, seed=1)
    return folder


def test_depth_outputs_have_the_image_size_and_documented_ranges(images, tmp_path):
    out = tmp_path / "out"
    done = predict(PredictConfig(method="ramp", task="depth"), [str(images)], str(out), progress=False)
    assert sorted(done["written"]) == ["a", "sub/b"]
    for name, (h, w) in {"a": (37, 53), "sub/b": (71, 29)}.items():
        raw = np.load(out / f"{name}_depth.npy")
        assert raw.dtype == np.float32 and raw.shape == (h, w)
        png = pictures.read_png16(out / f"{name}_depth.png")
        assert png.dtype == np.uint16 and png.shape == (h, w)
        assert (png.min(), png.max()) == (0, 65535)  # normalised to the full 16-bit range
        # 0 = nearest: the ramp grows to the top, so the bottom row is the nearest
        assert png[-1].mean() < png[0].mean()
        np.testing.assert_array_equal(png, pictures.depth_to_uint16(raw))
        colored = np.asarray(Image.open(out / f"{name}_depth_colored.png"))
        assert colored.dtype == np.uint8 and colored.shape == (h, w, 3)
    assert json.loads((out / "predict.json").read_text())["method"] == "ramp"


def test_near_is_warm_in_the_colour_map():
    rgb = pictures.colorize(np.array([[0.0, 1.0]]))  # 0 = near, 1 = far
    near, far = rgb[0, 0].astype(int), rgb[0, 1].astype(int)
    assert near[0] > near[2] and near.sum() > far.sum()  # near: red-yellow and bright; far: dark


def test_normals_png_is_the_canonical_encoding_of_the_npy(images, tmp_path):
    out = tmp_path / "out"
    predict(PredictConfig(method="ramp", task="normals"), [str(images / "a.png")], str(out), progress=False)
    n = np.load(out / "a_normals.npy")
    assert n.dtype == np.float32 and n.shape == (37, 53, 3)
    np.testing.assert_allclose(np.linalg.norm(n, axis=-1), 1.0, atol=1e-5)
    rgb = np.asarray(Image.open(out / "a_normals.png"))
    assert rgb.dtype == np.uint8 and rgb.shape == (37, 53, 3)
    np.testing.assert_array_equal(rgb, np.round((n + 1) / 2 * 255).astype(np.uint8))
    # ramp: up-facing (y = +1 -> green high) at the bottom, camera-facing (z = +1 -> blue high) at the top
    assert rgb[-1, :, 1].mean() > 200 and rgb[0, :, 2].mean() > 200


def test_the_method_sees_its_processing_resolution_padded_to_its_size_multiple(images, tmp_path, monkeypatch):
    cls = method_class("ramp")
    seen = []
    original = cls.predict
    monkeypatch.setattr(cls, "contract", property(lambda self: OutputContract(kind="depth", processing_res=32,
                                                                              size_multiple=8)))
    monkeypatch.setattr(cls, "predict", lambda self, rgb, g: (seen.append(tuple(rgb.shape)), original(self, rgb, g))[1])
    predict(PredictConfig(method="ramp"), [str(images)], str(tmp_path / "out"), progress=False)
    assert sorted(seen) == [(1, 3, 24, 32), (1, 3, 32, 16)]  # 37x53 -> 22x32 + pad; 71x29 -> 32x13 + pad
    assert np.load(tmp_path / "out" / "sub" / "b_depth.npy").shape == (71, 29)  # resized back


def test_png16_round_trip_is_exact(tmp_path):
    a = np.random.default_rng(0).integers(0, 65536, (13, 7), dtype=np.uint16)
    pictures.write_png(tmp_path / "d.png", a)
    np.testing.assert_array_equal(pictures.read_png16(tmp_path / "d.png"), a)
    pictures.write_png(tmp_path / "e.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="e.png: expected a 16-bit"):
        pictures.read_png16(tmp_path / "e.png")


def test_a_file_that_is_not_an_image_is_named(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    with pytest.raises(pictures.NotAnImageError, match="notes.png is not an image"):
        predict(PredictConfig(method="ramp"), [str(bad)], str(tmp_path / "out"), progress=False)
    assert not (tmp_path / "out").exists()
    assert main(["predict", "--method", "ramp", str(bad), "--output", str(tmp_path / "o2")]) == 2


def test_existing_outputs_are_skipped_partial_ones_and_other_settings_refused(images, tmp_path):
    out = tmp_path / "out"
    predict(PredictConfig(method="ramp"), [str(images)], str(out), progress=False)
    before = (out / "a_depth.png").stat().st_mtime_ns
    again = predict(PredictConfig(method="ramp"), [str(images)], str(out), progress=False)
    assert again["written"] == [] and sorted(again["skipped"]) == ["a", "sub/b"]
    assert (out / "a_depth.png").stat().st_mtime_ns == before
    (out / "a_depth_colored.png").unlink()
    with pytest.raises(FileExistsError, match="only some of their outputs"):
        predict(PredictConfig(method="ramp"), [str(images)], str(out), progress=False)
    with pytest.raises(FileExistsError, match="other settings"):
        predict(PredictConfig(method="constant"), [str(images / "sub")], str(out), progress=False)


def test_a_damaged_settings_file_is_named(images, tmp_path):
    out = tmp_path / "out"
    predict(PredictConfig(method="ramp"), [str(images)], str(out), progress=False)
    (out / "predict.json").write_text("[]")
    with pytest.raises(ValueError, match=r"predict.json is damaged \(holds a JSON list.*choose another --output"):
        predict(PredictConfig(method="ramp"), [str(images)], str(out), progress=False)


def test_a_folder_written_before_size_fit_continues_only_as_it_was_made(images, tmp_path):
    out = tmp_path / "out"
    predict(PredictConfig(method="ramp", size_fit="round"), [str(images)], str(out), progress=False)
    settings = json.loads((out / "predict.json").read_text())
    del settings["size_fit"]  # as written before the option
    (out / "predict.json").write_text(json.dumps(settings))
    with pytest.raises(FileExistsError, match=r"other settings \(size_fit\)"):
        predict(PredictConfig(method="ramp"), [str(images)], str(out), progress=False)
    again = predict(PredictConfig(method="ramp", size_fit="round"), [str(images)], str(out), progress=False)
    assert again["written"] == []


def test_an_image_cut_short_by_a_kill_is_written_again(images, tmp_path):
    out = tmp_path / "out"
    first = predict(PredictConfig(method="ramp"), [str(images)], str(out), progress=False)
    npy = np.load(out / "a_depth.npy")
    for name in ("a_depth.npy", "a_depth_colored.png"):  # killed after the 16-bit PNG: the .npy is written last
        (out / name).unlink()
    again = predict(PredictConfig(method="ramp"), [str(images)], str(out), progress=False)
    assert again["written"] == ["a"] and again["skipped"] == ["sub/b"] and first["written"] == ["a", "sub/b"]
    np.testing.assert_array_equal(np.load(out / "a_depth.npy"), npy)
    assert (out / "a_depth_colored.png").is_file()
    resolved = json.loads((out / "predict.json").read_text())["resolved"]  # what the defaults came to
    assert resolved["processing_res"] == 0 and resolved["method"]["method"] == "ramp"
    (out / "a_depth.npy").unlink()
    with pytest.raises(FileExistsError, match="other settings"):  # the same rewrite under other settings: refused
        predict(PredictConfig(method="constant"), [str(images)], str(out), progress=False)


def test_two_inputs_with_the_same_output_name_are_refused(tmp_path):
    write_image(tmp_path / "x.png", 8, 8)
    write_image(tmp_path / "x.jpg", 8, 8)
    with pytest.raises(ValueError, match="would both write x_"):
        predict(PredictConfig(method="ramp"), [str(tmp_path / "x.png"), str(tmp_path / "x.jpg")],
                str(tmp_path / "out"), progress=False)


def test_a_nan_prediction_names_the_image(images, tmp_path, monkeypatch):
    monkeypatch.setattr(method_class("ramp"), "predict", lambda self, rgb, g: torch.full(
        (rgb.shape[0], 1, *rgb.shape[2:]), float("nan")))
    with pytest.raises(ValueError, match="NaN or inf for a"):
        predict(PredictConfig(method="ramp"), [str(images / "a.png")], str(tmp_path / "out"), progress=False)


@pytest.mark.parametrize("field, value, refusal", [("batch_size", 0, "--batch-size must be >= 1"),
                                                   ("batch_size", -1, "--batch-size must be >= 1"),
                                                   ("steps", 0, "--steps must be >= 1"),
                                                   ("processing_res", -5, "--processing-res must be >= 0")])
def test_settings_that_cannot_run_are_refused_before_anything_is_recorded(images, tmp_path, field, value, refusal):
    with pytest.raises(ValueError, match=refusal):
        predict(PredictConfig(method="dpbridge_tiny", **{field: value}), [str(images)], str(tmp_path / "out"),
                progress=False)
    assert not (tmp_path / "out").exists()


def test_an_output_folder_inside_the_inputs_is_not_read_back(images):
    out = images / "maps"
    first = predict(PredictConfig(method="ramp"), [str(images)], str(out), progress=False)
    again = predict(PredictConfig(method="ramp"), [str(images)], str(out), progress=False)
    assert sorted(first["written"]) == ["a", "sub/b"] and again["written"] == [] and sorted(again["skipped"]) == [
        "a", "sub/b"]
    elsewhere = predict(PredictConfig(method="ramp", seed=1), [str(images)], str(images.parent / "o2"),
                        progress=False)  # earlier predictions (a predict.json folder) are not photos either
    assert sorted(elsewhere["written"]) == ["a", "sub/b"]


def test_an_image_too_small_for_the_network_is_named_with_the_fix(images, tmp_path):
    with pytest.raises(ValueError, match=r"cannot process a at 4x4: its network needs at least 16 px a side; use a "
                                         r"larger --processing-res \(the method's own is 64\)"):
        predict(PredictConfig(method="dpbridge_tiny", steps=1, processing_res=3), [str(images / "a.png")],
                str(tmp_path / "out"), progress=False)
