"""`predictions:DIR`: scoring any model's saved Marigold-layout .npy files under the harness' protocol."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from datasets.base import Dataset, marigold_prediction_path
from datasets.synthetic import SyntheticDepth, SyntheticNormals
from harness.cli import main
from harness.registry import method_class, parse_method_spec
from harness.run import RunConfig, run
from harness.runio import read_jsonl
from harness.scoring import score_depth

COUNT = 4


def samples(cls, count=COUNT, **kwargs):
    ds = cls(**kwargs)
    return ds, [ds.load(i) for i in ds.ids()[:count]]


def write(folder, ds, sample_id, array):
    path = folder / ds.prediction_relpath(sample_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)
    return path


def half(array_chw):
    """[C,H,W] -> [C,H/2,W/2] (bilinear, antialias): a prediction at another processing resolution."""
    t = torch.from_numpy(np.asarray(array_chw, np.float32))[None]
    return F.interpolate(t, scale_factor=0.5, mode="bilinear", antialias=True)[0].numpy()


def affine_depth(s):
    return (2.0 * s.depth - 0.5).astype(np.float32)  # [H,W]: the GT scaled and shifted


def summary_value(summary, metric, **where):
    rows = summary[(summary.group == "all") & (summary.metric == metric)]
    for k, v in where.items():
        rows = rows[rows[k] == v]
    assert len(rows) == 1
    return rows.iloc[0]


def test_prediction_paths_follow_the_marigold_layout():
    assert Dataset().prediction_relpath("test/00007") == "test/pred_00007.npy"
    assert SyntheticDepth().prediction_relpath("test/00007") == "test/pred_00007.npy"
    assert marigold_prediction_path("test/bathroom/rgb_0001.png", "rgb_i_d") == "test/bathroom/pred_0001.npy"
    assert marigold_prediction_path("courtyard/images/dslr_images/DSC_0286.JPG") == \
        "courtyard/images/dslr_images/pred_DSC_0286.npy"


def test_method_specs_parse_and_name_safe_cells(tmp_path):
    spec = parse_method_spec("predictions[disparity]:C:/preds:v2")
    assert (spec.name, spec.option, spec.argument) == ("predictions", "disparity", "C:/preds:v2")
    assert spec.cell.startswith("predictions-") and len(spec.cell) == len("predictions-") + 8
    assert parse_method_spec("ramp").cell == "ramp"
    with pytest.raises(ValueError, match="needs its folder"):
        method_class("predictions")
    with pytest.raises(ValueError, match="options: depth, disparity, normals"):
        method_class("predictions[inverse]:x")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run(RunConfig(methods=(f"predictions:{tmp_path / 'nowhere'}",), datasets=("synthetic",), count=2),
            str(tmp_path / "r"), progress=False)
    assert not (tmp_path / "r").exists()


def test_affine_depth_at_gt_and_half_resolution_is_scored_like_any_method(tmp_path):
    ds, ss = samples(SyntheticDepth)
    full, low = tmp_path / "full", tmp_path / "low"
    for s in ss:
        write(full, ds, s.id, affine_depth(s))  # [H,W]
        write(low, ds, s.id, half(affine_depth(s)[None]))  # [1,H/2,W/2]
    cfg = RunConfig(methods=(f"predictions:{full}", f"predictions:{low}"), datasets=("synthetic",), count=COUNT)
    folder, summary = run(cfg, str(tmp_path / "r"), progress=False)
    assert summary_value(summary, "abs_rel", variant=f"depth:{full}").value < 1e-5
    manifest = json.loads((folder / "manifest.json").read_text())
    cells = manifest["methods"]
    assert len(cells) == 2 and all(k.startswith("predictions-") and k.endswith("__synthetic") for k in cells)
    assert {v["folder"] for v in cells.values()} == {str(full.resolve()), str(low.resolve())}
    assert all(v["alignment"] == "least_squares" for v in cells.values())
    assert list(manifest["config"]["methods"]) == [f"predictions:{full}", f"predictions:{low}"]
    # the half-resolution files are resized back to GT and aligned exactly as the scoring code does for any method
    low_cell = next(folder / k for k, v in cells.items() if v["folder"] == str(low.resolve()))
    rows = {r["id"]: r for r in read_jsonl(low_cell / "rows.jsonl")}
    for s in ss:
        expected = score_depth(half(affine_depth(s)[None]), s, ds.spec, "least_squares")
        assert rows[s.id]["abs_rel"] == pytest.approx(expected["abs_rel"], rel=1e-6)
    assert not any((folder / k / "pred").exists() for k in cells)  # no cached copy of files already on disk
    assert (summary.n_missing == 0).all()


@pytest.mark.parametrize("layout", ["chw", "hwc", "chw_half"])
def test_normals_from_gt_in_either_layout_score_zero_error(tmp_path, layout):
    ds, ss = samples(SyntheticNormals)
    for s in ss:
        chw = s.normals.transpose(2, 0, 1)  # [3,H,W]
        array = {"chw": chw, "hwc": s.normals, "chw_half": half(chw)}[layout]
        write(tmp_path / "p", ds, s.id, array)
    cfg = RunConfig(methods=(f"predictions:{tmp_path / 'p'}",), datasets=("synthetic_normals",), count=COUNT)
    _, summary = run(cfg, str(tmp_path / "r"), progress=False)
    mean = summary_value(summary, "mean").value
    assert mean < (1e-2 if layout != "chw_half" else 8.0)  # degrees; half resolution blurs the edges


def test_disparity_kind_is_aligned_in_disparity_space(tmp_path):
    ds, ss = samples(SyntheticDepth)
    for s in ss:
        disparity = np.where(s.valid, 3.0 / np.maximum(s.depth, 1e-3) + 0.1, 0.0)  # affine in 1/depth
        write(tmp_path / "p", ds, s.id, disparity.astype(np.float32))
    cfg = RunConfig(methods=(f"predictions[disparity]:{tmp_path / 'p'}", f"predictions[depth]:{tmp_path / 'p'}"),
                    datasets=("synthetic", "synthetic_normals"), count=COUNT)
    folder, summary = run(cfg, str(tmp_path / "r"), progress=False)
    assert set(summary.dataset) == {"synthetic"}  # [disparity] and [depth] serve depth datasets only
    disp = summary_value(summary, "abs_rel", variant=f"disparity:{tmp_path / 'p'}")
    depth = summary_value(summary, "abs_rel", variant=f"depth:{tmp_path / 'p'}")
    assert disp.alignment == "least_squares_disparity" and depth.alignment == "least_squares"
    assert disp.value < 1e-4 < 0.05 < depth.value


def test_missing_files_are_an_error_listing_the_ids_before_any_scoring(tmp_path):
    ds, ss = samples(SyntheticDepth)
    for s in ss[1:3]:
        write(tmp_path / "p", ds, s.id, affine_depth(s))
    cfg = RunConfig(methods=(f"predictions:{tmp_path / 'p'}",), datasets=("synthetic",), count=COUNT)
    with pytest.raises(ValueError, match="2 missing") as err:
        run(cfg, str(tmp_path / "r"), progress=False)
    assert "test/00000" in str(err.value) and "test/00003" in str(err.value)
    assert "--allow-missing" in str(err.value) and "test/pred_00000.npy" in str(err.value)
    assert not (tmp_path / "r").exists()


def test_allow_missing_scores_the_rest_reports_the_count_and_resumes(tmp_path, capsys):
    ds, ss = samples(SyntheticDepth)
    for s in ss[:3]:
        write(tmp_path / "p", ds, s.id, affine_depth(s))
    out = str(tmp_path / "r")
    args = ["run", "--methods", f"predictions:{tmp_path / 'p'}", "--datasets", "synthetic", "--count", str(COUNT),
            "--allow-missing", "--quiet", "--output", out]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "| n | missing |" in table and "| all | 3 | 1 |" in table
    summary = pd.read_csv(tmp_path / "r" / "summary.csv")
    row = summary_value(summary, "abs_rel")
    assert (row.n_samples, row.n_missing) == (3, 1) and row.value < 1e-5
    cell = next(p for p in (tmp_path / "r").iterdir() if p.is_dir())
    assert json.loads((cell / "missing.json").read_text()) == ["test/00003"]
    assert len(read_jsonl(cell / "rows.jsonl")) == 3
    write(tmp_path / "p", ds, ss[3].id, affine_depth(ss[3]))  # the missing file arrives: the same command scores it
    assert main(args) == 0
    assert "| n | missing |" not in capsys.readouterr().out
    assert len(read_jsonl(cell / "rows.jsonl")) == 4 and json.loads((cell / "missing.json").read_text()) == []


def test_no_file_at_all_is_an_error_even_with_allow_missing(tmp_path):
    (tmp_path / "p").mkdir()
    cfg = RunConfig(methods=(f"predictions:{tmp_path / 'p'}",), datasets=("synthetic",), count=2, allow_missing=True)
    with pytest.raises(ValueError, match="root of the Marigold layout"):
        run(cfg, str(tmp_path / "r"), progress=False)


def test_misshapen_and_non_finite_files_are_one_error_naming_every_sample(tmp_path):
    ds, ss = samples(SyntheticDepth)
    write(tmp_path / "p", ds, ss[0].id, affine_depth(ss[0]))
    write(tmp_path / "p", ds, ss[1].id, np.zeros((3, 64, 64), np.float32))  # a normal map in a depth folder
    nan = affine_depth(ss[2])
    nan[5, 5] = np.nan
    write(tmp_path / "p", ds, ss[2].id, nan)
    write(tmp_path / "p", ds, ss[3].id, np.zeros((2, 2, 64, 64), np.float32))
    cfg = RunConfig(methods=(f"predictions:{tmp_path / 'p'}",), datasets=("synthetic",), count=COUNT,
                    allow_missing=True)
    with pytest.raises(ValueError, match="3 unusable") as err:
        run(cfg, str(tmp_path / "r"), progress=False)
    text = str(err.value)
    assert "test/00001" in text and "(3, 64, 64)" in text and "test/00002" in text and "NaN" in text
    assert "test/00003" in text and "test/00000" not in text
    assert not (tmp_path / "r").exists()


def test_a_transposed_prediction_names_the_sample(tmp_path):
    ds, ss = samples(SyntheticDepth, count=2, height=32, width=64)
    write(tmp_path / "p", ds, ss[0].id, affine_depth(ss[0]))
    write(tmp_path / "p", ds, ss[1].id, affine_depth(ss[1]).T.copy())  # [W,H]
    cfg = RunConfig(methods=(f"predictions:{tmp_path / 'p'}",), datasets=("synthetic",), count=2,
                    dataset_args={"synthetic": {"height": 32, "width": 64}})
    with pytest.raises(ValueError, match="test/00001.*64x32 but the GT 32x64"):
        run(cfg, str(tmp_path / "r"), progress=False)


def test_a_kitti_prediction_of_the_whole_frame_is_kb_cropped_as_the_gt(tmp_path):
    import sys
    from pathlib import Path

    from datasets.crops import kb_crop
    from datasets.kitti import KITTI
    from harness.evaluate import Pair, saved_prediction
    from methods.base import RunOptions

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "datasets"))
    from depth_fixtures import write_kitti

    _, listing = write_kitti(tmp_path / "d")
    (tmp_path / "list.txt").write_text(listing)
    ds = KITTI(tmp_path / "d", list_path=tmp_path / "list.txt", warn_list=False)
    sample = ds.load(ds.ids()[0])
    frame = np.random.default_rng(0).random((375, 1242), dtype=np.float32)  # a prediction of the raw frame
    write(tmp_path / "p", ds, sample.id, frame)
    write(tmp_path / "q", ds, sample.id, kb_crop(frame))  # the same, saved already cropped
    for folder in ("p", "q"):
        method = method_class(f"predictions:{tmp_path / folder}")("depth", RunOptions(
            extra={"spec_argument": str(tmp_path / folder)}))
        pred = saved_prediction(Pair(method, ds, tmp_path / "r", 0), sample)
        assert pred.shape == (1, 352, 1216) and np.array_equal(pred[0], kb_crop(frame))  # cropped, not squashed
