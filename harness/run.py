"""`python -m harness run`: build methods and datasets, evaluate (resumably), summarise, render tables."""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd

from harness import manifest as mf
from harness.distributed import drop_failed_rows, drop_rows, gather, processes, read_rows, require_shared
from harness.failures import is_failed, nan_stats
from harness.evaluate import (DEFAULT_SIZE_FIT, SIZE_FIT_BEFORE_OPTION, Pair, SavedPredictionError, cached_prediction,
                              check_inference_settings, check_saved_predictions, check_size_fit, evaluate_pairs,
                              resolved_processing_res)
from harness.dataroots import build_with_root, resolve_roots
from harness.registry import build_method, method_class, method_tasks, parse_method_spec
from harness.runio import atomic_write_text, read_json_object
from harness.summary import groups_of, interval_settings, summarize_depth, summarize_normals
from harness.tables import markdown_tables
from methods.base import RunOptions

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
DEFAULT_METHODS = ("dpbridge_tiny", "regressor_tiny", "constant", "ramp", "train_mean")
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
    processing_res: Optional[int] = None  # None = the dataset's protocol value, else the method's, else native
    count: Optional[int] = None  # evaluate only the first N samples of each dataset
    dataset_args: dict = field(default_factory=dict)  # name -> constructor kwargs
    allow_missing: bool = False  # saved predictions: score the samples that have a file, count the others
    channels_last: bool = False  # networks and inputs in channels-last memory format (methods.inference)
    compile: bool = False  # torch.compile the networks (methods.inference)
    bmm_attention: bool = False  # the UNet's attention as bmm-softmax-bmm (methods.attention)
    continue_on_error: bool = False  # record failing samples as failed rows (harness.failures); not in the key
    retry_failed: bool = False  # a resumed run tries the samples recorded as failed again; not in the key
    checkpoint: Optional[str] = None  # trained checkpoint folder of the methods that load one (dpbridge_sd21, marigold)
    ensemble_size: int = 0  # samples averaged per image by stochastic methods (marigold, the trained ones); 0 = the method's
    size_fit: str = DEFAULT_SIZE_FIT  # how the processing size meets a network's size multiple (harness.evaluate)


# what a manifest written before an option existed ran with (not that option's default now)
LEGACY_SETTINGS = {"size_fit": SIZE_FIT_BEFORE_OPTION}


def recorded_config(config: dict) -> RunConfig:
    """The RunConfig a manifest's ``config`` records; an option it predates takes the value it ran with."""
    return RunConfig(**{**LEGACY_SETTINGS, **config})


def key_settings(cfg: RunConfig) -> dict:
    """The settings the key hashes; options added later enter only when set, so runs made before them keep their
    key."""
    settings = mf.without_unset(asdict(cfg), ("allow_missing", "channels_last", "compile", "checkpoint",
                                               "ensemble_size", "bmm_attention"))
    settings.pop("continue_on_error")  # how failures are reported, not what is computed: resuming may add it
    settings.pop("retry_failed")  # the same: a resumed run may ask for it
    return settings


def config_key(cfg: RunConfig) -> str:
    """Hash of the settings (``key_settings``)."""
    return mf.config_key(key_settings(cfg))


def key_change(previous: dict, record: dict) -> str:
    """The keyed settings that differ between two manifests' configs ("key: old -> new"; "" when unreadable)."""
    try:
        before, now = (json.loads(json.dumps(key_settings(recorded_config(m["config"])))) for m in (previous, record))
    except (KeyError, TypeError):
        return ""
    return mf.settings_change(before, now)


def build_dataset(name: str, cfg: RunConfig, roots=None):
    """An adapter with its constructor arguments; ``roots`` (datasets.roots.Resolved) gives roots and lists."""
    ds = build_with_root(name, roots, **dict(cfg.dataset_args.get(name, {})))
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
        """The parent's description, fingerprinted as the samples this run evaluates (list_fingerprint); the
        parent list's fingerprint is kept as subset_of_fingerprint, so a --count run never passes for a full one."""
        parent, whole = self.dataset.describe(), self.dataset.ids()
        return {**parent, "count": len(self.ids()), "subset_of": len(whole),
                "list_fingerprint": mf.list_fingerprint(self.ids()),
                "subset_of_fingerprint": parent.get("list_fingerprint") or mf.list_fingerprint(whole)}


