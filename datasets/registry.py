"""The dataset registry: ``@register("name")`` on an adapter class is the only place its name is written.

The lookup with close-match errors lives in ``harness.registry``; this module only collects entries so that
adapters never import the harness.
"""
from __future__ import annotations

DATASETS: dict[str, type] = {}


def register(name: str):
    """Class decorator adding an adapter under ``name`` (unique)."""

    def add(cls: type) -> type:
        if name in DATASETS:
            raise ValueError(f"dataset name {name!r} is registered twice ({DATASETS[name].__name__}, {cls.__name__})")
        cls.name = name
        DATASETS[name] = cls
        return cls

    return add
