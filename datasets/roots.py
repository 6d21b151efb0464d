"""Where each dataset's files live, and which sample list to use.

A dataset's root (a folder or an uncompressed ``.tar``, see :mod:`datasets.sources`) is taken from, first match wins:

1. the command line: ``--data-root NAME=PATH`` (repeatable);
2. the environment: ``HARNESS_DATA_<NAME>`` (name upper-cased, e.g. ``HARNESS_DATA_NYUV2``, ``HARNESS_DATA_KITTI``);
3. the user config file: ``$HARNESS_DATA_CONFIG``, else ``$XDG_CONFIG_HOME/dpbridge-harness/data.conf``
   (``~/.config/dpbridge-harness/data.conf``): one ``NAME = PATH`` per line, ``#`` starts a comment.

A user-supplied sample list (benchmarks that ship none, e.g. KITTI's Eigen split) is found the same way:
``--data-list NAME=PATH``, ``HARNESS_LIST_<NAME>``, or ``NAME.list = PATH`` in the config file.

:func:`resolve` checks every requested dataset at once: one error lists each missing root, how to provide it and
where to obtain the data; with ``skip_missing`` the others are returned and the missing ones reported as skipped.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

ROOT_ENV_PREFIX = "HARNESS_DATA_"
LIST_ENV_PREFIX = "HARNESS_LIST_"
CONFIG_ENV = "HARNESS_DATA_CONFIG"


class MissingRootError(FileNotFoundError):
    """One or more datasets have no usable root; the message lists each with the fix."""


def env_name(prefix: str, dataset: str) -> str:
    return prefix + re.sub(r"[^A-Za-z0-9]", "_", dataset).upper()


def config_path(env: Mapping[str, str] = os.environ) -> Path:
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]).expanduser()
    base = Path(env["XDG_CONFIG_HOME"]).expanduser() if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "dpbridge-harness" / "data.conf"


def read_config(path: Path) -> dict[str, str]:
    """``NAME = PATH`` / ``NAME.list = PATH`` lines -> dict; a malformed line is an error naming its number."""
    if not path.is_file():
        return {}
    out = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        key, sep, value = text.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{path}:{number}: expected 'NAME = PATH' or 'NAME.list = PATH', got {line.strip()!r}")
        out[key.strip()] = value.strip()
    return out


def parse_pairs(pairs, option: str) -> dict[str, str]:
    """``["nyuv2=/data/nyu", ...]`` -> dict; an entry without ``=`` is an error naming the option."""
    out = {}
    for pair in pairs or []:
        name, sep, path = pair.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ValueError(f"{option} expects NAME=PATH, got {pair!r}")
        out[name.strip()] = path.strip()
    return out


@dataclass
class Resolved:
    """Roots and lists found for the requested datasets, and the ones skipped (name -> why)."""

    roots: dict[str, str] = field(default_factory=dict)
    lists: dict[str, str] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)  # name -> "command line" | "HARNESS_DATA_X" | config
    skipped: dict[str, str] = field(default_factory=dict)

    def kwargs(self, name: str) -> dict:
        """Constructor arguments of an adapter: ``root`` and ``list_path`` where given."""
        out = {}
        if name in self.roots:
            out["root"] = self.roots[name]
        if name in self.lists:
            out["list_path"] = self.lists[name]
        return out


def _lookup(name: str, cli: Mapping[str, str], env: Mapping[str, str], config: Mapping[str, str],
            env_prefix: str, config_key: str, cfg_file: Path) -> tuple[Optional[str], str]:
    if name in cli:
        return cli[name], "command line"
    var = env_name(env_prefix, name)
    if env.get(var):
        return env[var], var
    if config.get(config_key):
        return config[config_key], str(cfg_file)
    return None, ""


def how_to_provide(name: str, cfg_file: Path) -> str:
    return (f"--data-root {name}=PATH, or {env_name(ROOT_ENV_PREFIX, name)}=PATH, or the line "
            f"'{name} = PATH' in {cfg_file}")


def resolve(names, needs_root: Mapping[str, bool], obtain: Mapping[str, str], cli_roots: Mapping[str, str] = None,
            cli_lists: Mapping[str, str] = None, env: Mapping[str, str] = None, skip_missing: bool = False,
            needs_list: Mapping[str, bool] = None,
            skip_hint: str = "pass --skip-missing to run the others") -> Resolved:
    """Roots (and user lists) of ``names``; raises one MissingRootError listing every dataset without its data.

    needs_root: name -> whether the adapter reads files (the tiny world does not); obtain: name -> where to get it;
    needs_list: name -> whether the benchmark needs a user-supplied list (KITTI). A root or list that is given but
    does not exist counts as missing (its origin is named). skip_hint: what the error suggests besides the roots.
    """
    env = os.environ if env is None else env
    cli_roots, cli_lists = dict(cli_roots or {}), dict(cli_lists or {})
    unknown = sorted((set(cli_roots) | set(cli_lists)) - set(names))
    if unknown:
        raise ValueError(f"--data-root/--data-list name(s) {', '.join(unknown)} are not among the datasets of this "
                         f"run ({', '.join(names)})")
    cfg_file = config_path(env)
    config = read_config(cfg_file)
    out, problems = Resolved(), []
    for name in names:
        if not needs_root.get(name, False):
            continue
        listed, list_origin = _lookup(name, cli_lists, env, config, LIST_ENV_PREFIX, f"{name}.list", cfg_file)
        root, origin = _lookup(name, cli_roots, env, config, ROOT_ENV_PREFIX, name, cfg_file)
        reasons = []
        if root is None:
            reasons.append(f"no root given; provide it with {how_to_provide(name, cfg_file)}")
        elif not Path(root).expanduser().exists():
            reasons.append(f"root {root} (from {origin}) does not exist; fix it, or give another with "
                           f"{how_to_provide(name, cfg_file)}")
        list_hint = (f"--data-list {name}=PATH, or {env_name(LIST_ENV_PREFIX, name)}=PATH, or the line "
                     f"'{name}.list = PATH' in {cfg_file}")
        if listed is not None and not Path(listed).expanduser().is_file():
            reasons.append(f"sample list {listed} (from {list_origin}) does not exist; fix it, or give another "
                           f"with {list_hint}")
        elif listed is None and (needs_list or {}).get(name, False):
            reasons.append(f"no sample list given (the benchmark ships none); provide it with {list_hint}")
        if not reasons:
            out.roots[name], out.origins[name] = str(Path(root).expanduser()), origin
            if listed is not None:
                out.lists[name] = str(Path(listed).expanduser())
            continue
        reason = "; ".join(reasons)
        problems.append((name, f"{reason}. Obtain it: {obtain.get(name, 'see the README, section Datasets')}"))
    if problems and not skip_missing:
        lines = "\n".join(f"  {name}: {reason}" for name, reason in problems)
        raise MissingRootError(f"{len(problems)} dataset(s) have no data ({skip_hint}):\n"
                               f"{lines}")
    out.skipped = dict(problems)
    return out
