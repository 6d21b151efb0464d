"""Robustness perturbations (Table 4, math.md section 6): registered, seeded, pure functions on the RGB input.

A perturbation is a registered noise function ``(x, level, rng) -> noisy x`` on float64 images [H,W,3] in [0, 1];
``perturb`` converts the input (uint8 [H,W,3] or float in [0, 1]) to that scale, adds the noise, clips to [0, 1]
and returns the input's dtype (uint8 rounded). The default levels are data in each registration (math.md section
6; the paper's own levels are lost) and can be replaced per run (``Condition`` lists, ``--levels``).

Seeding: the noise of one sample comes from ``noise_seed(seed, name, sample_id)`` (harness.manifest.stable_seed):
the same sample and run seed always get the same noise, whatever its batch, order or process. The seed does not
depend on the level (common random numbers): Gaussian noise at sigma 0.08 is exactly twice that at 0.04, and the
5% salt-and-pepper pixels are a subset of the 10% ones, so differences between levels are not sampling noise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Optional

import numpy as np

from datasets.base import Sample
from harness.manifest import stable_seed

NoiseFn = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]

GAUSSIAN_SIGMAS = (0.04, 0.08, 0.12, 0.18)  # math.md section 6, on the [0, 1] intensity scale


@dataclass(frozen=True)
class Perturbation:
    """One registered noise: what a level means, its default levels and the levels it accepts."""

    name: str
    parameter: str  # what a level is: "sigma", "c", "lam", "p"
    levels: tuple[float, ...]  # default levels (math.md section 6)
    low: float  # accepted levels: low < level <= high
    high: float
    noise: NoiseFn
    doc: str

    def check(self, level: float) -> float:
        level = float(level)
        if not (math.isfinite(level) and self.low < level <= self.high):
            raise ValueError(f"level {level!r} is not valid for noise {self.name!r}: its {self.parameter} must lie "
                             f"in ({self.low:g}, {self.high:g}] (defaults: {', '.join(f'{v:g}' for v in self.levels)})")
        return level


PERTURBATIONS: dict[str, Perturbation] = {}


def register(name: str, parameter: str, levels: Iterable[float], low: float, high: float):
    """Function decorator adding a noise under ``name`` (unique), with its parameter, default levels and range."""

    def add(fn: NoiseFn) -> NoiseFn:
        if name in PERTURBATIONS:
            raise ValueError(f"perturbation name {name!r} is registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()[0]
        entry = Perturbation(name, parameter, tuple(float(v) for v in levels), low, high, fn, doc)
        for level in entry.levels:
            entry.check(level)
        PERTURBATIONS[name] = entry
        return fn

    return add


@register("gaussian", "sigma", GAUSSIAN_SIGMAS, 0.0, 1.0)
def gaussian(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise N(0, sigma^2) per pixel and channel."""
    return x + sigma * rng.standard_normal(x.shape)


