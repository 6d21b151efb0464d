"""The method registry: ``@register("name")`` on a method class is the only place its name is written.

Lookup with close-match errors lives in ``harness.registry``; this module only collects entries so that methods
never import the harness.
"""
from __future__ import annotations

METHODS: dict[str, type] = {}


def registrar(table: dict, kind: str, attribute: str = "name"):
    """A class decorator factory adding entries to ``table`` under unique names (set as ``cls.<attribute>``)."""

    def register(name: str):
        def add(cls: type) -> type:
            if name in table:
                raise ValueError(f"{kind} name {name!r} is registered twice ({table[name].__name__}, {cls.__name__})")
            setattr(cls, attribute, name)
            table[name] = cls
            return cls

        return add

    return register


register = registrar(METHODS, "method")  # @register("name") on a Method subclass
