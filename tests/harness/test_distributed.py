"""Several processes (harness.distributed): sharding, per-process row files, merging, resuming, training.

The first tests play the processes one after another in this process (fast); the last ones launch two real
processes with torchrun over gloo and compare with one process.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from harness import distributed
from harness.distributed import Processes, merge_rows, read_rows
from harness.evaluate import evaluate_pairs
from harness.registry import method_class
from harness.run import RunConfig, build_plan, claim_folder, manifest_record, run

ROOT = Path(__file__).resolve().parents[2]
CFG = RunConfig(methods=("constant", "ramp"), datasets=("synthetic", "synthetic_normals"), count=8, batch_size=2)


@pytest.fixture()
def as_process(monkeypatch):
    """as_process(rank, world): the code below believes it is process ``rank`` of ``world`` (barriers pass)."""
    monkeypatch.setattr(Processes, "barrier", lambda self: None)

    def become(rank: int, world: int) -> None:
        monkeypatch.setattr(distributed, "_CURRENT", Processes(rank, world))

    yield become
    monkeypatch.setattr(distributed, "_CURRENT", None)


def evaluate_as(become, rank: int, world: int, folder: Path, on_batch=None) -> None:
    """What process ``rank`` of ``world`` does in `run` before the results are gathered."""
    become(rank, world)
    plan = build_plan(CFG, folder)
    claim_folder(folder, manifest_record(CFG, plan))
    for ds, pairs in plan:
        evaluate_pairs(pairs, ds, CFG.seed, CFG.batch_size, progress=False, on_batch=on_batch)


def cell_files(folder: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in sorted(folder.glob("*/rows.jsonl"))}


def test_processes_get_the_single_process_batches_dealt_round_robin():
    ids = [f"s{i}" for i in range(7)]
    alone = Processes().my_batches(ids, 2, lambda i: True)
    assert alone == [["s0", "s1"], ["s2", "s3"], ["s4", "s5"], ["s6"]]
    first, second = (Processes(r, 2).my_batches(ids, 2, lambda i: True) for r in (0, 1))
    assert first == [alone[0], alone[2]] and second == [alone[1], alone[3]]
    # a batch with an unfinished sample stays whole (the caller skips the finished ones); a finished one drops out,
    # and no sample moves to another process
    assert Processes(1, 2).my_batches(ids, 2, lambda i: i not in {"s2", "s6"}) == [["s2", "s3"]]
    assert Processes(0, 2).my_batches(ids, 2, lambda i: i not in {"s0", "s1", "s5"}) == [["s4", "s5"]]
    assert Processes(0, 2).device("cuda") == "cuda:0" and Processes(1, 2, local_rank=1).device("cuda") == "cuda:1"
    assert Processes().device("cuda") == "cuda" and Processes(1, 2).device("cpu") == "cpu"


def test_two_processes_shards_merge_into_the_files_and_summary_of_one(tmp_path, as_process):
    as_process(0, 1)
    _, reference = run(CFG, str(tmp_path / "one"), progress=False)
    for rank in (0, 1):
        evaluate_as(as_process, rank, 2, tmp_path / "two")
    cell = tmp_path / "two" / "ramp__synthetic"
    assert sorted(p.name for p in cell.glob("rows*")) == ["rows.rank0-of-2.jsonl", "rows.rank1-of-2.jsonl"]
    assert len(read_rows(cell)) == 8
    as_process(0, 1)  # the gathering and summary, here by one process finding every row finished
    predicted = []
    real_predict = method_class("ramp").predict
    with pytest.MonkeyPatch.context() as m:
        m.setattr(method_class("ramp"), "predict", lambda s, rgb, g: predicted.append(len(rgb)) or real_predict(s, rgb, g))
        _, merged = run(CFG, str(tmp_path / "two"), progress=False)
    assert predicted == []
    pd.testing.assert_frame_equal(merged, reference)
    assert cell_files(tmp_path / "two") == cell_files(tmp_path / "one")  # byte for byte, in dataset order
    assert not list((tmp_path / "two").glob("*/rows.rank*"))
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["rows_by_process"] == {"0-of-2": 16, "1-of-2": 16}
    assert json.loads((tmp_path / "one" / "manifest.json").read_text())["world_size"] == 1


class Killed(Exception):
    pass


def kill_after_first_batch():
    raise Killed()


@pytest.mark.parametrize("dead, resume_world", [(0, 2), (1, 2), (1, 1)])
def test_a_sharded_run_resumes_whichever_process_died(tmp_path, as_process, dead, resume_world):
    as_process(0, 1)
    _, reference = run(CFG, str(tmp_path / "one"), progress=False)
    folder = tmp_path / "two"
    for rank in (0, 1):
        if rank == dead:
            with pytest.raises(Killed):
                evaluate_as(as_process, rank, 2, folder, on_batch=kill_after_first_batch)
        else:
            evaluate_as(as_process, rank, 2, folder)
    torn = folder / "ramp__synthetic" / f"rows.rank{dead}-of-2.jsonl"
    torn.write_text(torn.read_text() + '{"id": "test/000')  # the kill came in the middle of an append
    finished = len(read_rows(folder / "ramp__synthetic")) + len(read_rows(folder / "ramp__synthetic_normals"))
    assert finished == 16 - 6  # the dead one finished 1 of its 2 depth batches and none of its 2 normals batches
    predicted = []
    real_predict = method_class("ramp").predict
    with pytest.MonkeyPatch.context() as m:
        m.setattr(method_class("ramp"), "predict", lambda s, rgb, g: predicted.append(len(rgb)) or real_predict(s, rgb, g))
        for rank in reversed(range(resume_world)):  # the first process last: it gathers and summarises
            as_process(rank, resume_world)
            if rank:
                evaluate_as(as_process, rank, resume_world, folder)
            else:
                _, resumed = run(CFG, str(folder), progress=False)
    assert sum(predicted) == 6  # only what the dead process had left
    pd.testing.assert_frame_equal(resumed, reference)
    assert cell_files(folder) == cell_files(tmp_path / "one")


def test_merging_keeps_rows_already_merged_drops_duplicates_and_orders_by_dataset(tmp_path):
    cell = tmp_path / "cell"
    cell.mkdir()
    (cell / "rows.jsonl").write_text('{"id": "b", "v": 1}\n')
    (cell / "rows.rank1-of-2.jsonl").write_text('{"id": "b", "v": 1}\n{"id": "c", "v": 3}\n')  # a merge killed
    (cell / "rows.rank0-of-2.jsonl").write_text('{"id": "a", "v": 2}\n')  # before it removed the process files
    assert [r["id"] for r in read_rows(cell)] == ["b", "a", "c"]
    assert merge_rows(cell, ["a", "b", "c"]) == {"0-of-2": 1, "1-of-2": 1}
    assert [json.loads(line)["id"] for line in (cell / "rows.jsonl").read_text().splitlines()] == ["a", "b", "c"]
    assert sorted(p.name for p in cell.iterdir()) == ["rows.jsonl"]
    assert merge_rows(cell, ["a", "b", "c"]) == {}


# ---- two real processes (torchrun, gloo on the CPU); 30-75 s each on 2 cores, depending on what runs beside them
def launch(args: list[str], processes: int, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m harness ARGS` as ``processes`` processes (torchrun) or as a plain process (1)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **env}
    env.pop("WORLD_SIZE", None)
    head = [sys.executable]
    if processes > 1:
        head += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    done = subprocess.run(head + ["-m", "harness", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture()
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each launched process (OMP_NUM_THREADS=1): the same kernels, the same numbers
    yield
    torch.set_num_threads(threads)


def test_two_launched_processes_evaluate_exactly_what_one_does(tmp_path, one_thread):
    methods, datasets = ("constant", "ramp", "dpbridge_tiny"), ("synthetic", "synthetic_normals")
    cfg = RunConfig(methods=methods, datasets=datasets, count=8, steps=2, batch_size=4)
    _, reference = run(cfg, str(tmp_path / "one"), progress=False)
    launch(["run", "--methods", ",".join(methods), "--datasets", ",".join(datasets), "--count", "8", "--steps", "2",
            "--batch-size", "4", "--output", str(tmp_path / "two"), "--quiet"], 2, {})
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest["world_size"] == 2
    assert manifest["rows_by_process"] == {"0-of-2": 24, "1-of-2": 24}  # 6 cells x 8 samples, half each
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "two" / "summary.csv"),
                                  pd.read_csv(tmp_path / "one" / "summary.csv"))
    assert cell_files(tmp_path / "two") == cell_files(tmp_path / "one")
    assert len(reference[reference.method == "dpbridge_tiny"]) > 0


def train_args(backbone: Path, folder: Path, batch: int, iterations: int = 3) -> list[str]:
    settings = {"iterations": iterations, "batch": batch, "grad_accum": 2, "pool_count": 6, "warmup": 2,
                "log_every": 1, "checkpoint_every": 2, "output": folder / "run", "export": folder / "export"}
    # image consistency off: it pools the pixels of each process' batch, so only L_eps is a mean of sample terms
    args = ["train", "--method", "dpbridge_tiny", "--task", "normals", "--method-set", f"backbone={backbone}",
            "--method-set", "image_consistency=off"]
    for key, value in settings.items():
        args += ["--set", f"{key}={value}"]
    return args


def log_rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "run" / "training_log.jsonl").read_text().splitlines()]


def assert_same_training(one: Path, two: Path, backbone: Path) -> None:
    """Same losses at every iteration (a resumed run continues its running means), same learning rates, and weights
    whose difference is float noise next to how far training moved them (Adam's first steps are nearly
    sign(gradient): a bias whose gradient cancels to ~1e-9 may step differently, so a few elements differ by up to
    ~lr; a different batch would move every weight)."""
    rows_one = [r for r in log_rows(one) if "iteration" in r and "event" not in r]
    rows_two = [r for r in log_rows(two) if "iteration" in r and "event" not in r]
    assert [r["iteration"] for r in rows_one] == [r["iteration"] for r in rows_two] == [0, 1, 2]
    for a, b in zip(rows_one, rows_two):
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-9)
        assert a["loss_ema"] == pytest.approx(b["loss_ema"], rel=1e-4)
    w_one = load_file(str(one / "run" / "checkpoint" / "model.safetensors"))
    w_two = load_file(str(two / "run" / "checkpoint" / "model.safetensors"))
    start = load_file(str(backbone / "unet" / "diffusion_pytorch_model.safetensors"))
    moved = sum(((w_one[k] - start[k].float()) ** 2).sum() for k in w_one if start.get(k, torch.empty(0)).shape ==
                w_one[k].shape) ** 0.5
    apart = sum(((w_one[k] - w_two[k]) ** 2).sum() for k in w_one) ** 0.5
    assert apart < 0.01 * moved, (float(apart), float(moved))
    off = sum(int(((w_one[k] - w_two[k]).abs() > 1e-5).sum()) for k in w_one)
    assert off < 0.01 * sum(v.numel() for v in w_one.values())


def train_alone(backbone: Path, folder: Path) -> None:
    """The reference, in this process: one process with batch 4 (= 2 processes x 2)."""
    from harness.cli import main

    assert main(train_args(backbone, folder, batch=4)) == 0


def test_two_launched_processes_train_what_one_does_with_the_same_effective_batch(tmp_path, tiny_backbone_dir,
                                                                                 private_cache, one_thread):
    train_alone(tiny_backbone_dir, tmp_path / "one")
    launch(train_args(tiny_backbone_dir, tmp_path / "two", batch=2), 2, {"HARNESS_CACHE": str(private_cache)})
    assert_same_training(tmp_path / "one", tmp_path / "two", tiny_backbone_dir)
    for folder, world in ((tmp_path / "one", 1), (tmp_path / "two", 2)):
        summary = json.loads((folder / "export" / "training_summary.json").read_text())
        assert summary["world_size"] == world and summary["effective_batch"] == 8


@pytest.mark.slow  # two launches: ~55-115 s
def test_two_launched_processes_resume_from_the_first_ones_checkpoint(tmp_path, tiny_backbone_dir, private_cache,
                                                                     one_thread):
    train_alone(tiny_backbone_dir, tmp_path / "one")
    env = {"HARNESS_CACHE": str(private_cache)}
    launch(train_args(tiny_backbone_dir, tmp_path / "two", batch=2) + ["--set", "stop_at=2"], 2, env)
    assert not (tmp_path / "two" / "export").exists()
    launch(train_args(tiny_backbone_dir, tmp_path / "two", batch=2), 2, env)
    starts = [r for r in log_rows(tmp_path / "two") if r.get("event") == "start"]
    assert [(r["iteration"], r["world_size"]) for r in starts] == [(0, 2), (2, 2)]
    assert_same_training(tmp_path / "one", tmp_path / "two", tiny_backbone_dir)  # loss EMAs continue too
