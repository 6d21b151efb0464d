"""Command-line options for dataset roots, shared by every command that reads benchmarks.

    add_data_options(parser)                       # --data-root NAME=PATH, --data-list NAME=PATH, --skip-missing
    names, resolved = resolve_data(names, args)    # raises one error listing every missing root (or skips them)
    dataset = build_with_root(name, resolved, **kwargs)

Precedence and the config file: see :mod:`datasets.roots`.
"""
from __future__ import annotations

import sys
from typing import Optional

from datasets import roots as dr
from harness.registry import dataset_class


def add_data_options(parser) -> None:
    parser.add_argument("--data-root", action="append", metavar="NAME=PATH",
                        help="where a dataset's files are (folder or .tar); also HARNESS_DATA_<NAME> or "
                             "~/.config/dpbridge-harness/data.conf (see README, Datasets)")
    parser.add_argument("--data-list", action="append", metavar="NAME=PATH",
                        help="a sample list for a benchmark that ships none (KITTI Eigen, ScanNet 800); also "
                             "HARNESS_LIST_<NAME> or 'NAME.list = PATH' in the config file")
    parser.add_argument("--skip-missing", action="store_true",
                        help="run the datasets that have data and report the others as skipped (default: fail, "
                             "listing every missing root)")


def resolve_roots(names, cli_roots=None, cli_lists=None, skip_missing: bool = False, env=None,
                  **hint) -> dr.Resolved:
    """Roots of ``names`` (registered datasets); raises MissingRootError listing every one without data."""
    classes = {n: dataset_class(n) for n in names}
    return dr.resolve(list(names), {n: getattr(c, "needs_root", False) for n, c in classes.items()},
                      {n: getattr(c, "obtain", "") for n, c in classes.items()}, cli_roots, cli_lists, env,
                      skip_missing, {n: getattr(c, "needs_list", False) for n, c in classes.items()}, **hint)


def resolve_data(names, args) -> tuple[tuple[str, ...], dr.Resolved]:
    """(the names that will run, their roots) from parsed ``add_data_options`` arguments; prints the skipped ones."""
    resolved = resolve_roots(names, dr.parse_pairs(args.data_root, "--data-root"),
                             dr.parse_pairs(args.data_list, "--data-list"), args.skip_missing)
    for name, why in resolved.skipped.items():
        print(f"skipped {name}: {why}", file=sys.stderr)
    kept = tuple(n for n in names if n not in resolved.skipped)
    if not kept:
        raise FileNotFoundError("every requested dataset was skipped (no data); nothing to run")
    return kept, resolved


def build_with_root(name: str, resolved: Optional[dr.Resolved], **kwargs):
    """An adapter instance, given its root and list when it reads files."""
    cls = dataset_class(name)
    if getattr(cls, "needs_root", False) and "root" not in kwargs:
        if resolved is None or name not in resolved.roots:
            resolved = resolve_roots([name])  # environment / config file, or one clear error
        kwargs = {**resolved.kwargs(name), **kwargs}
    return cls(**kwargs)
