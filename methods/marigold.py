"""``marigold``: real Marigold checkpoints through diffusers' own pipelines (MarigoldDepthPipeline,
MarigoldNormalsPipeline), from a local folder, offline.

The folder, first match wins: ``--checkpoint DIR``; ``HARNESS_MARIGOLD_DEPTH`` / ``HARNESS_MARIGOLD_NORMALS``; the
local Hugging Face cache (prs-eth's repos, ``local_files_only``). Its ``model_index.json`` must name the pipeline of
the task, checked before any weight is read. Steps, ensemble size and the processing resolution come from the run
(``--steps``, ``--ensemble``, ``--processing-res``), else from the checkpoint's own defaults; all are recorded.
The evaluator resizes the RGB to the processing resolution, so the pipeline runs at its input size
(``processing_resolution=0``) and is called once per image, each with generators derived from that image's seed.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch

from methods.base import Method, OutputContract, RunOptions
from methods.fingerprint import weights_fingerprint
from methods.registry import register
from methods.sd_backbone import read_json

PIPELINES = {"depth": "MarigoldDepthPipeline", "normals": "MarigoldNormalsPipeline"}
OLD_NAMES = {"depth": ("MarigoldPipeline",), "normals": ()}  # model_index names of early depth uploads
ENV = {"depth": "HARNESS_MARIGOLD_DEPTH", "normals": "HARNESS_MARIGOLD_NORMALS"}
REPOS = {"depth": ("prs-eth/marigold-depth-v1-1", "prs-eth/marigold-depth-v1-0"),
         "normals": ("prs-eth/marigold-normals-v1-1", "prs-eth/marigold-normals-v0-1")}
NEEDED = ("model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
          "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json", "text_encoder/model.safetensors",
          "tokenizer/vocab.json", "tokenizer/merges.txt", "scheduler/scheduler_config.json")
FALLBACK_STEPS = 10  # when neither the run nor the checkpoint names a step count [choice: Marigold v1's 10]
FALLBACK_PROCESSING_RES = 768  # Marigold's default when the checkpoint names none


def fetch_hint(task: str) -> str:
    return (f"huggingface-cli download {REPOS[task][0]} --include '*.json' '*.txt' "
            f"'*/diffusion_pytorch_model.safetensors' 'text_encoder/model.safetensors' "
            f"--local-dir /path/to/marigold-{task}, then pass --checkpoint "
            f"/path/to/marigold-{task} or set {ENV[task]}=/path/to/marigold-{task}")


# a needed file's accepted stand-in (older .bin weights; a tokenizer saved as one tokenizer.json)
ALTERNATIVES = {"model.safetensors": "pytorch_model.bin", "diffusion_pytorch_model.safetensors":
                "diffusion_pytorch_model.bin", "vocab.json": "tokenizer.json", "merges.txt": "tokenizer.json"}


def missing(folder: Path) -> list[str]:
    out = []
    for rel in NEEDED:
        path = folder / rel
        if not path.is_file() and not path.with_name(ALTERNATIVES.get(path.name, path.name)).is_file():
            out.append(rel)
    return out


def find_marigold(task: str, explicit: Optional[str], env=os.environ) -> Path:
    """The Marigold folder for ``task``, checked from its configs; errors name the files and where they go."""
    if explicit or env.get(ENV[task]):
        folder = Path(explicit or env[ENV[task]]).expanduser()
        origin = "--checkpoint" if explicit else f"${ENV[task]}"
    else:
        folder, origin = cached_marigold(task), "the Hugging Face cache"
        if folder is None:
            raise FileNotFoundError(f"no Marigold {task} checkpoint: --checkpoint not given, ${ENV[task]} not set, "
                                    f"{', '.join(REPOS[task])} not in the Hugging Face cache. Needed in one folder: "
                                    f"{', '.join(NEEDED)}. Get them with: {fetch_hint(task)}.")
    gaps = missing(folder) if folder.is_dir() else ["the folder itself"]
    if gaps:
        raise FileNotFoundError(f"Marigold {task} checkpoint from {origin}: {folder} lacks {', '.join(gaps)} "
                                f"(needed: {', '.join(NEEDED)}). Get them with: {fetch_hint(task)}.")
    check_marigold_folder(folder, task)
    return folder


def cached_marigold(task: str) -> Optional[Path]:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    for repo in REPOS[task]:
        try:
            folder = Path(snapshot_download(repo, local_files_only=True))
        except (LocalEntryNotFoundError, OSError):  # not cached: try the next repo id
            continue
        if not missing(folder):
            return folder
    return None


def check_marigold_folder(folder: Path, task: str) -> None:
    index = read_json(folder / "model_index.json")
    kind = index.get("_class_name")
    if kind != PIPELINES[task] and kind not in OLD_NAMES[task]:
        raise ValueError(f"{folder} holds a {kind}, not a {PIPELINES[task]}: marigold predicts {task} from a "
                         f"Marigold {task} checkpoint (e.g. {REPOS[task][0]})")
    unet = read_json(folder / "unet" / "config.json")
    if unet.get("in_channels") != 8:
        raise ValueError(f"{folder}: unet has {unet.get('in_channels')} input channels; a Marigold unet has 8 "
                         f"(image latent + noisy map latent)")


@register("marigold")
class Marigold(Method):
    """Marigold (Ke et al., 2024) via diffusers' pipelines, from a local folder (--checkpoint, $HARNESS_MARIGOLD_*)."""

    loads_checkpoint = True

    def __init__(self, task, options: RunOptions):
        super().__init__(task, options)
        import diffusers

        self.checkpoint = find_marigold(task, options.checkpoint)
        cls = getattr(diffusers, PIPELINES[task])
        self.pipe = cls.from_pretrained(self.checkpoint, local_files_only=True)  # float32
        self.weights_fingerprint = weights_fingerprint(Path(self.checkpoint))  # read once, as loaded
        self.pipe = self.pipe.to(options.device)
        self.pipe.set_progress_bar_config(disable=True)
        self.steps = options.steps or self.pipe.default_denoising_steps or FALLBACK_STEPS
        self.ensemble_size = options.ensemble_size or 1  # diffusers' default (the Marigold paper used 10)
        self.processing_res = self.pipe.default_processing_resolution or FALLBACK_PROCESSING_RES

    @property
    def contract(self) -> OutputContract:
        kind = "normals" if self.task == "normals" else self.pipe.config.prediction_type
        kind = "disparity" if kind == "disparity" else kind
        return OutputContract(kind=kind, affine_invariant=kind != "normals", stochastic=True,
                              default_steps=self.steps, processing_res=self.processing_res, size_multiple=8,
                              min_size=8 * 2 ** (len(self.pipe.unet.config.block_out_channels) - 1))

    def predict(self, rgb: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        """rgb [B,3,H,W] in [-1,1] -> depth / disparity [B,1,H,W] in [0,1] or unit normals [B,3,H,W]."""
        dtype = getattr(torch, self.options.dtype)
        device = torch.device(self.options.device)
        out = []
        for image, gen in zip(rgb, generators):
            seeds = torch.randint(0, 2 ** 62, (self.ensemble_size,), generator=gen).tolist()
            members = [torch.Generator().manual_seed(int(s)) for s in seeds]
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                result = self.pipe(((image.unsqueeze(0) + 1) / 2).clamp(0, 1).to(device),
                                   num_inference_steps=self.steps, ensemble_size=self.ensemble_size,
                                   processing_resolution=0, match_input_resolution=True, batch_size=self.ensemble_size,
                                   generator=members, output_type="pt")
            out.append(result.prediction.float())  # [1,C,H,W]
        return torch.cat(out).to(rgb.device)

    def use_steps(self, steps: int) -> None:
        self.steps = steps

    def describe(self) -> dict:
        return {"method": self.name, "variant": "default", "checkpoint": str(self.checkpoint),
                "weights_fingerprint": self.weights_fingerprint, "steps": self.steps,
                "eta": 0.0, "ensemble_size": self.ensemble_size, "dtype": self.options.dtype,
                "pipeline": type(self.pipe).__name__, "prediction_type": self.pipe.config.prediction_type,
                "scheduler": type(self.pipe.scheduler).__name__, "default_processing_res": self.processing_res}