def output_folder(cfg: RunConfig, output: Optional[str]) -> Path:
    return Path(output) if output else RESULTS_DIR / "runs" / f"run-{config_key(cfg)}"


def same_but_batch(previous: dict, record: dict) -> bool:
    """True when two manifests differ at most in the batch size: a run stopped by an out-of-memory batch continues
    with a smaller --batch-size. Each sample draws from its own generator, so the batch changes a prediction only
    by float rounding (on the CPU up to about 5e-4 of a map, 1e-6 relative in a metric); manifest.json lists the
    batch sizes used (batch_sizes_used)."""
    try:
        a, b = (config_key(recorded_config({**m["config"], "batch_size": 1})) for m in (previous, record))
    except (KeyError, TypeError):
        return False
    return a == b


def forget_rows_to_redo(plan, retry_failed: bool) -> None:
    """The first process (the others wait) drops the rows a resumed run must score again: with ``retry_failed``
    (--retry-failed) every failed row, so those samples run again (one that still fails stops the run or, with
    --continue-on-error, is recorded again); always, a scored sample whose cached prediction (pred/*.npy, which
    `figures` reads) or, in a pooled normals cell, error map (err/*.npy, which the summary pools) is gone, so it is
    predicted in its batch and scored again, to the same floats."""
    if processes().is_main:
        for ds, pairs in plan:
            for pair in pairs:
                if retry_failed:
                    report(pair, drop_failed_rows(pair.folder), "trying {} sample(s) recorded as failed again")
                report(pair, drop_rows(pair.folder, files_lost(pair, aggregation_of(ds.spec) == "pooled")),
                       "scoring {} sample(s) whose pred/*.npy or err/*.npy is missing again")
    processes().barrier()


def files_lost(pair: Pair, pooled: bool):
    """The test of a row of ``pair``: a scored sample without its cached prediction (methods that predict) or,
    when ``pooled``, its error map."""
    def lost(row: dict) -> bool:
        if is_failed(row):
            return False
        return ((not pair.method.reads_saved_predictions and not pair.pred_path(row["id"]).is_file())
                or (pooled and not pair.err_path(row["id"]).is_file()))
    return lost


def report(pair: Pair, dropped: int, message: str) -> None:
    if dropped:
        print(f"{pair.folder.name}: {message.format(dropped)}", file=sys.stderr)


def claim_folder(folder: Path, record: dict) -> None:
    """Create the run folder, or resume it if it holds this very run; never take over another run's folder.
    Several processes: the first claims it while the others wait, then they check that they see its manifest."""
    if processes().is_main:
        claim_folder_alone(folder, record)
    processes().barrier()
    if not processes().is_main:
        require_shared(folder / "manifest.json")


def changed_fingerprints(previous: dict, record: dict, section: str, key: str) -> list[str]:
    """The entries of a manifest section ("methods", "datasets") whose fingerprint ``key`` differs between two
    manifests; an entry without it on either side (a manifest that predates it) cannot be checked."""
    before = previous.get(section, {})
    return sorted(name for name, info in record.get(section, {}).items()
                  if info.get(key) and before.get(name, {}).get(key)
                  and before[name][key] not in (info[key], legacy_subset_fingerprint(before[name], info)))


def legacy_subset_fingerprint(before: dict, now: dict) -> Optional[str]:
    """A --count run's manifest written before subset_of_fingerprint existed labelled the subset with its parent
    list's fingerprint: that run resumes when the parent list and the count are the same."""
    if "subset_of" in before and "subset_of_fingerprint" not in before and before.get("count") == now.get("count"):
        return now.get("subset_of_fingerprint")
    return None


def changed_weights(previous: dict, record: dict) -> list[str]:
    """The method folders whose weights differ (a manifest without weights fingerprints is resumed as before)."""
    return changed_fingerprints(previous, record, "methods", "weights_fingerprint")