@register("uniform", "c", tuple(math.sqrt(3.0) * s for s in GAUSSIAN_SIGMAS), 0.0, 1.0)
def uniform(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    """Additive uniform noise U(-c, c) per pixel and channel (c = sqrt(3) sigma: the Gaussian levels' std)."""
    return x + c * (2.0 * rng.random(x.shape) - 1.0)


POISSON_MAX_LAM = 1e9  # numpy's Poisson sampler refuses rates near 1e19; at 1e9 the noise is below 1e-4 of a grey level


@register("poisson", "lam", (60.0, 25.0), 0.0, POISSON_MAX_LAM)
def poisson(x: np.ndarray, lam: float, rng: np.random.Generator) -> np.ndarray:
    """Shot noise Poisson(x lam) / lam per pixel and channel (smaller lam = noisier)."""
    return rng.poisson(x * lam) / lam


@register("salt_pepper", "p", (0.05, 0.10), 0.0, 1.0)
def salt_pepper(x: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """Salt and pepper: a fraction p of the pixels (all channels), half set to black, half to white."""
    u = rng.random(x.shape[:2])[..., None]  # [H,W,1]
    return np.where(u < p / 2, 0.0, np.where(u < p, 1.0, x))


def perturbation(name: str) -> Perturbation:
    """The registered perturbation ``name`` or a KeyError listing the close matches."""
    from harness.registry import lookup

    return lookup("perturbation", PERTURBATIONS, name)


def noise_seed(seed: int, name: str, sample_id: str) -> int:
    """The seed of one sample's noise (independent of the level: common random numbers across levels)."""
    return stable_seed(f"perturb:{seed}:{name}:{sample_id}")


def perturb(rgb: np.ndarray, name: str, level: float, seed: int) -> np.ndarray:
    """rgb uint8 [H,W,3] (or float in [0, 1]) -> the same with noise ``name`` at ``level``, clipped to [0, 1]."""
    entry = perturbation(name)
    level = entry.check(level)
    if rgb.dtype == np.uint8:
        x = rgb.astype(np.float64) / 255.0
    elif np.issubdtype(rgb.dtype, np.floating):
        x = rgb.astype(np.float64)
        if x.size and not (x.min() >= 0.0 and x.max() <= 1.0):  # NaN fails too
            raise ValueError(f"perturb takes float RGB in [0, 1], got values in [{x.min():g}, {x.max():g}] (a 0..255 "
                             f"image would be clipped to white): divide by 255 or pass uint8")
    else:
        raise ValueError(f"perturb takes uint8 or float RGB, got {rgb.dtype}")
    y = np.clip(entry.noise(x, level, np.random.default_rng(seed)), 0.0, 1.0)
    if rgb.dtype == np.uint8:
        return np.round(y * 255.0).astype(np.uint8)
    return y.astype(rgb.dtype)


@dataclass(frozen=True)
class Condition:
    """One (noise, level) cell of a robustness study."""

    name: str
    level: float

    @property
    def label(self) -> str:
        """Filesystem-safe key of this condition's cached predictions, e.g. ``gaussian-0.04``."""
        return f"{self.name}-{self.level:.6g}"

    @property
    def table_label(self) -> str:
        """How Table 4 prints the level, e.g. ``sigma=0.04`` (4 significant digits)."""
        return f"{perturbation(self.name).parameter}={self.level:.4g}"

    def apply(self, rgb: np.ndarray, sample_id: str, seed: int) -> np.ndarray:
        return perturb(rgb, self.name, self.level, noise_seed(seed, self.name, sample_id))

    def apply_sample(self, sample: Sample, seed: int) -> Sample:
        """The sample with its RGB perturbed (GT untouched), at the dataset's native resolution."""
        return replace(sample, rgb=self.apply(sample.rgb, sample.id, seed))

    def describe(self) -> dict:
        entry = perturbation(self.name)
        return {"noise": self.name, "level": self.level, "parameter": entry.parameter, "doc": entry.doc}


def conditions(noise: Iterable[str], levels: Optional[dict[str, Iterable[float]]] = None) -> list[Condition]:
    """The (noise, level) cells for ``noise`` names (or ``all``), each at its default levels unless ``levels``
    gives others; unknown names and invalid levels raise before anything runs."""
    names = list(noise)
    if names == ["all"]:
        from harness.registry import load_entries

        load_entries()
        names = list(PERTURBATIONS)  # registration order: math.md section 6
    if not names:
        raise ValueError("no noise given: name one or more of " + ", ".join(sorted(PERTURBATIONS)) + ", or all")
    levels = dict(levels or {})
    extra = sorted(set(levels) - set(names))
    if extra:
        raise ValueError(f"--levels names noise {', '.join(extra)} not selected by --noise ({', '.join(names)})")
    out = []
    for name in dict.fromkeys(names):
        entry = perturbation(name)
        chosen = [entry.check(v) for v in levels.get(name, entry.levels)]
        if not chosen:
            raise ValueError(f"no levels given for noise {name!r}")
        out += [Condition(name, v) for v in dict.fromkeys(chosen)]
    for kind, digits in (("label", 6), ("table_label", 4)):  # the cache folders' names, then Table 4's rows
        labels = [getattr(c, kind) for c in out]
        if len(set(labels)) < len(labels):
            raise ValueError(f"levels too close to tell apart at {digits} significant digits: {labels}")
    return out
