import json

import numpy as np
import pandas as pd
import pytest

from harness.latency import LatencyConfig, latency_study, step_cost_fit
from harness import prefetch
from harness.prefetch import a_core_is_free_for_loading, batches_loaded


def test_latency_study_writes_table_plot_and_settings(tmp_path):
    cfg = LatencyConfig(methods=("dpbridge_tiny",), datasets=("synthetic_normals",), steps=(1, 2), count=3,
                        batch_size=2, warmup=1)
    folder, table = latency_study(cfg, str(tmp_path / "lat"), progress=False)
    assert list(table["steps"]) == [1, 2]
    assert (table["n_images"] == 3).all() and (table["batch_size"] == 2).all()
    assert (table["latency_p90_ms"] >= table["latency_median_ms"]).all() and (table["latency_median_ms"] > 0).all()
    assert np.allclose(table["ms_per_step"], table["latency_median_ms"] / table["steps"])
    assert set(table["peak_memory_kind"]) <= {"rss_peak_vmhwm", "rss_peak_process_lifetime"}
    assert (table["peak_memory_mib"] > 0).all()
    assert table["metric"].iloc[0] == "mean" and np.isfinite(table["value"]).all()  # degrees, pooled
    assert pd.read_csv(folder / "latency.csv").shape[0] == 2
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["dtype"] == "float32" and manifest["batch_size"] == 2 and manifest["device"] == "cpu"
    assert manifest["size_fit"] == "pad"
    assert "batch size 2" in (folder / "latency.md").read_text()
    fit = manifest["step_cost_fit"][0]  # two step counts: the line passes through both medians
    one, two = table["latency_median_ms"]
    assert fit["ms_per_extra_step"] == pytest.approx(two - one) and fit["fixed_ms"] == pytest.approx(2 * one - two)
    assert "| dpbridge_tiny | synthetic_normals | 2 |" in (folder / "latency.md").read_text()
    assert (folder / "latency.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(FileExistsError, match="already holds a latency study"):
        latency_study(cfg, str(folder), progress=False)


def test_latency_refuses_methods_without_steps_and_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="no sampling steps"):
        latency_study(LatencyConfig(methods=("ramp",), datasets=("synthetic",), steps=(1,), count=1),
                      str(tmp_path / "a"), progress=False)
    with pytest.raises(ValueError, match="999"):
        latency_study(LatencyConfig(methods=("dpbridge_tiny",), datasets=("synthetic",), steps=(1000,), count=1),
                      str(tmp_path / "b"), progress=False)
    with pytest.raises(ValueError, match="batch size must be >= 1"):
        latency_study(LatencyConfig(batch_size=0), str(tmp_path / "c"), progress=False)
    with pytest.raises(KeyError, match="unknown method"):
        latency_study(LatencyConfig(methods=("dpbridge_tinny",)), str(tmp_path / "d"), progress=False)


@pytest.mark.parametrize("methods, steps, refusal", [(("dpbridge_tiny",), (1, 2, 1000), "999"),
                                                     (("dpbridge_tiny", "ramp"), (1,), "no sampling steps")])
def test_a_study_refuses_a_late_step_count_or_method_before_it_measures_any_cell(tmp_path, monkeypatch, methods,
                                                                                 steps, refusal):
    import harness.latency as latency

    measured = []
    monkeypatch.setattr(latency, "measure_cell", lambda *a: measured.append(a))
    cfg = LatencyConfig(methods=methods, datasets=("synthetic",), steps=steps, count=1, warmup=0)
    with pytest.raises(ValueError, match=refusal):
        latency_study(cfg, str(tmp_path / "lat"), progress=False)
    assert measured == [] and not (tmp_path / "lat").exists()  # nothing measured, no folder bound to the typo