def claim_folder_alone(folder: Path, record: dict) -> None:
    path = folder / "manifest.json"
    if path.is_file():
        previous = read_json_object(path, "move that folder away or choose another --output; nothing was changed")
        if previous.get("config_key") != record["config_key"] and not same_but_batch(previous, record):
            change = key_change(previous, record) or f"config {previous.get('config_key')}"
            raise FileExistsError(
                f"{folder} holds results of a run with other settings ({change}, this run {record['config_key']}). "
                f"Choose another --output or move that folder away; nothing was changed.")
        lists = changed_fingerprints(previous, record, "datasets", "list_fingerprint")
        if lists:
            raise FileExistsError(
                f"{folder} holds results on another sample list of {', '.join(lists)} (its list_fingerprint in "
                f"manifest.json differs: files or the split list changed). Resuming would mix lists; choose another "
                f"--output or move that folder away; nothing was changed.")
        changed = changed_weights(previous, record)
        if changed:
            raise FileExistsError(
                f"{folder} holds predictions of other weights for {', '.join(changed)} (a retrained or replaced "
                f"checkpoint: its weights_fingerprint in manifest.json differs). Resuming would mix them; choose "
                f"another --output or move that folder away; nothing was changed.")
        record_batch_size(path, previous, record["config"]["batch_size"])
        return
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} exists and is not a run folder; choose another --output")
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")


def record_batch_size(path: Path, manifest: dict, batch_size: int) -> None:
    """A folder resumed with another batch size (same_but_batch) lists every batch size its cells ran with."""
    used = manifest.get("batch_sizes_used", [manifest["config"]["batch_size"]])
    if batch_size not in used:
        manifest["batch_sizes_used"] = sorted(used + [batch_size])
        atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def run(cfg: RunConfig, output: Optional[str] = None, progress: bool = True,
        roots=None, commit: Optional[str] = None) -> tuple[Path, pd.DataFrame]:
    """Evaluate every method on every dataset; returns the run folder and the tidy summary (None on all but the
    first process when launched on several: harness.distributed shards the samples, the first summarises).

    roots: datasets.roots.Resolved (harness.dataroots) for benchmarks read from files; None = from the environment
    and the config file. Every dataset without data is named in one error before anything runs. ``commit``: the
    git commit a new run folder's manifest records (None: read now; a caller running many folders reads it once
    as it starts, so an edit made meanwhile is not recorded as the code that ran)."""
    folder = output_folder(cfg, output)
    roots = roots if roots is not None else resolve_roots(cfg.datasets)
    plan = build_plan(cfg, folder, roots)
    saved = [p for _, pairs in plan for p in pairs if p.method.reads_saved_predictions]
    problems = []
    for pair in saved:  # every file of every folder checked before anything is scored; one error lists them all
        try:
            pair.missing = check_saved_predictions(pair, cfg.allow_missing)
        except SavedPredictionError as err:
            problems.append(str(err))
    if problems:
        raise SavedPredictionError("\n\n".join(problems))
    record = manifest_record(cfg, plan, commit)
    record["skipped_datasets"] = dict(roots.skipped)  # --skip-missing: name -> why (no data)
    claim_folder(folder, record)
    forget_rows_to_redo(plan, cfg.retry_failed)
    for pair in saved if processes().is_main else []:
        atomic_write_text(pair.folder / "missing.json", json.dumps(list(pair.missing), indent=1) + "\n")
    for ds, pairs in plan:
        evaluate_pairs(pairs, ds, cfg.seed, cfg.batch_size, progress=progress)
    if not gather(folder, [(p.folder, ds.ids()) for ds, pairs in plan for p in pairs]):
        return folder, None  # launched on several processes: the first one summarises
    summary = summarize_run(cfg, plan)
    atomic_write_text(folder / "summary.csv", summary.to_csv(index=False))
    atomic_write_text(folder / "summary.md", markdown_tables(summary))
    return folder, summary


