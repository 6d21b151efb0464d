"""The evaluation face of every model trained here: load a checkpoint folder, run its sampler, return maps.

A registered method names its trainable process and where its shipped checkpoints live:
``methods/weights/<stem>_<task>`` for the default, ``methods/weights/ablation/<stem>_<task>_<variant>`` for a
variant named on the command line as ``name[variant]`` (``dpbridge_tiny[scratch]``). ``--checkpoint DIR``
overrides both.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from methods.backbones import WEIGHTS_DIR, recorded_path
from methods.base import Method, OutputContract, RunOptions
from methods.fingerprint import weights_fingerprint
from methods.latent import CONFIG_FILE, map_from_image, read_config, resolve_backbone_path

ABLATION_DIR = WEIGHTS_DIR / "ablation"


class TrainedMethod(Method):
    """Subclasses set ``trainable`` (the registered process) and ``checkpoint_stem``; ``spec_options`` lists the
    variants that ship a checkpoint (each with the tasks it covers)."""

    trainable: str = "?"
    checkpoint_stem: str = "?"
    loads_checkpoint = True
    ablation_base: dict = {}  # settings every ablation variant starts from (methods.ablation.variant_settings)
    regenerate_hint: str = "python -m harness train --method {name} --task {task}"

    def __init__(self, task, options: RunOptions):
        super().__init__(task, options)
        self.variant = options.extra.get("spec_option") or "default"
        self.checkpoint = Path(options.checkpoint or self.shipped_checkpoint(task, self.variant))
        if not (self.checkpoint / CONFIG_FILE).is_file():
            hint = self.regenerate_hint.format(name=self.name, task=task, variant=self.variant)
            raise FileNotFoundError(f"{self.name}: no trained checkpoint at {self.checkpoint} ({CONFIG_FILE} "
                                    f"missing). Regenerate it with `{hint}` or pass --checkpoint DIR.")
        cls, cfg = self.checked_config(self.checkpoint)  # from JSON only: a wrong checkpoint fails before loading
        if cfg.task != task:
            raise ValueError(f"checkpoint {self.checkpoint} was trained for {cfg.task}, not {task}")
        self.model = cls.from_folder(self.checkpoint, cfg).to(options.device)
        # of the checkpoint and of the backbone whose VAE it decodes with, read once, as loaded (methods.fingerprint)
        self.weights_fingerprint = (f"{weights_fingerprint(self.checkpoint)}+"
                                    f"{weights_fingerprint(resolve_backbone_path(cfg.backbone))}")
        self.use_steps(options.steps or cfg.default_steps)
        if options.ensemble_size < 0:
            raise ValueError(f"{self.name}: --ensemble must be >= 1 (0 = one prediction), got {options.ensemble_size}")
        # samples averaged per image (aggregation: mean of the decoded maps); a deterministic method has one
        self.ensemble_size = (options.ensemble_size or 1) if self.contract.stochastic else 1

    def use_steps(self, steps: int) -> None:
        self.model.check_steps(steps)
        self.steps = steps

    def checked_config(self, folder: Path) -> tuple[type, object]:
        """(model class, config) of a checkpoint of this method's process; subclasses check more."""
        cls, cfg = read_config(folder)
        if cls.trainable_name != self.trainable:
            raise ValueError(f"checkpoint {folder} is a {cls.trainable_name} checkpoint, not {self.trainable}")
        return cls, cfg

    @classmethod
    def shipped_checkpoint(cls, task: str, variant: str) -> Path:
        if variant == "default":
            return WEIGHTS_DIR / f"{cls.checkpoint_stem}_{task}"
        return ABLATION_DIR / f"{cls.checkpoint_stem}_{task}_{variant}"

    @property
    def contract(self) -> OutputContract:
        kind = "normals" if self.task == "normals" else "depth"
        return OutputContract(kind=kind, affine_invariant=kind == "depth", stochastic=True,
                              default_steps=self.model.cfg.default_steps, processing_res=self.model.cfg.processing_res,
                              size_multiple=self.model.latent_factor,
                              min_size=getattr(self.model, "size_multiple", self.model.latent_factor))

    def predict(self, rgb: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        device = torch.device(self.options.device)
        dtype = getattr(torch, self.options.dtype)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            image = self.model.predict_image(rgb.to(device), self.steps, self.options.eta, generators,
                                             ensemble=self.ensemble_size)
        return map_from_image(self.task, image)

    def describe(self) -> dict:
        return {"method": self.name, "variant": self.variant, "checkpoint": recorded_path(self.checkpoint),
                "weights_fingerprint": self.weights_fingerprint,
                "steps": self.steps, "eta": self.options.eta, "dtype": self.options.dtype,
                "ensemble_size": self.ensemble_size, "ensemble_aggregation": "mean of decoded maps",
                "method_config": asdict(self.model.cfg), "null_text": self.model.null_text_source}
