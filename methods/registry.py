"""The method registry: ``@register("name")`` on a method class is the only place its name is written.

Lookup with close-match errors lives in ``harness.registry``; this module only collects entries so that methods
never import the harness.
"""
from __future__ import annotations

METHODS: dict[str, type] = {}


def register(name: str):
    """Class decorator adding a method under ``name`` (unique); sets ``cls.name``."""

    def add(cls: type) -> type:
        if name in METHODS:
            raise ValueError(f"method name {name!r} is registered twice ({METHODS[name].__name__}, {cls.__name__})")
        cls.name = name
        METHODS[name] = cls
        return cls

    return add
