"""`--datasets folder:DIR`: a user's own data, scored like any benchmark; every bad input named."""
import json

import numpy as np
import pytest

from datasets.decode import encode_image, encode_png16
from harness.cli import main
from harness.registry import dataset_class
from harness.run import RunConfig, run
from harness.runio import read_jsonl


def ramp_depth(h, w, near=1.0, far=5.0):
    """Metres: far at the top row, near at the bottom (what the `ramp` method predicts, up to scale/shift)."""
    return np.repeat(np.linspace(far, near, h, dtype=np.float32)[:, None], w, axis=1)


def make_folder(root, names=("a", "b"), h=12, w=10, spec=None, npy=()):
    rng = np.random.default_rng(0)
    for sub in ("rgb", "depth"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / "rgb" / f"{name}.png").write_bytes(encode_image(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)))
        d = ramp_depth(h, w)
        if name in npy:
            np.save(root / "depth" / f"{name}.npy", d)
        else:
            (root / "depth" / f"{name}.png").write_bytes(encode_png16(np.round(d * 1000).astype(np.uint16)))
    if spec is not None:
        (root / "spec.json").write_text(json.dumps(spec))
    return root


def build(text, **kwargs):
    return dataset_class(text)(**kwargs)


def test_a_folder_is_scored_like_a_benchmark(tmp_path):
    root = make_folder(tmp_path / "mine", names=("a", "b", "c"), npy=("c",), spec={"max_depth": 4.5})
    folder, summary = run(RunConfig(methods=("ramp",), datasets=(f"folder:{root}",)), str(tmp_path / "r"),
                          progress=False)
    ds = build(f"folder:{root}")
    assert ds.name.startswith("folder-") and ds.ids() == ["a", "b", "c"] and ds.spec.task == "depth"
    sample = ds.load("a")
    assert sample.depth.dtype == np.float32 and abs(sample.depth[-1, 0] - 1.0) < 1e-3  # mm -> m
    assert not sample.valid[0].any() and sample.valid[-1].all()  # 5 m > max_depth 4.5 from spec.json
    abs_rel = summary[(summary.metric == "abs_rel") & (summary.group == "all")].value.item()
    assert abs_rel < 0.02  # the ramp fits a linear ramp up to quantisation and resizing
    rows = read_jsonl(folder / f"ramp__{ds.name}" / "rows.jsonl")
    assert len(rows) == 3 and all(r["n_valid"] == sample.valid.sum() for r in rows)


def test_spec_file_and_flags_set_the_protocol(tmp_path):
    root = make_folder(tmp_path / "mine", spec={"max_depth": 4.5, "processing_res": 32, "alignment": "none"})
    ds = build(f"folder:{root}", max_depth="3")  # --dataset-set max_depth=3 overrides spec.json
    assert (ds.spec.max_depth, ds.spec.clip_max, ds.spec.processing_res, ds.spec.alignment) == (3.0, 3.0, 32, "none")
    (root / "spec.json").write_text(json.dumps({"max_dept": 3}))
    with pytest.raises(ValueError, match=r"unknown folder dataset settings \['max_dept'\]"):
        build(f"folder:{root}")


@pytest.mark.parametrize("spec, message", [
    ({"alignment": "least_sqaures"}, "alignment 'least_sqaures': expected least_squares or least_squares_disparity"),
    ({"normals_aggregation": "per_imgae"}, "normals_aggregation 'per_imgae': expected pooled or per_image"),
    ({"normals_x": "up"}, "normals_x 'up': expected right or left"),
    ({"processing_res": -1}, "processing_res -1: expected >= 0"),
    ({"depth_png_scale": 0}, "depth_png_scale 0.0: expected > 0")])
def test_a_setting_outside_its_values_is_refused_naming_the_spec_file(tmp_path, spec, message):
    root = make_folder(tmp_path / "mine", spec=spec)
    with pytest.raises(ValueError, match=f"from {root / 'spec.json'} or --dataset-set.*{message}"):
        build(f"folder:{root}")  # when the dataset is built: before any model runs


