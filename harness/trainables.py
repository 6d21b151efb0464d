"""Configs of trainable methods from command-line style settings (shared by `train` and `ablate --train`)."""
from __future__ import annotations

from typing import Literal, Union, get_args, get_origin, get_type_hints


def typed_settings(pairs: list[str], cls) -> dict:
    """``key=value`` pairs (``--set``, ``--method-set``) typed by the config dataclass' field types; a Literal field
    accepts only its choices and a bool only true/false/1/0/yes/no, so a typo fails instead of becoming a value."""
    hints = get_type_hints(cls)
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if key not in hints or not sep:
            raise ValueError(f"cannot apply {pair!r} to {cls.__name__}: expected KEY=VALUE with KEY one of "
                             f"{', '.join(sorted(hints))}")
        out[key] = _typed(key, value, hints[key])
    return out


def _typed(key: str, value: str, hint):
    kind = hint
    if get_origin(hint) is Union:  # Optional[X]
        kind = next(a for a in get_args(hint) if a is not type(None))
    if get_origin(kind) is Literal:
        choices = [str(c) for c in get_args(kind)]
        if value not in choices:
            raise ValueError(f"{key} must be one of {', '.join(choices)}; got {value!r}")
        return value
    if kind is bool:
        truth = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
        if value.lower() not in truth:
            raise ValueError(f"{key} is true or false; got {value!r}")
        return truth[value.lower()]
    if kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            raise ValueError(f"{key} must be a{'n int' if kind is int else ' float'}; got {value!r}") from None
    return value


def trained_method_config(method: str, task: str, variant: str | None, pairs: list[str],
                          backbone: str | None = None):
    """(config, export folder or None) of a trainable method: its config class, a real-backbone method's settings
    (``--backbone``, checked), the ablation variant's overlay (``--variant``), then ``--method-set`` pairs."""
    from harness.registry import lookup
    from methods.ablation import variant_settings
    from methods.latent import TRAINABLE
    from methods.registry import METHODS

    cls = lookup("method", METHODS, method)
    if getattr(cls, "trainable", None) not in TRAINABLE:
        trainable = sorted(n for n, c in METHODS.items() if getattr(c, "trainable", None) in TRAINABLE)
        raise ValueError(f"`train` trains {', '.join(trainable)} and train_mean; {method!r} is not trainable here")
    config_cls = TRAINABLE[cls.trainable].config_cls
    settings, export = {}, cls.shipped_checkpoint(task, "default")  # where `run` looks for it
    if hasattr(cls, "method_settings"):  # dpbridge_sd15 / dpbridge_sd21: backbone folder (checked) and defaults
        settings, export = cls.method_settings(backbone), cls.shipped_checkpoint(task, "default")
    elif backbone:
        raise ValueError(f"--backbone applies to methods on Stable Diffusion weights (dpbridge_sd15, dpbridge_sd21), "
                         f"not {method}")
    if variant:
        if variant not in cls.spec_options:
            raise ValueError(f"{method} has no variant {variant!r}; variants: {', '.join(cls.spec_options) or 'none'}")
        settings.update(variant_settings(variant, cls.ablation_base))
        export = cls.shipped_checkpoint(task, variant)
    settings.update(typed_settings(pairs, config_cls))
    return config_cls(task=task, **settings), export
