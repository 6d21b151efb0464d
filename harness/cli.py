"""The command line: one small function per subcommand; defaults live in the config dataclasses."""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from dataclasses import fields

DESCRIPTION = "Train, run and evaluate DPBridge and regenerate the paper's tables."


def _csv(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _overrides(pairs: list[str], cls) -> dict:
    """--set key=value pairs typed by the config dataclass' field types."""
    types = {f.name: f.type for f in fields(cls)}
    out = {}
    for pair in pairs or []:
        key, _, value = pair.partition("=")
        if key not in types:
            raise SystemExit(f"unknown setting {key!r} for {cls.__name__}; known: {', '.join(sorted(types))}")
        kind = str(types[key])
        if "bool" in kind:
            out[key] = value.lower() in ("1", "true", "yes")
        elif "int" in kind:
            out[key] = int(value)
        elif "float" in kind:
            out[key] = float(value)
        else:
            out[key] = value
    return out


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
    from harness.run import DEFAULT_DATASETS, DEFAULT_METHODS, RunConfig, run

    cfg = RunConfig(methods=_csv(args.methods) if args.methods else DEFAULT_METHODS,
                    datasets=_dataset_names(args.datasets) if args.datasets else DEFAULT_DATASETS,
                    steps=args.steps, eta=args.eta, seed=args.seed, batch_size=args.batch_size, device=args.device,
                    dtype=args.dtype, count=args.count, allow_missing=args.allow_missing)
    folder, summary = run(cfg, args.output, progress=not args.quiet)
    print((folder / "summary.md").read_text())
    print(f"results: {folder}/summary.csv, summary.md, manifest.json")
    return 0


def cmd_train(args) -> int:
    command = "python -m harness " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if args.method == "train_mean":
        from harness.train_mean import fit_train_mean

        print(json.dumps(fit_train_mean(args.task, command=command), indent=2))
        return 0
    from harness.train import TrainConfig, train
    from methods.dpbridge import DPBridgeConfig

    if args.method != "dpbridge_tiny":
        raise SystemExit(f"`train` knows dpbridge_tiny and train_mean; got {args.method!r}")
    method_cfg = DPBridgeConfig(task=args.task, **_overrides(args.method_set, DPBridgeConfig))
    train_cfg = TrainConfig(**_overrides(args.set, TrainConfig))
    summary = train(method_cfg, train_cfg, command, method_name=args.method)
    print(json.dumps(summary["final_loss_ema"]))
    return 0


def cmd_pretrain(args) -> int:
    from harness.pretrain import PretrainConfig, pretrain

    command = "python -m harness " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    pretrain(PretrainConfig(**_overrides(args.set, PretrainConfig)), command)
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
    table = METHODS if args.what == "methods" else DATASETS
    for name, cls in sorted(table.items()):
        doc = (cls.__doc__ or "").strip().splitlines()
        print(f"{name:20s} {doc[0] if doc else ''}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness", description=DESCRIPTION)
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="evaluate methods on datasets (resumable)")
    r.add_argument("--methods", help="comma-separated method names (default: DPBridge-tiny + trivial references); "
                   "saved predictions of any model: predictions:DIR (affine depth / normals), "
                   "predictions[disparity]:DIR (affine disparity), Marigold layout (DIR/.../pred_<name>.npy)")
    r.add_argument("--datasets", help="comma-separated dataset names, or all (default: the tiny world, depth and normals)")
    r.add_argument("--steps", type=int, help="sampling steps (default: each method's own)")
    r.add_argument("--eta", type=float, default=0.0)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--batch-size", type=int, default=8)
    r.add_argument("--device", default="cpu")
    r.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="autocast dtype for the network (float32 = no autocast)")
    r.add_argument("--count", type=int, help="only the first N samples of each dataset")
    r.add_argument("--allow-missing", action="store_true",
                   help="saved predictions: score the samples that have a file and report how many were missing")
    r.add_argument("--output", help="run folder (default: results/runs/run-<settings hash>)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_run)

    t = sub.add_parser("train", help="train a method (dpbridge_tiny; train_mean)")
    t.add_argument("--method", default="dpbridge_tiny")
    t.add_argument("--task", choices=("depth", "normals"), default="depth")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="TrainConfig setting, e.g. iterations=100")
    t.add_argument("--method-set", action="append", metavar="KEY=VALUE", help="DPBridgeConfig setting, e.g. dan=B")
    t.set_defaults(func=cmd_train)

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

    ls = sub.add_parser("ls", help="list registered methods, datasets or metrics")
    ls.add_argument("what", choices=("methods", "datasets", "metrics"))
    ls.set_defaults(func=cmd_ls)
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
