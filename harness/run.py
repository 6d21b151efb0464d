"""`python -m harness run`: build methods and datasets, evaluate (resumably), summarise, render tables."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from harness import manifest as mf
from harness.evaluate import Pair, SavedPredictionError, check_saved_predictions, evaluate_pairs
from harness.registry import build_method, dataset_class, method_class, method_tasks, parse_method_spec
from harness.runio import atomic_write_text, read_jsonl
from harness.summary import groups_of, summarize_depth, summarize_normals
from harness.tables import markdown_tables
from methods.base import RunOptions

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
DEFAULT_METHODS = ("dpbridge_tiny", "constant", "ramp", "train_mean")
DEFAULT_DATASETS = ("synthetic", "synthetic_normals")


@dataclass(frozen=True)
class RunConfig:
    """Everything that changes a run's numbers (its hash names the default output folder)."""

    methods: tuple[str, ...] = DEFAULT_METHODS  # names, or specs such as "predictions:DIR" (harness.registry)
    datasets: tuple[str, ...] = DEFAULT_DATASETS
    steps: Optional[int] = None  # None = each method's default
    eta: float = 0.0
    seed: int = 0
    batch_size: int = 8
    device: str = "cpu"
    dtype: str = "float32"
    processing_res: Optional[int] = None  # None = method's, else dataset's, else native
    count: Optional[int] = None  # evaluate only the first N samples of each dataset
    dataset_args: dict = field(default_factory=dict)  # name -> constructor kwargs
    allow_missing: bool = False  # saved predictions: score the samples that have a file, count the others


def config_key(cfg: RunConfig) -> str:
    """Hash of the settings; allow_missing enters only when set, so runs made before it existed keep their key."""
    settings = asdict(cfg)
    if not settings["allow_missing"]:
        del settings["allow_missing"]
    return mf.config_key(settings)


def build_dataset(name: str, cfg: RunConfig):
    kwargs = dict(cfg.dataset_args.get(name, {}))
    ds = dataset_class(name)(**kwargs)
    if cfg.count is not None:
        ds = Subset(ds, cfg.count)
    return ds


class Subset:
    """The first ``count`` samples of a dataset (same spec and name)."""

    def __init__(self, dataset, count: int):
        self.dataset, self.count = dataset, count
        self.name, self.spec = dataset.name, dataset.spec

    def ids(self):
        return self.dataset.ids()[: self.count]

    def load(self, sample_id):
        return self.dataset.load(sample_id)

    def prediction_relpath(self, sample_id):
        return self.dataset.prediction_relpath(sample_id)

    def describe(self):
        return {**self.dataset.describe(), "count": len(self.ids()), "subset_of": len(self.dataset.ids())}


def output_folder(cfg: RunConfig, output: Optional[str]) -> Path:
    return Path(output) if output else RESULTS_DIR / "runs" / f"run-{config_key(cfg)}"


def claim_folder(folder: Path, record: dict) -> None:
    """Create the run folder, or resume it if it holds this very run; never take over another run's folder."""
    path = folder / "manifest.json"
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous.get("config_key") != record["config_key"]:
            raise FileExistsError(
                f"{folder} holds results of a run with other settings (config {previous.get('config_key')}, this "
                f"run {record['config_key']}). Choose another --output or move that folder away; nothing was changed.")
        return
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} exists and is not a run folder; choose another --output")
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")


