"""The command line: one small function per subcommand; defaults live in the config dataclasses."""
from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

from harness.cli_parser import build_parser
from harness.trainables import trained_method_config, typed_settings



def _csv(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _given(text, parse, default: tuple[str, ...]) -> tuple[str, ...]:
    """An option's parsed names, or ``default`` when it was left out (given empty, it names nothing: refused)."""
    return default if text is None else parse(text)


def _ints(text: str, flag: str) -> tuple[int, ...]:
    """Comma-separated integers of the option ``flag`` (named in the error)."""
    try:
        return tuple(int(s) for s in _csv(text))
    except ValueError:
        raise ValueError(f"{flag} takes comma-separated integers, got {text!r}") from None


def _dataset_names(text: str) -> tuple[str, ...]:
    """Comma-separated names; ``all`` = every registered evaluation dataset."""
    names = _csv(text)
    if names == ("all",):
        from datasets.registry import DATASETS
        from harness.registry import load_entries

        load_entries()
        return tuple(sorted(n for n, cls in DATASETS.items() if getattr(cls, "evaluation", True)))
    return names


def inference_options(args) -> dict:
    """The options of harness.cli_parser.add_inference_options, as RunConfig / LatencyConfig fields."""
    return dict(channels_last=args.channels_last, compile=args.compile, bmm_attention=args.bmm_attention)


def size_fit_option(args) -> dict:
    """--size-fit as a config field; not given: the config's default (harness.evaluate.DEFAULT_SIZE_FIT)."""
    return {} if args.size_fit is None else {"size_fit": args.size_fit}


def run_options(args, names: tuple[str, ...]) -> dict:
    """The RunConfig fields `run` and `robustness` share (harness.cli_parser.add_run_options and the rest)."""
    return dict(steps=args.steps, eta=args.eta, seed=args.seed, batch_size=args.batch_size, device=args.device,
                dtype=args.dtype, processing_res=args.processing_res, **inference_options(args),
                **size_fit_option(args), continue_on_error=args.continue_on_error, retry_failed=args.retry_failed,
                dataset_args=_dataset_settings(names, args.dataset_set), checkpoint=args.checkpoint,
                ensemble_size=args.ensemble)


def cmd_run(args) -> int:
    from harness.dataroots import resolve_data
    from harness.run import DEFAULT_DATASETS, DEFAULT_METHODS, RunConfig, run

    names, roots = resolve_data(_given(args.datasets, _dataset_names, DEFAULT_DATASETS), args)
    cfg = RunConfig(methods=_given(args.methods, _csv, DEFAULT_METHODS), datasets=names, count=args.count,
                    allow_missing=args.allow_missing, **run_options(args, names))
    folder, summary = run(cfg, args.output, progress=not args.quiet, roots=roots)
    if summary is None:  # launched on several processes: the first one prints
        return 0
    print((folder / "summary.md").read_text())
    if "n_failed" in summary and (summary.n_failed > 0).any():
        failed = summary[summary.group == "all"].drop_duplicates(["method", "dataset"])
        for r in failed[failed.n_failed > 0].itertuples():
            print(f"{r.n_failed} samples failed for {r.method} on {r.dataset}: reasons in the rows with "
                  f'"failed": true of {folder}/<method>__{r.dataset}/rows.jsonl; once they are fixed, the same '
                  f"command with --retry-failed tries them again")
    print(f"results: {folder}/summary.csv, summary.md, manifest.json")
    return 0


def _dataset_settings(names: tuple[str, ...], pairs: list[str]) -> dict:
    """--dataset-set KEY=VALUE for every dataset that takes settings: those named with a folder (folder:DIR, which
    checks them against its spec.json keys) and registered ones declaring ``cli_settings`` (the tiny world's split,
    seed and resolution): name -> settings."""
    if not pairs:
        return {}
    from harness.registry import dataset_class, parse_method_spec

    settings = dict(pair.partition("=")[::2] for pair in pairs)
    out = {}
    for name in names:
        declared = getattr(dataset_class(name), "cli_settings", None)
        if parse_method_spec(name).argument is None and not declared:
            continue
        unknown = sorted(set(settings) - set(declared)) if declared else []
        if unknown:
            raise ValueError(f"--dataset-set {', '.join(unknown)}: dataset {name} takes {', '.join(declared)}")
        out[name] = settings
    if not out:
        raise ValueError("--dataset-set applies to datasets named with a folder (e.g. --datasets folder:DIR) and to "
                         "the tiny world (synthetic, synthetic_normals: e.g. split=val); none was given")
    return out


def _levels(pairs) -> dict:
    out = {}
    for pair in pairs or []:
        name, sep, values = pair.partition("=")
        if not sep:
            raise ValueError(f"--levels takes NOISE=L1,L2 (e.g. gaussian=0.05,0.1), got {pair!r}")
        if name.strip() in out:
            raise ValueError(f"--levels names {name.strip()} twice; give all its levels in one option, e.g. "
                             f"{name.strip()}=0.04,0.08")
        try:
            out[name.strip()] = tuple(float(v) for v in _csv(values))
        except ValueError:
            raise ValueError(f"--levels {pair!r}: levels must be numbers") from None
    return out


def cmd_robustness(args) -> int:
    from harness.dataroots import resolve_data
    from harness.perturb import conditions
    from harness.robustness import DEFAULT_METHODS, robustness
    from harness.run import DEFAULT_DATASETS, RunConfig

    conds = conditions(_csv(args.noise), _levels(args.levels))  # bad names or levels fail before any work
    names, roots = resolve_data(_given(args.datasets, _dataset_names, DEFAULT_DATASETS), args)
    cfg = RunConfig(methods=_given(args.methods, _csv, DEFAULT_METHODS), datasets=names, count=args.count,
                    **run_options(args, names))
    folder, summary, _ = robustness(cfg, conds, args.output, progress=not args.quiet, roots=roots)
    if summary is None:  # launched on several processes: the first one prints
        return 0
    print((folder / "table4.md").read_text())
    print(f"results: {folder}/table4.csv, table4.md, table4.png, robustness.csv, robustness.json, paired.csv")
    return 0


def cmd_latency(args) -> int:
    from harness.dataroots import resolve_data
    from harness.latency import LatencyConfig, latency_study
    from harness.run import DEFAULT_DATASETS

    steps = _ints(args.steps, "--steps")
    names, roots = resolve_data(_given(args.datasets, _dataset_names, DEFAULT_DATASETS), args)
    cfg = LatencyConfig(methods=_csv(args.methods), datasets=names, steps=steps, count=args.count,
                        batch_size=args.batch_size, warmup=args.warmup, seed=args.seed, eta=args.eta,
                        device=args.device, dtype=args.dtype, **inference_options(args))
    folder, _ = latency_study(cfg, args.output, roots=roots)
    if folder is None:  # launched on several processes: the first one measures and prints
        return 0
    print((folder / "latency.md").read_text())
    print(f"results: {folder}/latency.csv, latency.md, latency.png, manifest.json")
    return 0


def train_configs(args):
    """(method config, TrainConfig) of parsed `train` arguments: the method's preset, --set on top, and a variant's
    shipped export folder unless --set export= names another."""
    from harness.train import TrainConfig
    from harness.train_data import method_train_settings

    method_cfg, export = trained_method_config(args.method, args.task, args.variant, args.method_set, args.backbone)
    settings = {**method_train_settings(args.method, args.datasets), **typed_settings(args.set, TrainConfig)}
    if export and "export" not in settings:
        settings["export"] = str(export)
        if args.variant:
            settings.setdefault("output", f"cache/train/ablation/{args.variant}")
    return method_cfg, TrainConfig(**settings)


def cmd_train(args) -> int:
    command = "python -m harness " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if args.method == "train_mean":
        from harness.train_mean import fit_train_mean, train_mean_settings

        ignored = [flag for flag, value in (("--variant", args.variant), ("--method-set", args.method_set),
                                            ("--backbone", args.backbone), ("--datasets", args.datasets),
                                            ("--data-root", args.data_root)) if value]
        if ignored:
            raise ValueError(f"train_mean takes none of {', '.join(ignored)} (it averages the tiny world's train "
                             f"maps); its settings: --set pool_count=N, seed=S, export=FILE")
        summary = fit_train_mean(args.task, command=command, **train_mean_settings(args.set))
        print(json.dumps(summary, indent=2))
        return 0
    from datasets.roots import parse_pairs
    from harness.train import train

    method_cfg, train_cfg = train_configs(args)
    roots = parse_pairs(args.data_root, "--data-root")
    if roots and not train_cfg.datasets:
        raise ValueError("--data-root names a training set's folder: name the set with --datasets too")
    summary = train(method_cfg, train_cfg, command, method_name=args.method, data_roots=roots)
    print(json.dumps(summary["final_loss_ema"]))
    if "stopped_at" in summary:
        print(f"stopped after {summary['stopped_at']} of {summary['train_config']['iterations']} iterations (stop_at); "
              f"the same command without --set stop_at=... continues from the checkpoint", file=sys.stderr)
    return 0


def training_roots_apart(data_root: list, training: set, evaluated: tuple) -> tuple[list, dict]:
    """(the --data-root pairs of evaluated datasets, name -> path of the training sets'): `ablate --train` at scale
    takes the roots of its training sets (hypersim=PATH) beside those of the benchmarks it scores."""
    from datasets.roots import parse_pairs

    pairs = parse_pairs(data_root, "--data-root")
    train = {n: path for n, path in pairs.items() if n in training}
    return [f"{n}={path}" for n, path in pairs.items() if n not in train or n in evaluated], train


def cmd_ablate(args) -> int:
    from harness.ablate import AblateConfig, ablate, check_config, method_specs, training_sets
    from methods.ablation import ABLATION_VARIANTS

    from harness.dataroots import resolve_data

    cfg = AblateConfig(**{k: v for k, v in dict(
        method=args.method, backbone=args.backbone,
        variants=() if args.variants == "none" else (_csv(args.variants) if args.variants else None),
        baselines=() if args.baselines == "none" else (_csv(args.baselines) if args.baselines else None),
        datasets=_csv(args.datasets) if args.datasets is not None else None,
        steps=_ints(args.steps, "--steps") if args.steps else None, count=args.count, seed=args.seed,
        batch_size=args.batch_size, iterations=args.iterations, reference=not args.no_reference, eta=args.eta,
        device=args.device, dtype=args.dtype, processing_res=args.processing_res, size_fit=args.size_fit).items()
        if v is not None})
    if args.list:
        for spec in method_specs(cfg):
            option = spec[spec.find("[") + 1:-1] if "[" in spec else None
            print(f"{spec:28s} {ABLATION_VARIANTS[option][1] if option else 'baseline / reference'}")
        return 0
    check_config(cfg)  # an unknown method, a bad count or step count: before the data roots are looked for
    args.data_root, train_roots = training_roots_apart(args.data_root, training_sets(cfg) if args.train else set(),
                                                       cfg.dataset_names())
    names, roots = resolve_data(cfg.dataset_names(), args)
    if names != cfg.dataset_names():  # --skip-missing left some out
        from dataclasses import replace

        cfg = replace(cfg, datasets=tuple(names))
    folder, table = ablate(cfg, args.output, train_missing=args.train, progress=not args.quiet, roots=roots,
                           train_roots=train_roots)
    if table is None:  # launched on several processes: the first one prints
        return 0
    print((folder / "table3.md").read_text())
    print((folder / "claims.md").read_text())
    print(f"tables: {folder}/table3.csv, table3.md, claims.csv, claims.md; runs: {folder}/steps<N>/<row>/")
    return 0


def cmd_pretrain(args) -> int:
    from harness.pretrain import PretrainConfig, pretrain

    command = "python -m harness " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    pretrain(PretrainConfig(**typed_settings(args.set, PretrainConfig)), command)
    return 0


def cmd_diagnose(args) -> int:
    import pandas as pd
    from tabulate import tabulate

    from harness.diagnose import DiagnoseConfig, diagnose

    if args.output:  # checked before the work, not after it
        _check_new_output(args.output, args.overwrite)
    cfg = DiagnoseConfig(task=args.task, checkpoint=args.checkpoint, split=args.split, count=args.count,
                         steps=_ints(args.steps, "--steps"), ensemble=args.ensemble, eta=args.eta, seed=args.seed)
    table = pd.DataFrame(diagnose(cfg))
    shown = ["kind", "t", "steps", "members", "latent_mse", "ci_low", "ci_high", "ratio_to_first_estimate",
             "ratio_ci_low", "ratio_ci_high"]
    print(tabulate(table[shown], headers="keys", tablefmt="github", showindex=False, floatfmt=".4g"))
    print(f"checkpoint {table.checkpoint[0]} ({table.weights_fingerprint[0]}), {cfg.split} scenes 0..{cfg.count - 1}, "
          f"eta {cfg.eta}, seed {cfg.seed}")
    if args.output:
        from harness.runio import atomic_write_text

        atomic_write_text(Path(args.output), table.to_csv(index=False))
        print(f"rows: {args.output}")
    return 0


def _check_new_output(path: str, overwrite: bool) -> None:
    """A file a command is about to write: its folder exists, and it is new unless ``overwrite``."""
    if Path(path).is_dir():
        raise IsADirectoryError(f"--output {path} is a folder; name the file to write (e.g. {Path(path) / 'out.csv'})")
    if not Path(path).parent.is_dir():
        raise FileNotFoundError(f"--output {path}: folder {Path(path).parent} does not exist; create it first")
    if Path(path).exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it or choose another --output")


def cmd_compare(args) -> int:
    from tabulate import tabulate

    from harness.compare import compare

    if args.output:
        _check_new_output(args.output, args.overwrite)
    from harness.compare import MIN_PAIRED, RESULT_COLUMNS, settings_lines

    table = compare(args.run_a, args.run_b, args.method_a, args.method_b)
    print(tabulate(table[list(RESULT_COLUMNS)], headers="keys", tablefmt="github", showindex=False, floatfmt=".4g"))
    print("\n".join(settings_lines(table)))
    for why in table.attrs.get("skipped", []):
        print(f"not compared: {why}", file=sys.stderr)
    if (table["n_samples"] < MIN_PAIRED).any():
        print(f"fewer than {MIN_PAIRED} shared samples on some dataset or group: no interval there (NaN), nothing "
              f"distinguishable (the bootstrap interval is too narrow on so few images: harness/compare.py)",
              file=sys.stderr)
    if args.output:
        from harness.runio import atomic_write_text

        atomic_write_text(Path(args.output), table.to_csv(index=False))
    return 0


def cmd_tables(args) -> int:
    from harness.paper_tables import write_tables

    written = write_tables(args.runs, args.output, overwrite=args.overwrite)
    for path, text in written.items():
        print(text)
    print(f"tables: {', '.join(str(p) for p in written)} (and .csv beside each)")
    return 0


def cmd_ls(args) -> int:
    from harness.registry import load_entries
    from datasets.registry import DATASETS
    from methods.registry import METHODS

    load_entries()
    if args.what == "metrics":
        from harness.metrics import METRIC_INFO

        for task, table in METRIC_INFO.items():
            for name, info in table.items():
                print(f"{task:8s} {name:10s} {info.label} ({info.direction} is better)")
        return 0
    if args.what == "perturbations":
        from harness.perturb import PERTURBATIONS

        for name, p in sorted(PERTURBATIONS.items()):
            print(f"{name:12s} {p.parameter}: {', '.join(f'{v:.4g}' for v in p.levels)}  {p.doc}")
        return 0
    table = METHODS if args.what == "methods" else DATASETS
    for name, cls in sorted(table.items()):
        doc = (cls.__doc__ or "").strip().splitlines()
        print(f"{name:20s} {doc[0] if doc else ''}")
    return 0


def cmd_predict(args) -> int:
    from harness.predict import PredictConfig, predict

    cfg = PredictConfig(method=args.method, task=args.task, steps=args.steps, eta=args.eta, seed=args.seed,
                        batch_size=args.batch_size, device=args.device, dtype=args.dtype,
                        processing_res=args.processing_res, **size_fit_option(args))
    done = predict(cfg, args.paths, args.output, progress=not args.quiet)
    if done["ignored"]:
        print(f"ignored {len(done['ignored'])} files that are not images by their suffix "
              f"(first: {done['ignored'][0]})")
    if done["skipped"]:
        print(f"skipped {len(done['skipped'])} images whose outputs already exist in {done['folder']} "
              f"(first: {done['skipped'][0]}); delete them to predict again")
    print(f"wrote {len(done['written'])} images' {args.task} maps to {done['folder']}")
    return 0


def cmd_figures(args) -> int:
    from harness.figures import FigureConfig, make_figures

    cfg = FigureConfig(ids=_csv(args.ids) if args.ids else (), random=args.random, seed=args.seed,
                       best_worst=args.best_worst, size=args.size, rank_method=args.rank_method,
                       overwrite=args.overwrite, datasets=_csv(args.datasets) if args.datasets is not None else ())
    for path in make_figures(args.runs, cfg, args.output):
        print(path)
    return 0


COMMANDS = {  # subcommand -> function (its arguments: harness/cli_parser.py)
    "run": cmd_run, "robustness": cmd_robustness, "latency": cmd_latency, "train": cmd_train, "ablate": cmd_ablate,
    "pretrain": cmd_pretrain, "compare": cmd_compare, "tables": cmd_tables, "ls": cmd_ls, "predict": cmd_predict,
    "figures": cmd_figures, "diagnose": cmd_diagnose}


RESUMABLE = {  # subcommand -> what an interrupted one kept (each file is written whole as it finishes)
    **dict.fromkeys(("run", "robustness"), "each finished prediction and scored row is on disk; the same command "
                                           "continues from there"),
    "latency": "each finished cell is in the study's cells.jsonl; the same command measures only the others",
    **dict.fromkeys(("train", "pretrain", "ablate"), "the last checkpoint is on disk; the same command resumes from "
                                                     "it")}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        resumes = args.command in RESUMABLE
        print(f"interrupted{': ' + RESUMABLE[args.command] if resumes else ''}", file=sys.stderr)
        return 130
    except (OSError, KeyError, ValueError, RuntimeError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"error: {msg}", file=sys.stderr)
        return 2