@pytest.mark.parametrize("background", [True, False])
def test_batches_load_in_order_and_raise_in_turn(background):
    assert list(batches_loaded([1, 2, 3], lambda x: x * 10, background)) == [(1, 10), (2, 20), (3, 30)]
    assert list(batches_loaded([], lambda x: x, background)) == []

    def load(x):
        if x == 2:
            raise OSError("cannot decode sample 2")
        return x

    got = []
    with pytest.raises(OSError, match="sample 2"):
        for item, value in batches_loaded([1, 2, 3], load, background):
            got.append(value)
    assert got == [1]  # the batch before the broken one finished first


def test_loading_goes_to_the_background_only_where_a_core_is_free(monkeypatch):
    monkeypatch.setattr(prefetch, "usable_cpus", lambda: 2)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(prefetch.torch, "get_num_threads", lambda: 2)
    assert not a_core_is_free_for_loading("cpu")  # both cores run torch threads
    assert a_core_is_free_for_loading("cuda") and a_core_is_free_for_loading("cuda:1")
    monkeypatch.setattr(prefetch.torch, "get_num_threads", lambda: 1)
    assert a_core_is_free_for_loading("cpu")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun: two processes of one thread on this machine
    assert not a_core_is_free_for_loading("cpu")


def test_a_run_scores_the_same_with_loading_in_turn_and_in_the_background(tmp_path, monkeypatch):
    from harness.run import RunConfig, run

    import harness.evaluate as evaluate_module

    used = []
    monkeypatch.setattr(evaluate_module, "batches_loaded",
                        lambda items, load, background: used.append(background) or batches_loaded(items, load,
                                                                                                 background))
    cfg = RunConfig(methods=("dpbridge_tiny",), datasets=("synthetic",), steps=2, count=3, batch_size=2)
    summaries = []
    for free in (True, False):
        monkeypatch.setattr(evaluate_module, "a_core_is_free_for_loading", lambda device, free=free: free)
        summaries.append(run(cfg, str(tmp_path / f"free-{free}"), progress=False)[1])
    assert used == [True, False]
    pd.testing.assert_frame_equal(summaries[0], summaries[1])


def test_a_launched_study_is_timed_by_the_first_process_only(tmp_path, monkeypatch):
    import harness.latency as latency
    from harness.distributed import Processes

    cfg = LatencyConfig(methods=("dpbridge_tiny",), datasets=("synthetic_normals",), steps=(1,), count=1,
                        batch_size=1, warmup=0)
    monkeypatch.setattr(latency, "processes", lambda: Processes(rank=1, world_size=2))
    assert latency_study(cfg, str(tmp_path / "lat"), progress=False) == (None, None)
    assert not (tmp_path / "lat").exists()
    monkeypatch.setattr(latency, "processes", lambda: Processes(rank=0, world_size=2))
    folder, _ = latency_study(cfg, str(tmp_path / "lat"), progress=False)
    assert json.loads((folder / "manifest.json").read_text())["measured_by"].startswith("process 0 of 2")


def test_a_killed_latency_study_measures_only_the_cells_it_had_not_finished(tmp_path, monkeypatch):
    import harness.latency as latency

    monkeypatch.setattr(latency, "RESULTS_DIR", tmp_path / "results")
    cfg = LatencyConfig(methods=("dpbridge_tiny",), datasets=("synthetic",), steps=(1, 2), count=2, warmup=0)
    measured, real = [], latency.measure_cell

    def killed_in_the_second_cell(method, samples, size, c):
        measured.append(1)
        if len(measured) == 2:
            raise KeyboardInterrupt
        return real(method, samples, size, c)

    monkeypatch.setattr(latency, "measure_cell", killed_in_the_second_cell)
    with pytest.raises(KeyboardInterrupt):
        latency_study(cfg, progress=False)
    (folder,) = (tmp_path / "results" / "latency").iterdir()
    assert len((folder / "cells.jsonl").read_text().splitlines()) == 1 and not (folder / "latency.csv").exists()

    monkeypatch.setattr(latency, "measure_cell", lambda *a: (measured.append(1), real(*a))[1])
    again, table = latency_study(cfg, progress=False)  # no --output: the unfinished study of these settings
    assert again == folder and len(measured) == 3  # only the steps=2 cell again
    assert [json.loads(r)["steps"] for r in (folder / "cells.jsonl").read_text().splitlines()] == [1, 2]
    assert list(table["steps"]) == [1, 2] and list(table.columns) == list(latency.COLUMNS)
    assert table["measured_at"].notna().all()
    assert json.loads((folder / "manifest.json").read_text())["cells_from_an_earlier_session"] == 1
    assert list(pd.read_csv(folder / "latency.csv").columns) == list(latency.COLUMNS)


