"""--continue-on-error: an undecodable GT, an empty valid mask or a NaN prediction becomes a failed row with its
reason (counted in the summary); without it the run stops naming the sample and the fix."""
import json
import numpy as np
import pandas as pd
import pytest
import torch

from datasets.decode import encode_image, encode_png16
from harness.cli import main
from harness.failures import SampleError
from harness.registry import method_class
from harness.run import RunConfig, run
from harness.runio import read_jsonl


def broken_folder(root):
    """Four samples: ok, a truncated depth PNG (valid header), a one-pixel mask, a black image (NaN below)."""
    for sub in ("rgb", "depth", "mask"):
        (root / sub).mkdir(parents=True)
    h, w = 16, 12
    depth = np.repeat(np.linspace(4000, 1000, h)[:, None], w, axis=1).astype(np.uint16)  # mm
    for i, name in enumerate(("ok", "truncated", "nomask", "black")):
        rgb = np.zeros((h, w, 3), np.uint8) if name == "black" else np.full((h, w, 3), 40 + 50 * i, np.uint8)
        (root / "rgb" / f"{name}.png").write_bytes(encode_image(rgb))
        png = encode_png16(depth + i)
        (root / "depth" / f"{name}.png").write_bytes(png[:60] if name == "truncated" else png)
        mask = np.full((h, w), 255, np.uint8)
        if name == "nomask":  # one valid pixel: the sample loads, the scale-and-shift fit (2 needed) fails
            mask[:] = 0
            mask[3, 4] = 255
        (root / "mask" / f"{name}.png").write_bytes(encode_image(mask))
    return root


@pytest.fixture()
def nan_on_black(monkeypatch):
    cls = method_class("ramp")
    original = cls.predict

    def predict(self, rgb, generators):
        out = original(self, rgb, generators)
        black = (rgb.flatten(1) <= -1.0).all(1)  # [B]
        return torch.where(black[:, None, None, None], torch.tensor(float("nan")), out)

    monkeypatch.setattr(cls, "predict", predict)


def test_failed_samples_are_recorded_with_their_reason_and_counted(tmp_path, nan_on_black):
    root = broken_folder(tmp_path / "data")
    cfg = RunConfig(methods=("ramp",), datasets=(f"folder:{root}",), continue_on_error=True)
    folder, summary = run(cfg, str(tmp_path / "r"), progress=False)
    (cell,) = [p for p in folder.iterdir() if p.is_dir()]
    rows = {r["id"]: r for r in read_jsonl(cell / "rows.jsonl")}
    assert set(rows) == {"ok", "truncated", "nomask", "black"}
    assert not rows["ok"].get("failed") and rows["ok"]["abs_rel"] < 0.05
    assert rows["truncated"]["failed"] and "truncated.png" in rows["truncated"]["reason"]
    assert rows["nomask"]["failed"] and "valid pixels" in rows["nomask"]["reason"]
    assert rows["black"]["failed"] and "NaN or inf" in rows["black"]["reason"]
    assert not (cell / "pred" / "black.npy").exists()  # a NaN prediction is never cached
    overall = summary[(summary.group == "all") & (summary.metric == "abs_rel")]
    assert (overall.n_samples.item(), overall.n_failed.item()) == (1, 3)
    text = (folder / "summary.md").read_text()  # the table shows the failures too, not only summary.csv
    assert "| method | dataset | subset | n | failed | steps |" in text and "| ramp | " in text
    assert [line for line in text.splitlines() if line.startswith("| ramp |") and "| all | 1 | 3 |" in line]
    assert overall.value.item() == pytest.approx(rows["ok"]["abs_rel"])


def test_without_the_flag_the_run_stops_naming_the_sample_and_the_fix(tmp_path, nan_on_black):
    root = broken_folder(tmp_path / "data")
    cfg = RunConfig(methods=("ramp",), datasets=(f"folder:{root}",), batch_size=1)  # ids in order: black, nomask, ..

    def drop(name):
        for sub in ("rgb", "depth", "mask"):
            (root / sub / f"{name}.png").unlink()

    with pytest.raises(ValueError, match=r"ramp predicted NaN or inf for sample black; .*--continue-on-error"):
        run(cfg, str(tmp_path / "r1"), progress=False)
    drop("black")
    with pytest.raises(SampleError, match=r"ramp on folder-\w+: sample nomask failed .*valid pixels.*"
                                          r"--continue-on-error"):
        run(cfg, str(tmp_path / "r2"), progress=False)
    drop("nomask")
    with pytest.raises(SampleError, match=r"dataset folder-\w+: sample truncated failed .*truncated.png.*"
                                          r"--continue-on-error"):
        run(cfg, str(tmp_path / "r3"), progress=False)


