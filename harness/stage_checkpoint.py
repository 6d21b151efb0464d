"""Checkpoints of a training run made of stages run one after another (the tiny backbone's pretraining: the VAE,
then the UNet), so that a run killed at any moment resumes from its last checkpoint and ends bit-identical to a run
that never stopped (same thread count).

A run folder holds ``settings.json`` (the settings that decide the result; a resume with others is refused) and one
``checkpoint_<stage>.pt`` per stage reached, rewritten atomically every few steps: the module's weights, the
optimiser and learning-rate schedule, the loss EMA, the global torch RNG state the stage draws from, and the
training time so far. A finished stage's file stays: later stages resume on top of it.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.manifest import settings_change
from harness.runio import atomic_torch_save, atomic_write_text, keep_jsonl_rows, read_json_object


@dataclass(frozen=True)
class ResumePoint:
    stage: str
    step: int  # optimiser steps of ``stage`` already done
    elapsed_s: float  # training time when that checkpoint was written


class TrainingClock:
    """Seconds of training so far, counting earlier sessions up to their last checkpoint."""

    def __init__(self) -> None:
        self.started, self.offset = time.time(), 0.0

    def elapsed(self) -> float:
        return self.offset + time.time() - self.started

    def continue_from(self, seconds: float) -> None:
        self.started, self.offset = time.time(), seconds


def _load(path: Path) -> dict:
    try:
        return torch.load(path, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
        raise ValueError(f"{path} cannot be read as a checkpoint ({type(e).__name__}); delete it to redo that stage "
                         f"from its start, or delete its folder to start the run over") from e


class StageCheckpoints:
    """The checkpoints of one run folder, for ``stages`` run in that order."""

    def __init__(self, folder: Path, stages: tuple[str, ...], settings: dict) -> None:
        self.folder, self.stages, self.settings = Path(folder), stages, settings

    def path(self, stage: str) -> Path:
        return self.folder / f"checkpoint_{stage}.pt"

    def open(self) -> ResumePoint | None:
        """The furthest checkpoint (refused when the folder's settings differ), or None (a fresh start: the
        settings are written, replacing those of an attempt that checkpointed nothing)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        settings_file = self.folder / "settings.json"
        point = self._furthest()
        if point is None:
            atomic_write_text(settings_file, json.dumps(self.settings, indent=2) + "\n")
            return None
        recorded = read_json_object(settings_file, "start a new run with --set output=OTHER_DIR")
        change = settings_change(recorded, self.settings)
        if change:
            raise ValueError(f"{self.folder} holds a run with other settings ({change}); resume it with the same "
                             f"settings, or start a new run with --set output=OTHER_DIR")
        return point

    def _furthest(self) -> ResumePoint | None:
        for stage in reversed(self.stages):
            if self.path(stage).is_file():
                saved = _load(self.path(stage))
                return ResumePoint(stage, int(saved["step"]), round(float(saved["elapsed_s"]), 1))
        return None

    def save(self, stage: str, step: int, module, optimizer, schedule, ema: float | None, clock: TrainingClock) -> None:
        atomic_torch_save({"step": step, "module": module.state_dict(), "optimizer": optimizer.state_dict(),
                      "schedule": schedule.state_dict(), "ema": ema, "rng": torch.get_rng_state(),
                      "elapsed_s": clock.elapsed()}, self.path(stage))

    def restore(self, stage: str, module, optimizer, schedule, clock: TrainingClock) -> tuple[int, float | None]:
        """Load ``stage``'s checkpoint into the objects given and the global RNG: (steps done, loss EMA);
        (0, None) when the stage has none."""
        if not self.path(stage).is_file():
            return 0, None
        saved = _load(self.path(stage))
        module.load_state_dict(saved["module"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        torch.set_rng_state(saved["rng"])
        clock.continue_from(saved["elapsed_s"])
        return int(saved["step"]), saved["ema"]

    def trim_log(self, log_path: Path, point: ResumePoint) -> None:
        """Drop the training rows ({"stage", "step", ...}) logged after ``point`` (the resumed run logs them again)
        and any row of a later stage; event rows (no "stage") stay."""
        order = {stage: i for i, stage in enumerate(self.stages)}
        limit = (order[point.stage], point.step)

        def before(row: dict) -> bool:
            if "stage" not in row:
                return True
            return row["stage"] in order and (order[row["stage"]], row.get("step", 0)) < limit

        keep_jsonl_rows(log_path, before)