def build_plan(cfg: RunConfig, folder: Path, roots=None) -> list:
    """[(dataset, [Pair per method serving its task])]; unknown names fail before any model is built."""
    check_inference_settings(cfg.steps, cfg.batch_size, cfg.processing_res, cfg.eta, cfg.device)
    check_size_fit(cfg.size_fit)
    if cfg.count is not None and cfg.count < 1:
        raise ValueError(f"count must be >= 1 (leave --count out for every sample), got {cfg.count}")
    datasets = [build_dataset(n, cfg, roots) for n in cfg.datasets]
    for n in cfg.methods:  # fail on an unknown name before any compute
        method_class(n)
    check_every_method_serves(cfg.methods, datasets)
    check_checkpoint_owner(cfg)
    options = run_options(cfg)
    plan = []
    for ds in datasets:
        specs = [parse_method_spec(n) for n in cfg.methods if ds.spec.task in method_tasks(n)]
        methods = [(s, build_method(s.text, ds.spec.task, options)) for s in specs]
        pairs = [Pair(m, ds, folder / f"{s.cell}__{ds.name}", processing_res(cfg, m, ds),
                      continue_on_error=cfg.continue_on_error, size_fit=cfg.size_fit) for s, m in methods]
        plan.append((ds, pairs))
    if processes().is_main:
        for line in ignored_settings(cfg, plan):
            print(line, file=sys.stderr)
    return plan


def ignored_settings(cfg: RunConfig, plan) -> list[str]:
    """What a given --steps or --count leaves unchanged: the methods that take a fixed number of steps (their
    recorded steps), the datasets with fewer samples than --count (all of them are evaluated)."""
    lines = []
    if cfg.steps is not None:
        taken = {(p.method.name, p.method.describe().get("steps", 0)) for _, pairs in plan for p in pairs}
        fixed = sorted(f"{name} ({steps})" for name, steps in taken if steps != cfg.steps)
        if fixed:
            lines.append(f"--steps {cfg.steps} does not apply to {', '.join(fixed)}: each runs the fixed "
                         f"number of steps in brackets, and its results record that number")
    for ds, n in ((ds, len(ds.ids())) for ds, _ in plan):
        if cfg.count is not None and n < cfg.count:
            lines.append(f"--count {cfg.count}: {ds.name} has {n} samples; all of them are evaluated")
    return lines


def check_every_method_serves(methods, datasets) -> None:
    """Refuse no method or no dataset, and a method whose tasks no dataset has (it would score nothing, silently)."""
    if not methods or not datasets:
        raise ValueError(f"nothing to evaluate: --methods {','.join(methods)!r}, --datasets "
                         f"{','.join(d.name for d in datasets)!r}; name at least one of each")
    for flag, names in (("--methods", list(methods)), ("--datasets", [d.name for d in datasets])):
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:  # each would be scored into the same folder twice and counted twice in the summary
            raise ValueError(f"{flag} names {', '.join(twice)} more than once; name each once")
    tasks = {d.spec.task for d in datasets}
    for name in methods:
        if not tasks & set(method_tasks(name)):
            raise ValueError(f"method {name} predicts {', '.join(method_tasks(name))}, and none of --datasets "
                             f"({', '.join(d.name for d in datasets)}) is such a benchmark; add one or drop the "
                             f"method")


def check_checkpoint_owner(cfg: RunConfig) -> None:
    """--checkpoint replaces the weights of exactly one method of the run: with several methods that load weights
    it would be handed to all of them (a DPBridge folder read as train_mean's mean map), with none it does nothing."""
    if cfg.checkpoint is None:
        return
    owners = [n for n in cfg.methods if method_class(n).loads_checkpoint]
    if len(owners) != 1:
        which = f"{len(owners)} methods that load weights ({', '.join(owners)})" if owners else "no method that loads weights"
        raise ValueError(f"--checkpoint {cfg.checkpoint} replaces the weights of one method, but --methods names {which}"
                         f"; name that method alone with --methods (plus any reference methods that load no weights, "
                         f"e.g. constant, ramp), or leave --checkpoint out")


def run_options(cfg: RunConfig) -> RunOptions:
    return RunOptions(steps=cfg.steps, eta=cfg.eta, device=processes().device(cfg.device), dtype=cfg.dtype,
                      channels_last=cfg.channels_last, compile=cfg.compile, checkpoint=cfg.checkpoint,
                      bmm_attention=cfg.bmm_attention, ensemble_size=cfg.ensemble_size)


