"""`python -m harness figures`: pixel sizes, deterministic selection, no model run, clear errors."""
import shutil

import numpy as np
import pytest
from PIL import Image

from harness import figures, pictures
from harness.figure_layout import SIZES
from harness.figures import FigureConfig, NoCachedPredictions, make_figures, select_ids
from harness.registry import method_class
from harness.run import RunConfig, run
from harness.runio import read_jsonl


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    cfg = RunConfig(methods=("constant", "ramp"), datasets=("synthetic", "synthetic_normals"), count=6, batch_size=6)
    folder, _ = run(cfg, str(tmp_path_factory.mktemp("runs") / "r"), progress=False)
    return folder


def never_predict(self, rgb, generators):
    raise AssertionError("figures ran a model")


def test_column_and_slide_pngs_have_the_documented_pixel_sizes(tiny_run, tmp_path, monkeypatch):
    for name in ("constant", "ramp"):
        monkeypatch.setattr(method_class(name), "predict", never_predict)
    cfg = FigureConfig(random=1, best_worst=1)
    paths = make_figures([str(tiny_run)], cfg, str(tmp_path / "f"))
    assert sorted(p.name for p in paths) == ["synthetic_column.png", "synthetic_normals_column.png"]
    for p in paths:
        w, h = Image.open(p).size
        assert w == round(SIZES["column"][0] * SIZES["column"][1]) == 990
        # 2-3 samples (random + best + worst, two may coincide) x 2 rows of square panels, 4 columns
        cell = (3.3 - 0.10 - 0.01 * 3) / 4
        assert 300 * 2 * cell * 2 < h < 300 * (2 * cell * 3 + 0.5)
    slide = make_figures([str(tiny_run)], FigureConfig(random=1, size="slide"), str(tmp_path / "s"))
    assert {Image.open(p).size for p in slide} == {(1920, 1080)}


def test_the_same_options_give_the_same_png_and_the_seed_changes_the_draw(tiny_run, tmp_path):
    a = make_figures([str(tiny_run)], FigureConfig(random=2, seed=1), str(tmp_path / "a"))
    b = make_figures([str(tiny_run)], FigureConfig(random=2, seed=1), str(tmp_path / "b"))
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    ids = [f"test/{i:05d}" for i in range(20)]
    draws = {tuple(select_ids(ids, {}, "depth", FigureConfig(random=3, seed=s))) for s in range(5)}
    assert len(draws) > 1
    assert select_ids(ids, {}, "depth", FigureConfig(random=3, seed=7)) == \
        select_ids(ids, {}, "depth", FigureConfig(random=3, seed=7))


def test_best_and_worst_come_from_the_rank_methods_rows(tiny_run):
    rows = {r["id"]: r for r in read_jsonl(tiny_run / "ramp__synthetic" / "rows.jsonl")}
    ids = sorted(rows)
    chosen = select_ids(ids, rows, "depth", FigureConfig(ids=(ids[2],), best_worst=1))
    by_abs_rel = sorted(ids, key=lambda i: rows[i]["abs_rel"])
    assert chosen[0] == (ids[2], "")
    assert (by_abs_rel[0], "best 1") in chosen or by_abs_rel[0] == ids[2]
    assert (by_abs_rel[-1], "worst 1") in chosen or by_abs_rel[-1] == ids[2]
    with pytest.raises(ValueError, match="test/99999 not in every run"):
        select_ids(ids, rows, "depth", FigureConfig(ids=("test/99999",)))


def test_a_run_folder_without_cached_predictions_is_named_with_the_fix(tiny_run, tmp_path):
    copy = tmp_path / "nocache"
    shutil.copytree(tiny_run, copy)
    shutil.rmtree(copy / "ramp__synthetic" / "pred")
    with pytest.raises(NoCachedPredictions, match=r"ramp__synthetic holds no cached predictions.*python -m harness "
                                                  r"run"):
        make_figures([str(copy)], FigureConfig(random=1), str(tmp_path / "f"))
    with pytest.raises(FileNotFoundError, match="is not a run folder"):
        make_figures([str(tmp_path)], FigureConfig(random=1), str(tmp_path / "f"))


