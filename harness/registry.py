"""Look-ups in the registries of methods, datasets, metrics and perturbations.

The registries themselves are plain dicts filled by decorators in ``methods`` and ``datasets`` (which never import
the harness); importing this module imports every entry module so that they register.

A method is named as ``name``, ``name:argument`` or ``name[option]:argument`` (e.g. ``predictions:DIR``,
``predictions[disparity]:DIR``; the argument runs from the first ':' to the end and may contain ':').
"""
from __future__ import annotations

import difflib
import hashlib
import importlib
import re
from dataclasses import dataclass, replace
from typing import Any, Mapping, Optional

from datasets.registry import DATASETS
from methods.inference import apply_inference_options
from methods.registry import METHODS

# Entry modules: importing them registers their names. A new method or dataset file is added here once.
_ENTRY_MODULES = (
    "datasets.synthetic",
    "datasets.folder",
    "datasets.nyuv2",
    "datasets.kitti",
    "datasets.eth3d",
    "datasets.scannet",
    "datasets.diode",
    "datasets.ibims",
    "datasets.sintel",
    "datasets.nyuv2_normals",
    "datasets.scannet_normals",
    "datasets.ibims_normals",
    "datasets.sintel_normals",
    "datasets.hypersim",
    "datasets.vkitti",
    "methods.trivial",
    "methods.dpbridge",
    "methods.dpbridge_sd",
    "methods.marigold",
    "methods.i2sb",
    "methods.bbdm",
    "methods.marigold_tiny",
    "methods.regressor_tiny",
    "methods.saved",
    "harness.perturb",
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


@dataclass(frozen=True)
class MethodSpec:
    """One entry of ``--methods``: ``name[option]:argument`` with the option and the argument optional."""

    text: str
    name: str
    option: Optional[str] = None
    argument: Optional[str] = None

    @property
    def cell(self) -> str:
        """Filesystem-safe name of this method's cells in a run folder (``<cell>__<dataset>``): the name alone, or
        ``name-<8 hex of sha256(text)>`` when an option or argument (a folder path) is given."""
        if self.option is None and self.argument is None:
            return self.name
        return f"{self.name}-{hashlib.sha256(self.text.encode()).hexdigest()[:8]}"


_SPEC = re.compile(r"([^\[\]:]+)(?:\[([^\[\]:]*)\])?(?::(.*))?", re.S)


def parse_method_spec(text: str) -> MethodSpec:
    m = _SPEC.fullmatch(text)
    if m is None:
        raise ValueError(f"cannot read method {text!r}: expected NAME, NAME:ARGUMENT or NAME[OPTION]:ARGUMENT "
                         f"(e.g. predictions[disparity]:/path/to/preds)")
    return MethodSpec(text, m.group(1), m.group(2), m.group(3))


def method_class(text: str) -> type:
    """The class of a method spec (``ramp``, ``predictions:DIR``); raises when its option or argument does not fit."""
    spec = parse_method_spec(text)
    cls = lookup("method", METHODS, spec.name)
    if spec.option is not None and spec.option not in cls.spec_options:
        known = ", ".join(cls.spec_options) or "none"
        raise ValueError(f"method {spec.name!r} has no option [{spec.option}]; options: {known}")
    if spec.argument is not None and cls.spec_argument is None:
        raise ValueError(f"method {spec.name!r} takes no argument; got {text!r}")
    if spec.argument is None and cls.spec_argument is not None:
        raise ValueError(f"method {spec.name!r} needs its {cls.spec_argument}: write {spec.name}:"
                         f"<{cls.spec_argument}>")
    return cls


def method_tasks(text: str) -> tuple:
    """The tasks a method spec serves: the class' tasks, narrowed by its option (``predictions[disparity]``: depth)."""
    spec, cls = parse_method_spec(text), method_class(text)
    if spec.option is None:
        return tuple(cls.tasks)
    return tuple(t for t in cls.tasks if t in cls.spec_options[spec.option])


def build_method(text: str, task: str, options):
    """An instance of a method spec for ``task``, its option and argument passed in ``options.extra``."""
    spec, cls = parse_method_spec(text), method_class(text)
    if spec.option is not None or spec.argument is not None:
        options = replace(options, extra={**options.extra, "spec_option": spec.option,
                                          "spec_argument": spec.argument})
    method = cls(task, options)
    apply_inference_options(method, options)  # channels-last / torch.compile where the method has a network
    return method


def dataset_class(name: str):
    """The class of a dataset spec: ``synthetic``, or for an adapter that takes an argument ``folder:DIR`` /
    ``folder[normals]:DIR`` (same syntax as methods) a :class:`BoundDataset` that passes them to the constructor."""
    spec = parse_method_spec(name)
    cls = lookup("dataset", DATASETS, spec.name)
    argument, options = getattr(cls, "spec_argument", None), tuple(getattr(cls, "spec_options", ()))
    if spec.option is not None and spec.option not in options:
        known = ", ".join(options) or "none"
        raise ValueError(f"dataset {spec.name!r} has no option [{spec.option}]; options: {known}")
    if spec.argument is not None and argument is None:
        raise ValueError(f"dataset {spec.name!r} takes no argument; got {name!r}")
    if spec.argument is None and argument is not None:
        raise ValueError(f"dataset {spec.name!r} needs its {argument}: write {spec.name}:<{argument}>")
    return cls if argument is None else BoundDataset(cls, spec)


class BoundDataset:
    """A dataset class with its spec's argument (and option) bound: calling it builds the adapter with
    ``<cls.spec_argument>=argument`` (and ``task=option``) and names the instance ``spec.cell``
    (``folder-<8 hex>``), so two folders never share a run cell. Other attributes are the class'."""

    def __init__(self, cls: type, spec: MethodSpec):
        self.cls, self.spec = cls, spec

    def __getattr__(self, key):
        return getattr(self.cls, key)

    def __call__(self, **kwargs):
        bound = {self.cls.spec_argument: self.spec.argument}
        if self.spec.option is not None:
            bound["task"] = self.spec.option
        dataset = self.cls(**{**kwargs, **bound})
        dataset.name = self.spec.cell
        return dataset