def test_resuming_with_the_flag_keeps_the_finished_rows(tmp_path, nan_on_black, capsys):
    root = broken_folder(tmp_path / "data")
    args = ["run", "--methods", "ramp", "--datasets", f"folder:{root}", "--output", str(tmp_path / "r"), "--quiet",
            "--batch-size", "1"]
    assert main(args) == 2  # stops at "black" (the first sample)
    assert "--continue-on-error" in capsys.readouterr().err
    assert main(args + ["--continue-on-error"]) == 0  # same folder: the flag is not part of the settings key
    assert "3 samples failed for ramp" in capsys.readouterr().out


def test_a_cell_whose_every_sample_failed_reports_nan_metrics_and_the_count(tmp_path, monkeypatch):
    monkeypatch.setattr(method_class("constant"), "predict", lambda self, rgb, g: torch.full(
        (rgb.shape[0], 1 if self.task == "depth" else 3, *rgb.shape[2:]), float("nan")))
    cfg = RunConfig(methods=("constant",), count=2, continue_on_error=True)
    _, summary = run(cfg, str(tmp_path / "r"), progress=False)
    assert set(summary.dataset) == {"synthetic", "synthetic_normals"}
    assert summary.value.isna().all() and (summary.n_samples == 0).all() and (summary.n_failed == 2).all()


def test_retry_failed_scores_the_samples_fixed_since_and_keeps_the_rest(tmp_path, capsys):
    root = broken_folder(tmp_path / "data")
    args = ["run", "--methods", "ramp", "--datasets", f"folder:{root}", "--output", str(tmp_path / "r"), "--quiet",
            "--continue-on-error"]
    assert main(args) == 0 and "--retry-failed" in capsys.readouterr().out  # the hint names the way back
    (cell,) = [p for p in (tmp_path / "r").iterdir() if p.is_dir()]
    before = {r["id"]: r for r in read_jsonl(cell / "rows.jsonl")}
    good = (root / "depth" / "ok.png").read_bytes()
    (root / "depth" / "truncated.png").write_bytes(good)  # the truncated file fixed
    assert main(args) == 0  # resumed as it is: the failed row stays
    assert {r["id"]: r.get("failed", False) for r in read_jsonl(cell / "rows.jsonl")}["truncated"]

    assert main(args + ["--retry-failed"]) == 0
    assert "trying 2 sample(s) recorded as failed again" in capsys.readouterr().err  # truncated and nomask
    after = {r["id"]: r for r in read_jsonl(cell / "rows.jsonl")}
    assert not after["truncated"].get("failed") and after["nomask"]["failed"]  # fixed / still broken
    assert after["ok"] == before["ok"]  # finished rows are not touched
    summary = pd.read_csv(tmp_path / "r" / "summary.csv")
    overall = summary[(summary.group == "all") & (summary.metric == "abs_rel")]
    assert (overall.n_samples.item(), overall.n_failed.item()) == (3, 1)  # ok, black, truncated; nomask


def test_a_resumed_batch_loads_its_recorded_failures_again_without_stopping(tmp_path, capsys):
    root = broken_folder(tmp_path / "data")
    args = ["run", "--methods", "ramp", "--datasets", f"folder:{root}", "--output", str(tmp_path / "r"), "--quiet",
            "--batch-size", "4"]
    assert main(args + ["--continue-on-error"]) == 0
    (cell,) = [p for p in (tmp_path / "r").iterdir() if p.is_dir()]
    rows = read_jsonl(cell / "rows.jsonl")
    (cell / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows if r["id"] != "ok"))
    (tmp_path / "r" / "summary.csv").unlink()
    # "ok" is predicted again in its batch, beside "truncated", which cannot be loaded and is recorded as failed
    assert main(args) == 0, capsys.readouterr().err
    after = {r["id"]: r for r in read_jsonl(cell / "rows.jsonl")}
    assert after["ok"] == next(r for r in rows if r["id"] == "ok") and after["truncated"]["failed"]
