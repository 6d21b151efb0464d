"""Look-ups in the registries of methods, datasets, metrics and perturbations.

The registries themselves are plain dicts filled by decorators in ``methods`` and ``datasets`` (which never import
the harness); importing this module imports every entry module so that they register.
"""
from __future__ import annotations

import difflib
import importlib
from typing import Any, Mapping

from datasets.registry import DATASETS
from methods.registry import METHODS

# Entry modules: importing them registers their names. A new method or dataset file is added here once.
_ENTRY_MODULES = (
    "datasets.synthetic",
    "methods.trivial",
    "methods.dpbridge",
)


def load_entries() -> None:
    for module in _ENTRY_MODULES:
        importlib.import_module(module)


def lookup(kind: str, table: Mapping[str, Any], name: str) -> Any:
    """``table[name]`` or a KeyError listing the close matches and every known name."""
    load_entries()
    if name in table:
        return table[name]
    close = difflib.get_close_matches(name, list(table), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise KeyError(f"unknown {kind} {name!r}.{hint} Known: {', '.join(sorted(table))}. "
                   f"See `python -m harness ls {kind}s`.")


def method_class(name: str) -> type:
    return lookup("method", METHODS, name)


def dataset_class(name: str) -> type:
    return lookup("dataset", DATASETS, name)
