"""`python -m harness latency`: quality and latency against the number of sampling steps (Figure 5).

For every method with sampling steps (any registered stochastic method: ``contract.stochastic`` and
``contract.default_steps``), every dataset of its task and every step count: the first ``count`` samples of the
dataset (the same for every cell) are predicted in batches of ``batch_size`` after ``warmup`` untimed batches (the
rows record both as they ran: a cell of fewer samples has smaller batches and at most one warm-up per batch).
Per-image latency = wall time of one batch (predict + copy to host, the device synchronised before and after) /
its size; the table gives its median and 90th percentile over the timed batches, ms per step (median / steps: it
includes the per-image fixed cost of encoding and decoding), images per second, peak memory, and the accuracy the
predictions reach (scored as `run` scores them). A second table splits the median into a fixed cost and a marginal
cost per step: the least-squares line through each (method, dataset)'s medians against steps (``step_cost_fit``).

CPU time: the process' CPU seconds per image over the same batches (all threads; on a shared CPU with
OMP_NUM_THREADS=1 it is close to what the wall time would be on an idle machine).

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` (reset per cell); on the CPU the process' peak resident
set (VmHWM, reset per cell through /proc/self/clear_refs where Linux allows it, else the process-lifetime
``ru_maxrss``). The ``peak_memory_kind`` column says which.
"""
from __future__ import annotations

import json
import os
import resource
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch

from harness import manifest as mf
from harness.evaluate import (DEFAULT_SIZE_FIT, check_inference_settings, check_processing_size, predict_unpadded,
                              prepare_batch, processing_size, resolved_processing_res, sample_seed)
from harness.memory import out_of_memory_guard
from harness.dataroots import build_with_root
from harness.distributed import processes
from harness.registry import build_method, method_class, method_tasks
from harness.run import RESULTS_DIR, check_every_method_serves
from harness.runio import append_jsonl, atomic_write_text, read_json_object, read_jsonl
from harness.scoring import alignment_for, score_depth, score_normals
from harness.summary import summarize_depth, summarize_normals
from methods.base import RunOptions

QUALITY_METRIC = {"depth": "abs_rel", "normals": "mean"}
DEFAULT_STEPS = (1, 2, 5, 10, 20, 50)


@dataclass(frozen=True)
class LatencyConfig:
    methods: tuple[str, ...] = ("dpbridge_tiny",)
    datasets: tuple[str, ...] = ("synthetic", "synthetic_normals")
    steps: tuple[int, ...] = DEFAULT_STEPS
    count: int = 16  # the first N samples of each dataset, the same in every cell
    batch_size: int = 1
    warmup: int = 1  # untimed batches before each (method, dataset, steps) cell
    seed: int = 0
    eta: float = 0.0
    device: str = "cpu"
    dtype: str = "float32"
    channels_last: bool = False
    compile: bool = False
    bmm_attention: bool = False  # the UNet's attention as bmm-softmax-bmm (methods.attention)


def check_config(cfg: LatencyConfig) -> None:
    bad = [s for s in cfg.steps if int(s) < 1]
    if not cfg.steps or bad:
        raise ValueError(f"--steps must list step counts >= 1, got {list(cfg.steps)}")
    if cfg.count < 1 or cfg.batch_size < 1 or cfg.warmup < 0:
        raise ValueError(f"count and batch size must be >= 1 and warm-up >= 0 (got count {cfg.count}, batch size "
                         f"{cfg.batch_size}, warm-up {cfg.warmup})")
    check_inference_settings(None, cfg.batch_size, None, cfg.eta, cfg.device)
    for name in cfg.methods:
        method_class(name)