def run(cfg: RunConfig, output: Optional[str] = None, progress: bool = True) -> tuple[Path, pd.DataFrame]:
    """Evaluate every method on every dataset; returns the run folder and the tidy summary."""
    datasets = [build_dataset(n, cfg) for n in cfg.datasets]
    for n in cfg.methods:  # fail on an unknown name before any compute
        method_class(n)
    folder = output_folder(cfg, output)
    options = RunOptions(steps=cfg.steps, eta=cfg.eta, device=cfg.device, dtype=cfg.dtype)
    plan = []
    for ds in datasets:
        specs = [parse_method_spec(n) for n in cfg.methods if ds.spec.task in method_tasks(n)]
        methods = [(s, build_method(s.text, ds.spec.task, options)) for s in specs]
        pairs = [Pair(m, ds, folder / f"{s.cell}__{ds.name}", processing_res(cfg, m, ds)) for s, m in methods]
        plan.append((ds, pairs))
    saved = [p for _, pairs in plan for p in pairs if p.method.reads_saved_predictions]
    problems = []
    for pair in saved:  # every file of every folder checked before anything is scored; one error lists them all
        try:
            pair.missing = check_saved_predictions(pair, cfg.allow_missing)
        except SavedPredictionError as err:
            problems.append(str(err))
    if problems:
        raise SavedPredictionError("\n\n".join(problems))
    record = manifest_record(cfg, plan)
    claim_folder(folder, record)
    for pair in saved:
        atomic_write_text(pair.folder / "missing.json", json.dumps(list(pair.missing), indent=1) + "\n")
    for ds, pairs in plan:
        evaluate_pairs(pairs, ds, cfg.seed, cfg.batch_size, progress=progress)
    summary = summarize_run(cfg, plan)
    summary.to_csv(folder / "summary.csv", index=False)
    atomic_write_text(folder / "summary.md", markdown_tables(summary))
    return folder, summary


def processing_res(cfg: RunConfig, method, dataset) -> int:
    if cfg.processing_res is not None:
        return cfg.processing_res
    return method.contract.processing_res or dataset.spec.processing_res


def manifest_record(cfg: RunConfig, plan) -> dict:
    return {
        "config": asdict(cfg), "config_key": config_key(cfg), "git_commit": mf.git_commit(),
        "packages": mf.package_versions(), "device": cfg.device, "device_name": mf.device_description(cfg.device),
        "dtype": cfg.dtype, "seed": cfg.seed,
        "datasets": {ds.name: {**ds.describe(), "list_fingerprint": mf.list_fingerprint(ds.ids()),
                               "protocol": asdict(ds.spec)} for ds, _ in plan},
        "methods": {p.folder.name: {**p.method.describe(), "alignment": p.alignment,
                                                    "processing_res": p.processing_res}
                    for ds, pairs in plan for p in pairs},
    }


def summarize_run(cfg: RunConfig, plan) -> pd.DataFrame:
    """Tidy summary rows; n_missing counts the dataset's samples without a saved prediction (--allow-missing; the
    same count on every group's rows, since a missing sample's group is unknown), 0 for every other method."""
    out = []
    for ds, pairs in plan:
        ids = ds.ids()
        fingerprint = mf.list_fingerprint(ids)
        for pair in pairs:
            by_id = {r["id"]: r for r in read_jsonl(pair.folder / "rows.jsonl")}
            skipped = set(pair.missing)
            missing = [i for i in ids if i not in by_id and i not in skipped]
            if missing:
                raise RuntimeError(f"{pair.folder}: {len(missing)} samples have no result (first: {missing[:3]})")
            rows = [by_id[i] for i in ids if i in by_id]
            info = pair.method.describe()
            base = {"method": pair.method.name, "variant": info.get("variant", "default"), "dataset": ds.name,
                    "split": getattr(ds, "split", getattr(getattr(ds, "dataset", None), "split", "test")),
                    "task": ds.spec.task, "perturbation": "none", "level": 0, "steps": info.get("steps", 0),
                    "seed": cfg.seed, "eta": info.get("eta", 0.0), "checkpoint": info.get("checkpoint", "-"),
                    "alignment": pair.alignment, "dtype": cfg.dtype, "device": cfg.device,
                    "processing_res": pair.processing_res, "list_fingerprint": fingerprint}
            for group, idx in groups_of(rows).items():
                sub = [rows[i] for i in idx]
                if ds.spec.task == "depth":
                    stats, aggregation = summarize_depth(sub), "per_image"
                else:
                    aggregation = ds.spec.normals_aggregation
                    errors = [np.load(pair.err_path(r["id"])) for r in sub] if aggregation == "pooled" else []
                    stats = summarize_normals(sub, errors, aggregation)
                for metric, (value, lo, hi) in stats.items():
                    out.append({**base, "group": group, "aggregation": aggregation, "metric": metric,
                                "value": value, "ci_low": lo, "ci_high": hi, "n_samples": len(sub),
                                "n_missing": len(pair.missing)})
    return pd.DataFrame(out)