def test_an_unfinished_latency_study_refuses_other_settings_once_it_measured_a_cell(tmp_path):
    folder = tmp_path / "lat"
    cfg = LatencyConfig(methods=("dpbridge_tiny",), datasets=("synthetic",), steps=(1,), count=1, warmup=0)
    with pytest.raises(ValueError, match="no sampling steps"):  # nothing measured: the folder does not bind
        latency_study(LatencyConfig(**{**cfg.__dict__, "methods": ("ramp",)}), str(folder), progress=False)
    latency_study(cfg, str(folder), progress=False)
    (folder / "latency.csv").unlink()  # as if killed before the end
    with pytest.raises(ValueError, match=r"unfinished latency study with other settings \(count: 1 -> 2\)"):
        latency_study(LatencyConfig(**{**cfg.__dict__, "count": 2}), str(folder), progress=False)


def test_a_study_builds_its_methods_with_its_inference_options():
    from harness.latency import sampling_method

    cfg = LatencyConfig(dtype="bfloat16", channels_last=True, compile=True, bmm_attention=True, eta=0.5)
    options = sampling_method("dpbridge_tiny", "depth", cfg).options  # compiled lazily: nothing compiles here
    assert (options.dtype, options.channels_last, options.compile, options.bmm_attention, options.eta) == (
        "bfloat16", True, True, True, 0.5)


def test_a_batch_too_large_stops_the_study_clearly_and_keeps_its_finished_cells(tmp_path, monkeypatch):
    from harness.memory import BatchTooLargeError
    from harness.registry import method_class

    cls, calls = method_class("dpbridge_tiny"), []
    real = cls.predict

    def the_second_cell_does_not_fit(self, rgb, gens):
        calls.append(rgb.shape[0])
        if len(calls) == 2:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 68719476736 bytes")
        return real(self, rgb, gens)

    monkeypatch.setattr(cls, "predict", the_second_cell_does_not_fit)
    cfg = LatencyConfig(methods=("dpbridge_tiny",), datasets=("synthetic",), steps=(1, 2), count=2, batch_size=2,
                        warmup=0)
    folder = tmp_path / "lat"
    with pytest.raises(BatchTooLargeError, match="batch of 2 image.*rerun with --batch-size 1"):
        latency_study(cfg, str(folder), progress=False)
    kept = [json.loads(r) for r in (folder / "cells.jsonl").read_text().splitlines()]
    assert [c["steps"] for c in kept] == [1] and not (folder / "latency.csv").exists()


def test_a_study_refuses_a_run_folder_and_keeps_its_manifest(tmp_path):
    run_folder = tmp_path / "run"
    run_folder.mkdir()
    (run_folder / "manifest.json").write_text('{"config_key": "abc"}\n')
    cfg = LatencyConfig(methods=("dpbridge_tiny",), datasets=("synthetic",), steps=(1,), count=1, warmup=0)
    with pytest.raises(FileExistsError, match="not a latency study folder .*manifest.json"):
        latency_study(cfg, str(run_folder), progress=False)
    assert (run_folder / "manifest.json").read_text() == '{"config_key": "abc"}\n'
    assert sorted(p.name for p in run_folder.iterdir()) == ["manifest.json"]


@pytest.mark.parametrize("methods, datasets, refusal", [
    (("dpbridge_tiny", "marigold_tiny"), ("synthetic_normals",), "marigold_tiny predicts depth, and none of"),
    ((), ("synthetic",), "name at least one of each"), (("dpbridge_tiny",), (), "name at least one of each")])