def peak_memory_reset(device: str) -> str:
    """Reset the peak-memory counter; returns the kind of peak the next reading gives."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(torch.device(device))
        return "cuda_max_memory_allocated"
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux)
        return "rss_peak_vmhwm"
    except OSError:
        return "rss_peak_process_lifetime"


def peak_memory_mib(device: str, kind: str) -> float:
    if kind == "cuda_max_memory_allocated":
        return torch.cuda.max_memory_allocated(torch.device(device)) / 2 ** 20
    if kind == "rss_peak_vmhwm":
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def measure_cell(method, samples, size, cfg: LatencyConfig) -> tuple:
    """((per-image wall latencies, per-image process CPU seconds) of the timed batches, images per second, the
    predictions of every sample, peak memory kind, peak MiB). Every batch is timed; the warm-up batches are the
    first ``warmup`` of them, predicted once untimed before (so fewer samples than ``warmup`` batches warm up
    fewer: ``effective_run`` says how many)."""
    batches = [samples[i:i + cfg.batch_size] for i in range(0, len(samples), cfg.batch_size)]
    multiple = method.contract.size_multiple  # padded to it as in a run (harness.evaluate.DEFAULT_SIZE_FIT)
    inputs = [(prepare_batch(b, size, multiple).to(cfg.device), b) for b in batches]  # on the device before timing

    def predict(rgb, batch):
        gens = [torch.Generator().manual_seed(sample_seed(cfg.seed, s.id)) for s in batch]
        with torch.inference_mode(), out_of_memory_guard(method.name, cfg.device, len(batch), size):
            return predict_unpadded(method, rgb, gens, size).float().cpu().numpy()  # [B,C,h,w]

    for rgb, batch in inputs[:cfg.warmup]:
        predict(rgb, batch)
    kind = peak_memory_reset(cfg.device)
    latencies, cpu, preds, total = [], [], [], 0.0
    for rgb, batch in inputs:
        synchronize(cfg.device)
        start, start_cpu = time.perf_counter(), time.process_time()
        out = predict(rgb, batch)
        synchronize(cfg.device)
        elapsed = time.perf_counter() - start
        latencies.append(elapsed / len(batch))
        cpu.append((time.process_time() - start_cpu) / len(batch))
        total += elapsed
        preds += list(out)
    return (latencies, cpu), len(samples) / total, preds, kind, peak_memory_mib(cfg.device, kind)


def quality(method, dataset, samples, preds) -> tuple[str, float, float, float]:
    """(metric, value, ci_low, ci_high) of the predictions, scored as `run` scores them."""
    task = dataset.spec.task
    metric = QUALITY_METRIC[task]
    if task == "depth":
        alignment = alignment_for(method.contract, dataset.spec, dataset.name)
        stats = summarize_depth([score_depth(p, s, dataset.spec, alignment) for p, s in zip(preds, samples)])
    else:
        scored = [score_normals(p, s) for p, s in zip(preds, samples)]
        rows = [dict(r, id=s.id) for (r, _), s in zip(scored, samples)]
        stats = summarize_normals(rows, [e for _, e in scored], dataset.spec.normals_aggregation)
    return (metric, *stats[metric])


COLUMNS = ("method", "dataset", "task", "steps", "height", "width", "n_images", "n_batches", "batch_size",
           "warmup_batches", "latency_median_ms", "latency_p90_ms", "ms_per_step", "images_per_s", "cpu_median_ms",
           "peak_memory_mib", "peak_memory_kind", "metric", "value", "ci_low", "ci_high", "device", "dtype",
           "channels_last", "compile", "bmm_attention", "checkpoint", "weights_fingerprint", "torch_threads",
           "git_commit", "measured_at")  # of latency.csv, one row per cell; batch_size and warmup_batches as they ran
FEW_BATCHES = 5  # fewer timed batches than this: the p90 is close to the slowest batch, and the table says so
CELLS_FILE = "cells.jsonl"  # one row per measured (method, dataset, steps) cell, appended as each finishes
STUDY_CONFIG_FILE = "study_config.json"


def study_settings(cfg: LatencyConfig) -> dict:
    """The settings that name and bind a study folder; options added later enter only when set."""
    return mf.without_unset(asdict(cfg), ("bmm_attention",))


def study_folder(cfg: LatencyConfig, output: Optional[str]) -> Path:
    """``output``; else the newest unfinished study of these settings (a killed one continues); else a new
    results/latency/latency-<settings hash>-<UTC time>."""
    if output:
        return Path(output)
    key = mf.config_key(study_settings(cfg))
    unfinished = sorted(f for f in (RESULTS_DIR / "latency").glob(f"latency-{key}-*")
                        if (f / CELLS_FILE).is_file() and not (f / "latency.csv").exists())
    if unfinished:
        return unfinished[-1]
    return RESULTS_DIR / "latency" / f"latency-{key}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}"


def effective_run(n_samples: int, cfg: LatencyConfig) -> tuple[int, int, int]:
    """(batch size, timed batches, warm-up batches) as a cell of ``n_samples`` runs them: a batch holds at most
    the cell's samples, and the warm-up repeats at most every batch."""
    batch = min(cfg.batch_size, n_samples)
    batches = -(-n_samples // batch)
    return batch, batches, min(cfg.warmup, batches)


def check_study_folder(folder: Path) -> None:
    """Refuse a finished study, or a folder holding anything but an unfinished latency study (a run folder's
    manifest.json would be replaced)."""
    if (folder / "latency.csv").exists():
        raise FileExistsError(f"{folder} already holds a latency study; choose another --output or move it away")
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"--output {folder} is a file; choose a folder")
    foreign = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    if foreign and not (folder / STUDY_CONFIG_FILE).is_file():
        raise FileExistsError(f"{folder} is not a latency study folder (it holds {', '.join(foreign[:4])}); a study "
                              f"would write its manifest.json and tables there. Choose another --output")


