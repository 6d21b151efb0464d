"""The command line: one small function per subcommand; defaults live in the config dataclasses."""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

from harness.trainables import trained_method_config, typed_settings

DESCRIPTION = "Train, run and evaluate DPBridge and regenerate the paper's tables."


def _csv(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _dataset_names(text: str) -> tuple[str, ...]:
    """Comma-separated names; ``all`` = every registered evaluation dataset."""
    names = _csv(text)
    if names == ("all",):
        from datasets.registry import DATASETS
        from harness.registry import load_entries

        load_entries()
        return tuple(sorted(n for n, cls in DATASETS.items() if getattr(cls, "evaluation", True)))
    return names


def cmd_run(args) -> int:
    from harness.dataroots import resolve_data
    from harness.run import DEFAULT_DATASETS, DEFAULT_METHODS, RunConfig, run

    names, roots = resolve_data(_dataset_names(args.datasets) if args.datasets else DEFAULT_DATASETS, args)
    cfg = RunConfig(methods=_csv(args.methods) if args.methods else DEFAULT_METHODS, datasets=names,
                    steps=args.steps, eta=args.eta, seed=args.seed, batch_size=args.batch_size, device=args.device,
                    dtype=args.dtype, count=args.count, allow_missing=args.allow_missing,
                    channels_last=args.channels_last, compile=args.compile,
                    continue_on_error=args.continue_on_error,
                    dataset_args=_dataset_settings(names, args.dataset_set),
                    checkpoint=args.checkpoint, ensemble_size=args.ensemble)
    folder, summary = run(cfg, args.output, progress=not args.quiet, roots=roots)
    if summary is None:  # launched on several processes: the first one prints
        return 0
    print((folder / "summary.md").read_text())
    if "n_failed" in summary and (summary.n_failed > 0).any():
        failed = summary[summary.group == "all"].drop_duplicates(["method", "dataset"])
        for r in failed[failed.n_failed > 0].itertuples():
            print(f"{r.n_failed} samples failed for {r.method} on {r.dataset}: reasons in the rows with "
                  f'"failed": true of {folder}/<method>__{r.dataset}/rows.jsonl')
    print(f"results: {folder}/summary.csv, summary.md, manifest.json")
    return 0


def _dataset_settings(names: tuple[str, ...], pairs: list[str]) -> dict:
    """--dataset-set KEY=VALUE for every dataset named with an argument (folder:DIR): name -> settings."""
    if not pairs:
        return {}
    from harness.registry import parse_method_spec

    takers = [n for n in names if parse_method_spec(n).argument is not None]
    if not takers:
        raise SystemExit("--dataset-set applies to datasets named with a folder (e.g. --datasets folder:DIR); "
                         "none was given")
    settings = dict(pair.partition("=")[::2] for pair in pairs)
    return {n: settings for n in takers}


def add_device_options(p) -> None:
    p.add_argument("--eta", type=float, default=0.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="autocast dtype for the network (float32 = no autocast)")


def add_inference_options(p) -> None:
    p.add_argument("--channels-last", action="store_true", help="networks in channels-last memory format")
    p.add_argument("--compile", action="store_true", help="torch.compile the networks (compiled on first use)")


def _levels(pairs) -> dict:
    out = {}
    for pair in pairs or []:
        name, sep, values = pair.partition("=")
        if not sep:
            raise ValueError(f"--levels takes NOISE=L1,L2 (e.g. gaussian=0.05,0.1), got {pair!r}")
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
    names, roots = resolve_data(_dataset_names(args.datasets) if args.datasets else DEFAULT_DATASETS, args)
    cfg = RunConfig(methods=_csv(args.methods) if args.methods else DEFAULT_METHODS, datasets=names,
                    steps=args.steps, eta=args.eta, seed=args.seed, batch_size=args.batch_size, device=args.device,
                    dtype=args.dtype, count=args.count, channels_last=args.channels_last, compile=args.compile)
    folder, summary, _ = robustness(cfg, conds, args.output, progress=not args.quiet, roots=roots)
    if summary is None:  # launched on several processes: the first one prints
        return 0
    print((folder / "table4.md").read_text())
    print(f"results: {folder}/table4.csv, table4.md, table4.png, robustness.csv, robustness.json")
    return 0


def cmd_latency(args) -> int:
    from harness.dataroots import resolve_data
    from harness.latency import LatencyConfig, latency_study
    from harness.run import DEFAULT_DATASETS

    try:
        steps = tuple(int(s) for s in _csv(args.steps))
    except ValueError:
        raise ValueError(f"--steps takes comma-separated integers, got {args.steps!r}") from None
    names, roots = resolve_data(_dataset_names(args.datasets) if args.datasets else DEFAULT_DATASETS, args)
    cfg = LatencyConfig(methods=_csv(args.methods), datasets=names, steps=steps, count=args.count,
                        batch_size=args.batch_size, warmup=args.warmup, seed=args.seed, eta=args.eta,
                        device=args.device, dtype=args.dtype, channels_last=args.channels_last, compile=args.compile)
    folder, _ = latency_study(cfg, args.output, roots=roots)
    if folder is None:  # launched on several processes: the first one measures and prints
        return 0
    print((folder / "latency.md").read_text())
    print(f"results: {folder}/latency.csv, latency.md, latency.png, manifest.json")
    return 0


def cmd_train(args) -> int:
    command = "python -m harness " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if args.method == "train_mean":
        from harness.train_mean import fit_train_mean

        print(json.dumps(fit_train_mean(args.task, command=command), indent=2))
        return 0
    from harness.train import TrainConfig, train

    from harness.train_data import method_train_settings

    method_cfg, export = trained_method_config(args.method, args.task, args.variant, args.method_set, args.backbone)
    settings = {**method_train_settings(args.method, args.datasets), **typed_settings(args.set, TrainConfig)}
    if export and "export" not in settings:
        settings["export"] = str(export)
        if args.variant:
            settings.setdefault("output", f"cache/train/ablation/{args.variant}")
    summary = train(method_cfg, TrainConfig(**settings), command, method_name=args.method)
    print(json.dumps(summary["final_loss_ema"]))
    return 0


def cmd_ablate(args) -> int:
    from harness.ablate import AblateConfig, ablate, method_specs
    from methods.ablation import ABLATION_VARIANTS

    from harness.dataroots import resolve_data

    cfg = AblateConfig(**{k: v for k, v in dict(
        method=args.method, backbone=args.backbone,
        variants=() if args.variants == "none" else (_csv(args.variants) if args.variants else None),
        baselines=() if args.baselines == "none" else (_csv(args.baselines) if args.baselines else None),
        datasets=_csv(args.datasets) if args.datasets else None,
        steps=tuple(int(s) for s in _csv(args.steps)) if args.steps else None, count=args.count, seed=args.seed,
        batch_size=args.batch_size, iterations=args.iterations, reference=not args.no_reference).items()
        if v is not None})
    if args.list:
        for spec in method_specs(cfg):
            option = spec[spec.find("[") + 1:-1] if "[" in spec else None
            print(f"{spec:28s} {ABLATION_VARIANTS[option][1] if option else 'baseline / reference'}")
        return 0
    _, roots = resolve_data(cfg.dataset_names(), args)
    folder, table = ablate(cfg, args.output, train_missing=args.train, progress=not args.quiet, roots=roots)
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


def cmd_compare(args) -> int:
    from tabulate import tabulate

    from harness.compare import compare

    table = compare(args.run_a, args.run_b, args.method_a, args.method_b)
    print(tabulate(table, headers="keys", tablefmt="github", showindex=False, floatfmt=".4g"))
    if args.output:
        table.to_csv(args.output, index=False)
    return 0


def cmd_tables(args) -> int:
    from harness.paper_tables import write_tables

    written = write_tables(args.runs, args.output)
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
                        processing_res=args.processing_res)
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
                       overwrite=args.overwrite, datasets=_csv(args.datasets) if args.datasets else ())
    for path in make_figures(args.runs, cfg, args.output):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from harness.dataroots import add_data_options

    p = argparse.ArgumentParser(prog="python -m harness", description=DESCRIPTION)
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="evaluate methods on datasets (resumable)")
    r.add_argument("--methods", help="comma-separated method names (default: DPBridge-tiny + trivial references); "
                   "saved predictions of any model: predictions:DIR (affine depth / normals), "
                   "predictions[disparity]:DIR (affine disparity), Marigold layout (DIR/.../pred_<name>.npy)")
    r.add_argument("--datasets", help="comma-separated dataset names, or all (default: the tiny world, depth and "
                   "normals); your own data: folder:DIR or folder[normals]:DIR (see README)")
    r.add_argument("--steps", type=int, help="sampling steps (default: each method's own)")
    r.add_argument("--eta", type=float, default=0.0)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--batch-size", type=int, default=8)
    r.add_argument("--device", default="cpu")
    r.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="autocast dtype for the network (float32 = no autocast)")
    r.add_argument("--count", type=int, help="only the first N samples of each dataset")
    r.add_argument("--checkpoint", metavar="DIR", help="trained checkpoint folder for the method that loads one "
                   "(dpbridge_sd15/sd21: from `train`; marigold: a Marigold folder); name one such method per run")
    r.add_argument("--ensemble", type=int, default=0, metavar="N",
                   help="predictions per image averaged by methods that ensemble (marigold); 0 = the method's default")
    r.add_argument("--allow-missing", action="store_true",
                   help="saved predictions: score the samples that have a file and report how many were missing")
    r.add_argument("--continue-on-error", action="store_true",
                   help="a sample whose GT cannot be decoded, whose valid mask is empty or whose prediction is NaN/inf "
                   "becomes a failed row with its reason (counted in summary.csv n_failed) instead of stopping")
    r.add_argument("--dataset-set", action="append", metavar="KEY=VALUE",
                   help="folder dataset setting overriding its spec.json, e.g. max_depth=10 (see README, folder)")
    r.add_argument("--output", help="run folder (default: results/runs/run-<settings hash>)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    add_data_options(r)
    add_inference_options(r)
    r.set_defaults(func=cmd_run)

    rb = sub.add_parser("robustness", help="Table 4: methods under input noise beside their clean scores")
    rb.add_argument("--noise", default="all", help="noise names (comma-separated) or all; see `ls perturbations`")
    rb.add_argument("--levels", action="append", metavar="NOISE=L1,L2", help="levels replacing a noise's defaults")
    rb.add_argument("--methods", help="comma-separated method names (default: dpbridge_tiny)")
    rb.add_argument("--datasets", help="comma-separated dataset names, or all (default: the tiny world)")
    for flag, kind in (("--steps", int), ("--count", int)):
        rb.add_argument(flag, type=kind)
    rb.add_argument("--seed", type=int, default=0)
    rb.add_argument("--batch-size", type=int, default=8)
    rb.add_argument("--output", help="run folder (default: the `run` folder of the same settings, so clean "
                    "predictions are shared)")
    rb.add_argument("--quiet", action="store_true")
    add_data_options(rb)
    add_device_options(rb)
    add_inference_options(rb)
    rb.set_defaults(func=cmd_robustness)

    la = sub.add_parser("latency", help="latency, memory and quality against sampling steps (Figure 5)")
    la.add_argument("--methods", default="dpbridge_tiny", help="methods with sampling steps, comma-separated")
    la.add_argument("--datasets", help="comma-separated dataset names (default: the tiny world)")
    la.add_argument("--steps", default="1,2,5,10,20,50", help="comma-separated step counts")
    la.add_argument("--count", type=int, default=16, help="images per cell (the first N of each dataset)")
    la.add_argument("--batch-size", type=int, default=1)
    la.add_argument("--warmup", type=int, default=1, help="untimed batches before each cell")
    la.add_argument("--seed", type=int, default=0)
    la.add_argument("--output", help="folder (default: results/latency/latency-<settings hash>-<UTC time>)")
    add_data_options(la)
    add_device_options(la)
    add_inference_options(la)
    la.set_defaults(func=cmd_latency)

    t = sub.add_parser("train", help="train a method (dpbridge_tiny, its ablation variants, i2sb, bbdm, "
                       "marigold_tiny; train_mean)")
    t.add_argument("--method", default="dpbridge_tiny")
    t.add_argument("--variant", help="ablation variant (see `python -m harness ablate --list`); exports to its "
                   "shipped folder methods/weights/ablation/")
    t.add_argument("--task", choices=("depth", "normals"), default="depth")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="TrainConfig setting, e.g. iterations=100")
    t.add_argument("--method-set", action="append", metavar="KEY=VALUE", help="method config setting, e.g. dan=B")
    t.add_argument("--backbone", metavar="PATH", help="Stable Diffusion folder (diffusers layout) for dpbridge_sd15 / "
                   "dpbridge_sd21; default $HARNESS_SD15 / $HARNESS_SD21, then the local Hugging Face cache")
    t.add_argument("--datasets", help="training adapters, e.g. hypersim,vkitti (roots: HARNESS_DATA_<NAME> or the "
                   "data config file); default: the tiny-world pool")
    t.set_defaults(func=cmd_train)

    ab = sub.add_parser("ablate", help="Table 3: the ablation grid and the baselines from shipped checkpoints")
    ab.add_argument("--method", help="whose grid: dpbridge_tiny (default), or dpbridge_sd15 / dpbridge_sd21 at scale")
    ab.add_argument("--backbone", help="Stable Diffusion folder for the grid at scale (else $HARNESS_SDxx, HF cache)")
    ab.add_argument("--variants", help="comma-separated DPBridge variants (default: all; see --list; none)")
    ab.add_argument("--baselines", help="comma-separated baselines (default: i2sb,bbdm,marigold_tiny for the tiny "
                    "grid, none at scale)")
    ab.add_argument("--datasets", help="default: the tiny world (synthetic); at scale nyuv2,kitti")
    ab.add_argument("--no-reference", action="store_true", help="skip the method's default checkpoint row")
    ab.add_argument("--steps", help="comma-separated step counts (default: 10,50)")
    ab.add_argument("--count", type=int, help="only the first N test samples")
    ab.add_argument("--seed", type=int)
    ab.add_argument("--batch-size", type=int)
    ab.add_argument("--train", action="store_true", help="train missing checkpoints first (the ablation budget)")
    ab.add_argument("--iterations", type=int, help="training budget of --train (default: 1000 for the tiny grid, "
                    "the paper's preset at scale)")
    ab.add_argument("--output", help="folder (default: results/runs/ablate_<method>)")
    ab.add_argument("--list", action="store_true", help="list the rows and stop")
    ab.add_argument("--quiet", action="store_true")
    add_data_options(ab)
    ab.set_defaults(func=cmd_ablate)

    b = sub.add_parser("pretrain", help="pretrain the tiny backbone (VAE + UNet) on the tiny world")
    b.add_argument("--set", action="append", metavar="KEY=VALUE", help="PretrainConfig setting")
    b.set_defaults(func=cmd_pretrain)

    c = sub.add_parser("compare", help="paired differences between two runs (B - A) with bootstrap intervals")
    c.add_argument("run_a")
    c.add_argument("run_b")
    c.add_argument("--method-a", help="method of RUN_A (when it has several on a dataset)")
    c.add_argument("--method-b", help="method of RUN_B")
    c.add_argument("--output", help="also write the table as CSV here")
    c.set_defaults(func=cmd_compare)

    tb = sub.add_parser("tables", help="the paper's Tables 1-4 (published numbers) with runs added as measured rows")
    tb.add_argument("runs", nargs="*", metavar="RUN", help="run folders (their summary.csv); none: published only")
    tb.add_argument("--output", help="folder for table<n>.md/.csv (default: results/tables/)")
    tb.set_defaults(func=cmd_tables)

    ls = sub.add_parser("ls", help="list registered methods, datasets, metrics or perturbations")
    ls.add_argument("what", choices=("methods", "datasets", "metrics", "perturbations"))
    ls.set_defaults(func=cmd_ls)

    pr = sub.add_parser("predict", help="run a method on your own images; write depth (16-bit PNG, .npy, colour) "
                        "or normals (RGB PNG, .npy)")
    pr.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders of images (recursive)")
    pr.add_argument("--method", default="dpbridge_tiny")
    pr.add_argument("--task", choices=("depth", "normals"), default="depth")
    pr.add_argument("--output", help="folder for the maps (default: results/predict/<method>__<task>); existing "
                    "outputs are skipped, never overwritten")
    pr.add_argument("--steps", type=int, help="sampling steps (default: the method's own)")
    pr.add_argument("--eta", type=float, default=0.0)
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--batch-size", type=int, default=8)
    pr.add_argument("--device", default="cpu")
    pr.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    pr.add_argument("--processing-res", type=int, help="long side the method sees (default: the method's; 0 = native)")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(func=cmd_predict)

    fg = sub.add_parser("figures", help="qualitative grids (input | GT | methods, error maps) from runs' cached "
                        "predictions")
    fg.add_argument("runs", nargs="+", metavar="RUN", help="run folders of `python -m harness run`")
    fg.add_argument("--ids", help="comma-separated sample ids to show (e.g. test/00003,test/00010)")
    fg.add_argument("--random", type=int, default=0, metavar="N", help="N samples drawn with --seed")
    fg.add_argument("--seed", type=int, default=0)
    fg.add_argument("--best-worst", type=int, default=0, metavar="K",
                    help="also the K best and K worst samples by AbsRel (depth) or mean angular error (normals)")
    fg.add_argument("--rank-method", help="method whose rows rank best/worst (default: the first of the first run)")
    fg.add_argument("--size", choices=("column", "slide"), default="column",
                    help="column: 3.3 in wide at 300 dpi; slide: 1920x1080 (16:9)")
    fg.add_argument("--output", help="folder for the PNGs (default: RUN/figures of the first run)")
    fg.add_argument("--overwrite", action="store_true", help="replace existing PNGs of the same name")
    fg.add_argument("--datasets", help="comma-separated: only these datasets of the runs (default: all they share)")
    fg.set_defaults(func=cmd_figures)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return args.func(args)
    except (FileNotFoundError, FileExistsError, KeyError, ValueError, RuntimeError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"error: {msg}", file=sys.stderr)
        return 2