def test_the_cli_passes_dataset_settings_to_folder_datasets(tmp_path, capsys):
    root = make_folder(tmp_path / "mine")
    code = main(["run", "--methods", "ramp", "--datasets", f"folder:{root}", "--dataset-set", "max_depth=4.5",
                 "--output", str(tmp_path / "r"), "--quiet"])
    assert code == 0
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    (info,) = manifest["datasets"].values()
    assert info["settings"]["max_depth"] == 4.5 and info["root"] == str(root.resolve())


def test_normals_folder(tmp_path):
    root = tmp_path / "n"
    (root / "rgb").mkdir(parents=True)
    (root / "normals").mkdir()
    (root / "rgb" / "x.png").write_bytes(encode_image(np.zeros((6, 8, 3), np.uint8)))
    n = np.zeros((6, 8, 3), np.float32)
    n[..., 0] = 1.0  # facing right in the file's frame
    n[0] = 0.0  # no normal on the top row
    np.save(root / "normals" / "x.npy", n)
    ds = build(f"folder[normals]:{root}", normals_x="left")
    s = ds.load("x")
    assert ds.spec.task == "normals" and not s.valid[0].any() and s.valid[1:].all()
    np.testing.assert_allclose(s.normals[1, 0], [-1.0, 0.0, 0.0])  # x-left file -> canonical x-right


@pytest.mark.parametrize("breakage, message", [
    (lambda r: (r / "depth" / "b.png").unlink(), r"rgb/b.png: no matching depth/b"),
    (lambda r: (r / "rgb" / "a.png").unlink(), r"depth/a.png: no matching rgb/a"),
    (lambda r: (r / "depth" / "a.png").write_bytes(encode_png16(np.ones((5, 10), np.uint16))),
     r"depth/a.png: 5x10 but its RGB .*rgb/a.png is 12x10"),
    (lambda r: (r / "depth" / "a.png").write_bytes(encode_image(np.ones((12, 10, 3), np.uint8))),
     r"depth/a.png: unreadable \(mode RGB, expected a single-channel 16-bit PNG"),
    (lambda r: (r / "depth" / "a.png").write_bytes(b"garbage"), r"depth/a.png: unreadable"),
    (lambda r: (r / "depth" / "a.txt").write_text("x"), r"depth/a.txt: not a depth file"),
])
def test_bad_folders_name_the_file(tmp_path, breakage, message):
    root = make_folder(tmp_path / "mine")
    breakage(root)
    with pytest.raises(ValueError, match=message):
        build(f"folder:{root}")


def test_a_folder_without_pairs_or_without_rgb_is_refused(tmp_path):
    root = tmp_path / "empty"
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    with pytest.raises(ValueError, match="no matching pairs"):
        build(f"folder:{root}")
    with pytest.raises(FileNotFoundError, match=r"nothing/rgb does not exist"):
        build(f"folder:{tmp_path / 'nothing'}")
    with pytest.raises(ValueError, match="needs its root: write folder:<root>"):
        dataset_class("folder")
    with pytest.raises(ValueError, match="takes no argument"):
        dataset_class("synthetic:x")


def test_a_sample_without_a_valid_pixel_names_its_file_and_the_rule(tmp_path):
    root = make_folder(tmp_path / "mine", npy=("b",))
    np.save(root / "depth" / "b.npy", np.full((12, 10), np.nan, np.float32))
    ds = build(f"folder:{root}")
    ds.load("a")  # the other sample is fine
    with pytest.raises(ValueError, match=r"depth/b.npy: no valid pixel \(valid: finite depth in \(0.001, inf\) m"):
        ds.load("b")
    code = main(["run", "--methods", "ramp", "--datasets", f"folder:{root}", "--output", str(tmp_path / "r"),
                 "--quiet", "--continue-on-error"])
    assert code == 0
    (row,) = [r for r in read_jsonl(next((tmp_path / "r").glob("ramp__folder-*")) / "rows.jsonl") if r["id"] == "b"]
    assert row["failed"] and "depth/b.npy: no valid pixel" in row["reason"]