def processing_res(cfg: RunConfig, method, dataset) -> int:
    return resolved_processing_res(cfg.processing_res, dataset.spec.processing_res, method.contract.processing_res)


def manifest_record(cfg: RunConfig, plan, commit: Optional[str] = None) -> dict:
    return {
        "config": asdict(cfg), "config_key": config_key(cfg), "git_commit": commit or mf.git_commit(),
        "packages": mf.package_versions(), "device": cfg.device, "device_name": mf.device_description(cfg.device),
        "dtype": cfg.dtype, "seed": cfg.seed, "world_size": processes().world_size, "intervals": interval_settings(),
        "datasets": {ds.name: {"list_fingerprint": mf.list_fingerprint(ds.ids()), **ds.describe(),
                               "protocol": asdict(ds.spec)} for ds, _ in plan},
        "methods": {p.folder.name: {**p.method.describe(), "alignment": p.alignment,
                                    "aggregation": aggregation_of(ds.spec), "processing_res": p.processing_res}
                    for ds, pairs in plan for p in pairs},
    }


def aggregation_of(spec) -> str:
    """How a dataset's per-image metrics become one number: depth per image then averaged (protocol.md); normals
    as the dataset says (pooled over pixels, DSINE's, or per image)."""
    return "per_image" if spec.task == "depth" else spec.normals_aggregation


def summarize_run(cfg: RunConfig, plan) -> pd.DataFrame:
    """Tidy summary rows; n_missing counts the dataset's samples without a saved prediction (--allow-missing; the
    same count on every group's rows, since a missing sample's group is unknown), 0 for every other method."""
    out = []
    for ds, pairs in plan:
        ids = ds.ids()
        fingerprint = ds.describe().get("list_fingerprint") or mf.list_fingerprint(ids)  # the list's, when read
        for pair in pairs:
            by_id = {r["id"]: r for r in read_rows(pair.folder)}
            skipped = set(pair.missing)
            missing = [i for i in ids if i not in by_id and i not in skipped]
            if missing:
                raise RuntimeError(f"{pair.folder}: {len(missing)} samples have no result (first: {missing[:3]})")
            rows = [by_id[i] for i in ids if i in by_id and not is_failed(by_id[i])]
            n_failed = sum(is_failed(by_id[i]) for i in ids if i in by_id)
            info = pair.method.describe()
            base = {"method": pair.method.name, "variant": info.get("variant", "default"), "dataset": ds.name,
                    "split": getattr(ds, "split", getattr(getattr(ds, "dataset", None), "split", "test")),
                    "task": ds.spec.task, "perturbation": pair.noise.name if pair.noise else "none",
                    "level": pair.noise.level if pair.noise else 0, "steps": info.get("steps", 0),
                    "seed": cfg.seed, "eta": info.get("eta", 0.0), "ensemble_size": info.get("ensemble_size", 1),
                    "checkpoint": info.get("checkpoint", "-"),
                    "alignment": pair.alignment, "dtype": cfg.dtype, "device": cfg.device,
                    "processing_res": pair.processing_res, "size_fit": cfg.size_fit, "list_fingerprint": fingerprint}
            for group, idx in groups_of(rows).items():
                sub = [rows[i] for i in idx]
                aggregation = aggregation_of(ds.spec)
                if not sub:  # every sample failed (--continue-on-error): NaN metrics, the failures counted
                    stats = nan_stats(ds.spec.task)
                elif ds.spec.task == "depth":
                    stats = summarize_depth(sub)
                else:
                    pooled = aggregation == "pooled"
                    errors = [cached_prediction(pair.err_path(r["id"]), "error map") for r in sub] if pooled else []
                    stats = summarize_normals(sub, errors, aggregation)
                for metric, (value, lo, hi) in stats.items():
                    out.append({**base, "group": group, "aggregation": aggregation, "metric": metric,
                                "value": value, "ci_low": lo, "ci_high": hi, "n_samples": len(sub),
                                "n_missing": len(pair.missing), "n_failed": n_failed})
    return pd.DataFrame(out)
