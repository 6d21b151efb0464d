"""Training on real datasets: micro-batches read from training adapters and encoded to latents on the fly, and the
named training recipes (presets) a method trains with by default.

    source = dataset_batches("hypersim,vkitti", "", "depth", model)   # adapters found via datasets.roots
    x_T, x_0, target, valid, t, noise = source.draw(batch, gen, model.draw_times, device)

Each micro-batch comes from one dataset, picked with the mix probabilities (Marigold's 0.9 HyperSim / 0.1 Virtual
KITTI in the paper preset [choice: DPBridge does not state its mix]); samples, crops and flips are drawn from
``gen``, so a resumed run draws the same batches. Samples of one batch are random-cropped to their common size,
rounded down to the model's size multiple (VAE x UNet downsampling); nothing is resized.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch

from harness.dataroots import build_with_root
from methods.targets import flip_horizontal, rgb_to_tensor, target_image

# Named recipes: TrainConfig settings a method's `train_preset` selects before any --set (recorded as `preset`).
# "paper": Section 5.2 / math.md section 5: 30K iterations, Adam, batch 2 x 8 accumulation (effective 16), 100-step
# warm-up then exponential decay; lr 3e-5 [choice: lost from the text, Marigold's value for the same backbone];
# decay to 1% at the end [choice: Marigold's]; trained on HyperSim + Virtual KITTI, mixed 0.9/0.1 [choice: Marigold's].
# `--set datasets=` (empty) trains on the tiny-world pool instead.
TRAIN_PRESETS = {
    "paper": {"iterations": 30000, "batch": 2, "grad_accum": 8, "lr": 3e-5, "warmup": 100, "lr_final_ratio": 0.01,
              "checkpoint_every": 500, "log_every": 50, "datasets": "hypersim,vkitti",
              "dataset_mix": "hypersim=0.9,vkitti=0.1"},
}


def preset_settings(name: Optional[str]) -> dict:
    """TrainConfig settings of preset ``name`` (with ``preset`` itself recorded); {} for None."""
    if name is None:
        return {}
    if name not in TRAIN_PRESETS:
        raise ValueError(f"unknown training preset {name!r}; known: {', '.join(sorted(TRAIN_PRESETS))}")
    return {"preset": name, **TRAIN_PRESETS[name]}


def parse_mix(text: str, names: list[str]) -> dict[str, float]:
    """``"a=0.9,b=0.1"`` -> probabilities over ``names`` (renormalised); "" = equal. Names outside the mix are an
    error; mix entries for datasets not trained on are dropped."""
    if not text:
        return {n: 1.0 / len(names) for n in names}
    weights = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"dataset_mix entry {part!r}: expected NAME=WEIGHT (e.g. hypersim=0.9,vkitti=0.1)")
        weights[key.strip()] = float(value)
    absent = [n for n in names if n not in weights]
    if absent:
        raise ValueError(f"dataset_mix {text!r} gives no weight to {', '.join(absent)}; add NAME=WEIGHT for each "
                         f"training dataset (--set dataset_mix=...)")
    total = sum(weights[n] for n in names)
    if total <= 0 or any(weights[n] < 0 for n in names):
        raise ValueError(f"dataset_mix {text!r}: weights must be >= 0 with a positive sum")
    return {n: weights[n] / total for n in names}


class DatasetBatches:
    """Random micro-batches of (image latent, map latent, target image, valid mask) from training adapters."""

    def __init__(self, datasets: dict, mix: dict[str, float], task: str, model):
        self.datasets, self.task, self.model = datasets, task, model
        self.names = list(datasets)
        self.probs = torch.tensor([mix[n] for n in self.names], dtype=torch.float64)
        self.ids = {n: list(ds.ids()) for n, ds in datasets.items()}
        for name, ids in self.ids.items():
            if not ids:
                raise ValueError(f"training dataset {name} has no samples; check its root (README, Datasets)")
            self._sample(name, ids[0])  # fail now, not at iteration 1000, when it lacks this task's ground truth

    def _sample(self, name: str, sample_id: str):
        sample = self.datasets[name].load(sample_id)
        gt = sample.depth if self.task == "depth" else sample.normals
        if gt is None:
            raise ValueError(f"training dataset {name}, sample {sample_id}: no {self.task} ground truth; train "
                             f"{self.task} on datasets that have it")
        return sample

    def draw(self, batch: int, gen: torch.Generator, draw_times: Callable, device, rows: slice = slice(None)) -> tuple:
        """Rows ``rows`` of one random batch of ``batch``: x_T, x_0 [b,4,h,w] latents; target [b,3,H,W] in [-1,1];
        valid bool [b,1,H,W]; t int64 [b]; noise [b,4,h,w]. Every random choice of the whole batch comes from
        ``gen`` (so each process of a data-parallel run, drawing the global batch, gets its own rows of the same
        batch), but only the rows asked for are made into targets and encoded."""
        name = self.names[int(torch.multinomial(self.probs, 1, generator=gen))]
        ids = self.ids[name]
        picks = torch.randint(0, len(ids), (batch,), generator=gen).tolist()
        samples = [self._sample(name, ids[i]) for i in picks]
        rgb, target, valid = self._crop_stack(samples, gen, rows)
        flip = (torch.rand(batch, generator=gen) < 0.5)[rows].view(-1, 1, 1, 1)  # the normal's x flips too
        rgb = torch.where(flip, flip_horizontal(rgb), rgb)
        target = torch.where(flip, flip_horizontal(target, self.task), target)
        valid = torch.where(flip, valid.flip(-1), valid)
        with torch.no_grad():
            x_T = self.model.encode(rgb.to(device))
            x_0 = self.model.encode(target.to(device))
        t = draw_times(batch, gen)[rows]
        noise = torch.randn((batch, *x_0.shape[1:]), generator=gen)[rows].to(device)
        return x_T, x_0, target.to(device), valid.to(device), t.to(device), noise

    def _crop_stack(self, samples: list, gen: torch.Generator, rows: slice = slice(None)):
        """Random crops of ``samples[rows]`` to the whole batch's common size (a multiple of the model's; a crop is
        drawn for every sample, so the draws do not depend on ``rows``); rgb, target [b,3,H,W], valid [b,1,H,W]."""
        m = self.model.size_multiple
        h = min(s.rgb.shape[0] for s in samples) // m * m
        w = min(s.rgb.shape[1] for s in samples) // m * m
        if h == 0 or w == 0:
            small = min(samples, key=lambda s: min(s.rgb.shape[:2]))
            raise ValueError(f"training sample {small.id} is {small.rgb.shape[1]}x{small.rgb.shape[0]} px, smaller "
                             f"than the model's {m} px size multiple")
        rgb, depth, normals, valid = [], [], [], []
        crops = []
        for s in samples:
            y = int(torch.randint(0, s.rgb.shape[0] - h + 1, (1,), generator=gen))
            x = int(torch.randint(0, s.rgb.shape[1] - w + 1, (1,), generator=gen))
            crops.append((slice(y, y + h), slice(x, x + w)))
        samples, crops = samples[rows], crops[rows]
        for s, crop in zip(samples, crops):
            rgb.append(s.rgb[crop])
            valid.append(s.valid[crop])
            depth.append(s.depth[crop] if self.task == "depth" else None)
            normals.append(s.normals[crop] if self.task == "normals" else None)
        valid_t = torch.from_numpy(np.stack(valid))
        stacked = {k: torch.from_numpy(np.stack(v).astype(np.float32)) if v[0] is not None else None
                   for k, v in (("depth", depth), ("normals", normals))}
        try:
            target = target_image(self.task, stacked["depth"], stacked["normals"], valid_t)
        except ValueError as err:
            raise ValueError(f"training batch of samples {[s.id for s in samples]}: {err}") from err
        return rgb_to_tensor(torch.from_numpy(np.stack(rgb))), target, valid_t.unsqueeze(1)

    def describe(self) -> dict:
        return {name: {"samples": len(self.ids[name]), "probability": round(float(p), 4)}
                for name, p in zip(self.names, self.probs)}


def dataset_batches(names: str, mix: str, task: str, model, data_roots: Optional[dict] = None) -> DatasetBatches:
    """DatasetBatches over the comma-separated registered training adapters ``names`` (roots from ``data_roots``
    (`train --data-root NAME=PATH`) / HARNESS_DATA_<NAME> / the config file, as for evaluation)."""
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if not wanted:
        raise ValueError("no training datasets named (e.g. --datasets hypersim,vkitti)")
    from datasets.training import TrainingSet
    from harness.registry import dataset_class

    benchmarks = [n for n in wanted if not issubclass(dataset_class(n), TrainingSet)]
    if benchmarks:  # iBims-1, Sintel and folders are left out of `--datasets all` but are test data all the same
        raise ValueError(f"--datasets {', '.join(benchmarks)}: evaluation datasets (their samples are test samples) "
                         f"cannot be trained on; name training adapters (e.g. hypersim,vkitti), or leave --datasets "
                         f"out to train on the tiny world's train split")
    from harness.dataroots import resolve_roots

    roots = resolve_roots(wanted, data_roots, skip_hint="training needs every dataset it names; "
                          "leave one out of --datasets to train on the others")
    datasets = {n: build_with_root(n, roots) for n in wanted}
    return DatasetBatches(datasets, parse_mix(mix, wanted), task, model)


def method_train_settings(method: str, datasets: Optional[str]) -> dict:
    """TrainConfig settings `train --method NAME [--datasets ...]` starts from: the method's preset (e.g.
    dpbridge_sd21 -> "paper"), then the datasets; --set pairs override both."""
    from harness.registry import lookup
    from methods.registry import METHODS

    settings = preset_settings(getattr(lookup("method", METHODS, method), "train_preset", None))
    if datasets:
        settings["datasets"] = datasets
    return settings