def test_two_runs_give_one_column_per_run_method_and_existing_pngs_are_not_overwritten(tiny_run, tmp_path):
    copy = tmp_path / "other"
    shutil.copytree(tiny_run, copy)
    grids = []
    original = figures.add_sample
    figures.add_sample = lambda grid, *a: (grids.append(grid), original(grid, *a))[1]
    try:
        make_figures([str(tiny_run), str(copy)], FigureConfig(ids=("test/00001",)), str(tmp_path / "f"))
    finally:
        figures.add_sample = original
    assert grids[0].columns == ["input", "GT", f"constant ({tiny_run.name})", f"ramp ({tiny_run.name})",
                                "constant (other)", "ramp (other)"]
    label, rgb, gt, maps, errors, notes = grids[0].rows[0]
    assert label == "test/00001" and len(maps) == len(errors) == 4 and maps[1].shape == (64, 64, 3)
    assert np.array_equal(maps[1], maps[3])  # the same cached prediction drawn from both runs
    with pytest.raises(FileExistsError, match="--overwrite"):
        make_figures([str(tiny_run)], FigureConfig(ids=("test/00001",)), str(tmp_path / "f"))


@pytest.mark.parametrize("breakage, message", [
    (lambda p: p.write_bytes(b"not a numpy file"), "unreadable cached prediction"),
    (lambda p: np.save(p, np.zeros((2, 8, 8))),
     r"cached prediction of shape \[2, 8, 8\], expected \[1,h,w\]")])
def test_a_broken_cached_prediction_is_named_with_the_fix(tiny_run, tmp_path, breakage, message):
    copy = tmp_path / "broken"
    shutil.copytree(tiny_run, copy)
    for path in (copy / "ramp__synthetic" / "pred").glob("*.npy"):
        breakage(path)
    with pytest.raises(ValueError, match=f"ramp__synthetic/pred/.*{message}.*delete it"):
        make_figures([str(copy)], FigureConfig(random=1, datasets=("synthetic",)), str(tmp_path / "f"))


def test_runs_that_read_the_same_ids_from_different_images_are_refused(tiny_run, tmp_path):
    cfg = RunConfig(methods=("ramp",), datasets=("synthetic",), count=6, dataset_args={"synthetic": {"seed": "5"}})
    other, _ = run(cfg, str(tmp_path / "w"), progress=False)
    with pytest.raises(ValueError, match=r"read synthetic with different settings \(seed: 0 -> 5\)"):
        make_figures([str(tiny_run), str(other)], FigureConfig(random=1), str(tmp_path / "f"))


def test_one_existing_png_stops_the_call_before_any_other_is_drawn(tiny_run, tmp_path):
    out = tmp_path / "f"
    out.mkdir()
    (out / "synthetic_normals_column.png").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="synthetic_normals_column.png exist"):
        make_figures([str(tiny_run)], FigureConfig(ids=("test/00001",)), str(out))
    assert sorted(p.name for p in out.iterdir()) == ["synthetic_normals_column.png"]


def test_a_depth_panel_is_aligned_as_the_sample_was_scored():
    from dataclasses import replace

    from harness.dataroots import build_with_root
    from harness.scoring import aligned_depth

    ds = build_with_root("synthetic", None)
    sample = ds.load(ds.ids()[0])
    pred = np.random.default_rng(0).random((1, 64, 64)).astype(np.float32) + 0.5
    panels = {}
    for side in (None, 8):  # 8: a subsampled fit, as ETH3D's (fit_max_side 1024)
        spec = replace(ds.spec, fit_max_side=side)
        panels[side] = figures.depth_panels(sample, spec, [pred], ["least_squares"])[1][0]
        aligned, _ = aligned_depth(pred, sample, spec, "least_squares")
        lo, hi = sample.depth[sample.valid].min(), sample.depth[sample.valid].max()
        expected = figures.colorize(np.clip((aligned - lo) / (hi - lo), 0, 1), pictures.DEPTH_COLORMAP)
        assert np.array_equal(panels[side], expected)
    assert not np.array_equal(panels[None], panels[8])  # the stride changes the fit, so the figure must follow it