def measured_cells(folder: Path, cfg: LatencyConfig, built: dict[tuple, dict]) -> dict[tuple, dict]:
    """The cells an unfinished study in ``folder`` already measured, by (method, dataset, steps); refuses a folder
    of another study (settings differ), a finished one, or cells measured with other weights or another number
    of torch threads than ``built`` ((method, task) -> its describe()) and this process have now."""
    check_study_folder(folder)
    settings = json.loads(json.dumps(study_settings(cfg)))  # tuples as JSON lists
    config_path = folder / STUDY_CONFIG_FILE
    cells = read_jsonl(folder / CELLS_FILE)
    if cells:  # a study with no cell measured yet holds nothing to protect
        recorded = read_json_object(config_path, "choose another --output (its cells cannot be matched to settings)")
        change = mf.settings_change(recorded, settings)
        if change:
            raise ValueError(f"{folder} holds an unfinished latency study with other settings ({change}); resume it "
                             f"with the same settings, or choose another --output")
        check_cells_comparable(folder, cells, built)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(config_path, json.dumps(settings, indent=2) + "\n")
    return {(r["method"], r["dataset"], r["steps"]): r for r in cells}


def check_cells_comparable(folder: Path, cells: list[dict], built: dict[tuple, dict]) -> None:
    """Refuse to resume cells timed with another thread count, or whose method now loads other weights (cells
    written before these fields were recorded cannot be checked and are kept)."""
    threads = torch.get_num_threads()
    for cell in cells:
        now = built.get((cell["method"], cell["task"]), {}).get("weights_fingerprint")
        before = cell.get("weights_fingerprint")
        if now and before and now != before:
            raise ValueError(f"{folder}: {cell['method']} was measured with other weights (weights_fingerprint "
                             f"{before}, now {now}: a retrained or replaced checkpoint); choose another --output")
        if cell.get("torch_threads") not in (None, threads):
            raise ValueError(f"{folder}: its cells were timed with {cell['torch_threads']} torch threads, this "
                             f"process has {threads}; resume with the same OMP_NUM_THREADS, or choose another "
                             f"--output")


def latency_study(cfg: LatencyConfig, output: Optional[str] = None, progress: bool = True,
                  roots=None) -> tuple[Optional[Path], Optional[pd.DataFrame]]:
    """Measure every cell and write latency.csv, latency.md, latency.png and manifest.json into the study folder
    (``study_folder``); launched on several processes, the first one measures alone and the others return
    (None, None). ``roots`` as for `run` (harness.dataroots). Every method and step count is checked before the
    first cell. Each cell is saved as it finishes: run again, a killed study measures only the cells it had not
    finished (each row says when it was measured)."""
    check_config(cfg)
    if not processes().is_main:  # launched: timings come from one process on one device; the others stand aside
        return None, None
    commit = mf.git_commit()  # the code as this call started: the tree may change while it measures
    datasets = [build_with_root(ds_name, roots) for ds_name in cfg.datasets]
    check_every_method_serves(cfg.methods, datasets)
    built = check_step_counts(cfg, {d.spec.task for d in datasets})
    folder = study_folder(cfg, output)
    done = measured_cells(folder, cfg, built)
    records = []
    for dataset in datasets:
        samples = None
        for name in (m for m in cfg.methods if dataset.spec.task in method_tasks(m)):
            todo = [int(s) for s in cfg.steps if (name, dataset.name, int(s)) not in done]
            if todo and samples is None:
                samples = [dataset.load(i) for i in dataset.ids()[:cfg.count]]
            fresh = measure_method(name, dataset, samples, todo, cfg, folder, progress, commit) if todo else {}
            records += [fresh.get(int(s)) or done[(name, dataset.name, int(s))] for s in cfg.steps]
    table = pd.DataFrame(records, columns=list(COLUMNS))
    write_outputs(folder, cfg, table, commit, reused=len(done))
    return folder, table


def sampling_method(name: str, task: str, cfg: LatencyConfig):
    """``name`` built for ``task`` with the study's options; refuses a method without sampling steps."""
    options = RunOptions(eta=cfg.eta, device=cfg.device, dtype=cfg.dtype, channels_last=cfg.channels_last,
                         compile=cfg.compile, bmm_attention=cfg.bmm_attention)
    method = build_method(name, task, options)
    contract = method.contract
    if not contract.stochastic or contract.default_steps is None:
        raise ValueError(f"method {name!r} has no sampling steps; latency against steps applies to diffusion "
                         f"methods only")
    return method