def test_a_study_refuses_methods_that_would_measure_nothing(tmp_path, methods, datasets, refusal):
    cfg = LatencyConfig(methods=methods, datasets=datasets, steps=(1,), count=1, warmup=0)
    with pytest.raises(ValueError, match=refusal):
        latency_study(cfg, str(tmp_path / "lat"), progress=False)
    assert not (tmp_path / "lat").exists()


def test_rows_record_the_batch_and_warm_up_that_ran_and_the_weights(tmp_path):
    cfg = LatencyConfig(methods=("dpbridge_tiny",), datasets=("synthetic",), steps=(1,), count=3, batch_size=8,
                        warmup=4)
    folder, table = latency_study(cfg, str(tmp_path / "lat"), progress=False)
    row = table.iloc[0]
    assert (row.batch_size, row.n_batches, row.warmup_batches, row.n_images) == (3, 1, 1, 3)
    assert row.checkpoint == "methods/weights/dpbridge_tiny_depth" and "+" in row.weights_fingerprint
    assert row.torch_threads >= 1 and row.git_commit
    manifest = json.loads((folder / "manifest.json").read_text())
    assert (manifest["batch_size"], manifest["batch_size_requested"], manifest["warmup_batches"]) == (3, 8, 1)
    text = (folder / "latency.md").read_text()
    assert "batch size 3," in text and "after 1 warm-up" in text and "p90 caution: 1 timed batch(es)" in text


@pytest.mark.parametrize("field, value, refusal", [("weights_fingerprint", "0000+0000", "other weights"),
                                                   ("torch_threads", 97, "timed with 97 torch threads")])
def test_a_resumed_study_refuses_cells_of_other_weights_or_threads(tmp_path, field, value, refusal):
    cfg = LatencyConfig(methods=("dpbridge_tiny",), datasets=("synthetic",), steps=(1, 2), count=1, warmup=0)
    folder = tmp_path / "lat"
    latency_study(cfg, str(folder), progress=False)
    (folder / "latency.csv").unlink()  # as if killed before the end
    cells = [json.loads(r) for r in (folder / "cells.jsonl").read_text().splitlines()]
    (folder / "cells.jsonl").write_text(json.dumps({**cells[0], field: value}) + "\n")
    with pytest.raises(ValueError, match=refusal):
        latency_study(cfg, str(folder), progress=False)
    assert len((folder / "cells.jsonl").read_text().splitlines()) == 1


def test_every_cell_and_the_manifest_record_the_commit_the_call_started_from(tmp_path, monkeypatch):
    import harness.latency as latency_module

    commits = iter(["c0", "c1+dirty", "c2+dirty", "c3+dirty"])  # the tree edited while the study measures
    monkeypatch.setattr(latency_module.mf, "git_commit", lambda: next(commits))
    cfg = LatencyConfig(methods=("dpbridge_tiny",), datasets=("synthetic", "synthetic_normals"), steps=(1,), count=1,
                        warmup=0)
    folder, table = latency_study(cfg, str(tmp_path / "lat"), progress=False)
    assert list(table.git_commit) == ["c0", "c0"]
    assert json.loads((folder / "manifest.json").read_text())["git_commit"] == "c0"


def test_the_step_cost_fit_splits_latency_into_a_fixed_cost_and_a_cost_per_step():
    steps = [1, 2, 5, 10]
    table = pd.DataFrame({"method": ["m"] * 4 + ["one"], "dataset": ["d"] * 5, "steps": steps + [10],
                          "latency_median_ms": [12.0 + 3.0 * s for s in steps] + [40.0]})
    table.loc[3, "latency_median_ms"] += 0.5  # one cell off the line
    fit = step_cost_fit(table).set_index("method")
    assert list(fit.index) == ["m"]  # a method timed at one step count has no line
    assert fit.loc["m", "n_step_counts"] == 4
    assert fit.loc["m", "fixed_ms"] == pytest.approx(12.0, abs=0.3)
    assert fit.loc["m", "ms_per_extra_step"] == pytest.approx(3.0, abs=0.06)
    assert 0.1 < fit.loc["m", "max_residual_ms"] < 0.5  # the line leans towards the cell off it