def check_step_counts(cfg: LatencyConfig, tasks: set[str]) -> dict[tuple, dict]:
    """Refuse, before any cell is measured, a method without sampling steps, or a step count outside a method's
    schedule (``use_steps`` says which); returns (method, task) -> the method's describe() (checkpoint, weights
    fingerprint). Each method is built once per task for this and let go, so a late step count of a late method
    cannot stop a study half-way with cells it would then refuse to resume."""
    built = {}
    for name in cfg.methods:
        for task in sorted(tasks & set(method_tasks(name))):
            method = sampling_method(name, task, cfg)
            for steps in cfg.steps:
                method.use_steps(int(steps))
            built[(name, task)] = method.describe()
            del method
    return built


def measure_method(name, dataset, samples, steps_list: list[int], cfg: LatencyConfig, folder: Path,
                   progress: bool, commit: str) -> dict[int, dict]:
    """Measure one method on one dataset at each step count of ``steps_list``, appending each cell's row (with
    ``commit``, the git commit the call started from) to the study's cells file as it finishes; {steps: row}."""
    method = sampling_method(name, dataset.spec.task, cfg)  # built once: the step counts reuse it
    contract = method.contract
    res = resolved_processing_res(None, dataset.spec.processing_res, contract.processing_res)
    size = processing_size(*samples[0].rgb.shape[:2], res, contract.size_multiple)
    check_processing_size(name, contract, size, [s.id for s in samples[:1]])
    rows = {}
    for steps in steps_list:
        method.use_steps(steps)
        lat, rate, preds, kind, mib = measure_cell(method, samples, size, cfg)
        metric, value, lo, hi = quality(method, dataset, samples, preds)
        row = cell_record(name, dataset, steps, size, lat, kind, mib, metric, value, lo, hi, rate, cfg)
        batch, _, warmup = effective_run(len(samples), cfg)
        info = method.describe()
        row.update(n_images=len(samples), batch_size=batch, warmup_batches=warmup,
                   checkpoint=info.get("checkpoint", "-"), weights_fingerprint=info.get("weights_fingerprint", "-"),
                   torch_threads=torch.get_num_threads(), git_commit=commit)
        row["measured_at"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        append_jsonl(folder / CELLS_FILE, [row])
        rows[steps] = row
        if progress:
            print(f"{name} {dataset.name} steps={steps}: {row['latency_median_ms']:.1f} ms/image, {metric} "
                  f"{value:.4f}", flush=True)
    return rows


def cell_record(name, dataset, steps, size, lat, kind, mib, metric, value, lo, hi, images_per_s, cfg) -> dict:
    ms, cpu_ms = (np.asarray(x) * 1000.0 for x in lat)  # per-image wall latency and CPU time of each timed batch
    return {"method": name, "dataset": dataset.name, "task": dataset.spec.task, "steps": steps,
            "height": size[0], "width": size[1], "n_batches": len(ms),
            "latency_median_ms": float(np.median(ms)), "latency_p90_ms": float(np.percentile(ms, 90)),
            "ms_per_step": float(np.median(ms)) / steps, "images_per_s": images_per_s,
            "cpu_median_ms": float(np.median(cpu_ms)),
            "peak_memory_mib": mib, "peak_memory_kind": kind, "metric": metric, "value": value, "ci_low": lo,
            "ci_high": hi, "device": cfg.device, "dtype": cfg.dtype, "channels_last": cfg.channels_last,
            "compile": cfg.compile, "bmm_attention": cfg.bmm_attention}


def as_run(table: pd.DataFrame, column: str):
    """The value a column took in every cell, or the sorted list of its values where cells differ (cells from
    before it was recorded left out; None when none recorded it)."""
    values = sorted({int(v) for v in table[column].dropna()}) if column in table else []
    return values[0] if len(values) == 1 else (values or None)


def _text(value) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else "not recorded" if value is None else str(value)


STEP_COST_COLUMNS = ("method", "dataset", "n_step_counts", "fixed_ms", "ms_per_extra_step", "max_residual_ms")


def step_cost_fit(table: pd.DataFrame) -> pd.DataFrame:
    """Per (method, dataset): median latency [ms] ~ fixed_ms + ms_per_extra_step x steps, least squares over its
    step counts, with the largest distance of a cell's median from the line; left out with fewer than 2 step
    counts."""
    rows = []
    for (method, dataset), cells in table.groupby(["method", "dataset"], sort=False):
        steps, median = cells["steps"].to_numpy(float), cells["latency_median_ms"].to_numpy(float)
        if len(np.unique(steps)) < 2:
            continue
        slope, intercept = np.polyfit(steps, median, 1)
        residual = np.abs(median - (intercept + slope * steps)).max()
        rows.append(dict(zip(STEP_COST_COLUMNS, (method, dataset, len(steps), intercept, slope, residual))))
    return pd.DataFrame(rows, columns=list(STEP_COST_COLUMNS))


def step_cost_lines(table: pd.DataFrame) -> list[str]:
    """The step_cost_fit table as Markdown lines (none when no method has two step counts)."""
    fit = step_cost_fit(table)
    if fit.empty:
        return []
    lines = ["", "**Fixed and per-step cost** (least-squares line through each method's medians against steps)",
             "", "| method | dataset | step counts | fixed (ms / image) | per extra step (ms / image) | largest "
             "residual (ms) |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.method} | {r.dataset} | {r.n_step_counts} | {r.fixed_ms:.1f} | {r.ms_per_extra_step:.2f} | "
              f"{r.max_residual_ms:.1f} |" for r in fit.itertuples()]
    return lines


def write_outputs(folder: Path, cfg: LatencyConfig, table: pd.DataFrame, commit: str, reused: int = 0) -> None:
    from harness.plots import plot_latency
    from harness.tables import format_cell

    folder.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    record = {"config": asdict(cfg), "git_commit": commit, "packages": mf.package_versions(),
              "device": cfg.device, "device_name": mf.device_description(cfg.device), "dtype": cfg.dtype,
              "batch_size": as_run(table, "batch_size"), "batch_size_requested": cfg.batch_size,
              "warmup_batches": as_run(table, "warmup_batches"), "images_per_cell": as_run(table, "n_images"),
              "cells_git_commits": sorted({str(c) for c in table["git_commit"].dropna()}),
              "checkpoints": sorted({f"{r.method}: {r.checkpoint} ({r.weights_fingerprint})"
                                     for r in table.dropna(subset=["checkpoint"]).itertuples()}),
              "size_fit": DEFAULT_SIZE_FIT,  # how each cell's processing size met the network's multiple
              "torch_threads": threads, "measured_by": "process 0 of "
              f"{processes().world_size} (a launched study is timed by one process; the others do nothing)",
              "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset"),
              "load_average_1_5_15min_at_end": [round(x, 2) for x in os.getloadavg()], "cpu_count": os.cpu_count(),
              "cells_from_an_earlier_session": reused, "latency": __doc__.split("\n\n")[1],
              "step_cost_fit": step_cost_fit(table).to_dict("records")}
    atomic_write_text(folder / "manifest.json", json.dumps(record, indent=2) + "\n")
    lines = ["| method | dataset | steps | latency median (ms) | p90 (ms) | ms / step | images/s | CPU time median "
             "(ms) | peak memory (MiB) | quality |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        q = format_cell(r.task, r.metric, r.value, r.ci_low, r.ci_high)
        lines.append(f"| {r.method} | {r.dataset} | {r.steps} | {r.latency_median_ms:.1f} | {r.latency_p90_ms:.1f} "
                     f"| {r.ms_per_step:.2f} | {r.images_per_s:.1f} | {r.cpu_median_ms:.1f} | "
                     f"{r.peak_memory_mib:.0f} | {r.metric} {q} |")
    setting = (f"device {cfg.device} ({record['device_name']}), dtype {cfg.dtype}, batch size "
               f"{_text(record['batch_size'])}, {threads} torch threads, {_text(record['images_per_cell'])} images per "
               f"cell after {_text(record['warmup_batches'])} warm-up batch(es); peak memory: "
               f"{', '.join(sorted(set(table['peak_memory_kind'])))}")
    few = int(table["n_batches"].min()) if len(table) else 0
    caution = (f"\n\np90 caution: {few} timed batch(es) per cell (fewer than {FEW_BATCHES}): the p90 is about the "
               f"slowest batch; raise --count or lower --batch-size for a steadier tail" if few < FEW_BATCHES else "")
    atomic_write_text(folder / "latency.md", f"**Latency and quality against sampling steps** ({setting}; quality "
                      f"± = half-width of the bootstrap 95% interval; AbsRel ×100, normals in degrees)\n\n"
                      + "\n".join(lines + step_cost_lines(table)) + caution + "\n")
    plot_latency(table, folder / "latency.png", setting)
    atomic_write_text(folder / "latency.csv", table.to_csv(index=False))  # last, whole: it marks the study finished
