"""Train DPBridge (`python -m harness train --method dpbridge_tiny --task depth`).

The paper's recipe (Section 5.2): Adam, warm-up then exponential decay, batch x accumulation = effective batch,
random horizontal flip (the normal's x flips too). accelerate handles device, mixed precision and accumulation.
Every batch, timestep and noise is drawn from a generator seeded by (seed, iteration, micro-step), so a run
resumed from its last checkpoint continues exactly as if it had never stopped.

Several processes (`accelerate launch -m harness train ...`, data parallel): each micro-step draws one global
batch of processes x batch rows and each process trains on its slice, so the weights equal those of one process
with batch processes x batch (to float rounding) whenever the loss is a mean of per-sample terms (DPBridge's L_eps;
the image-consistency term pools the pixels of the samples it keeps in each process' batch, so with it on the
processes weight samples like separate batches, as gradient accumulation does). The first process writes the log,
checkpoints and the export; every process resumes from the checkpoint (the folder must be on a shared disk).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch

from harness.manifest import (device_description, refuse_replacing, refuse_unrecorded_folder, settings_change,
                              stable_seed, without_unset)
from harness.pool import latent_pool, render_pool
from harness.runio import (keep_jsonl_rows, read_json_object, restore_interrupted_swap, swap_in_folder,
                           write_folder_atomically)
from harness.weight_ema import WeightEMA
from methods.backbones import TINY_IMAGE_SIZE, WEIGHTS_DIR, save_module_fp16
from harness.registry import load_entries
from methods.latent import TRAINABLE, config_from_dict, save_config


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. Paper: 30K iterations, batch 2 x 8 accumulation, lr lost from the text (3e-5 is
    Marigold's). The tiny world trains a 1.5 M-parameter UNet for minutes, so its defaults differ (recorded)."""

    iterations: int = 3000  # optimiser steps
    batch: int = 16  # per process, per micro-step
    grad_accum: int = 1  # effective batch = processes x batch x grad_accum
    lr: float = 5e-4
    warmup: int = 100
    lr_final_ratio: float = 0.01  # exponential decay reaches lr x this at the last iteration (Marigold's 0.01)
    seed: int = 0
    pool_count: int = 6000  # tiny-world training scenes (x2 with flips)
    mixed_precision: str = "no"  # "no" | "fp16" | "bf16"
    checkpoint_every: int = 250
    stop_at: int = 0  # stop once this many iterations are done (checkpointed, not exported; for time-limited jobs:
    # the same command without it continues); 0 = train to the end
    log_every: int = 50
    output: str = ""  # run folder (checkpoints, log); default cache/train/<method>_<task>
    export: str = ""  # where the final fp16 checkpoint goes; default methods/weights/dpbridge_tiny_<task>
    preset: str = "tiny"  # named recipe the defaults came from ("tiny": these; harness.train_data.TRAIN_PRESETS)
    datasets: str = ""  # comma-separated training adapters (harness.train_data); "" = the tiny-world pool
    dataset_mix: str = ""  # NAME=WEIGHT,... per-micro-batch dataset probabilities; "" = equal
    weight_ema: float = 0.0  # decay of a moving average of the weights, exported instead of the last weights
    # (harness.weight_ema); 0 = off, the paper's recipe as written (it names none)


def warmup_exponential(step: int, warmup: int, total: int, final_ratio: float) -> float:
    """Learning-rate factor: linear warm-up for ``warmup`` steps, then exponential decay reaching ``final_ratio``
    at step ``total`` (the paper's schedule; also the tiny backbone's)."""
    if step < warmup:
        return (step + 1) / warmup
    return final_ratio ** ((step - warmup) / max(total - warmup, 1))


def lr_factor(step: int, cfg: TrainConfig) -> float:
    return warmup_exponential(step, cfg.warmup, cfg.iterations, cfg.lr_final_ratio)


def draw_batch(latents: dict, n_rows: int, batch: int, gen: torch.Generator, draw_times):
    """Indices, times (the model's ``draw_times``) and noise, all from ``gen``."""
    idx = torch.randint(0, n_rows, (batch,), generator=gen)
    t = draw_times(batch, gen)
    noise = torch.randn((batch, *latents["x_0"].shape[1:]), generator=gen)
    return idx, t, noise


def _log(path: Path, row: dict) -> None:
    print(json.dumps(row), flush=True)
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


NOT_RESULT_SETTINGS = ("checkpoint_every", "log_every", "output", "export", "stop_at")  # free to change on a resume


ADDED_LATER = {"weight_ema": 0.0}  # option -> its value when off: left out while off, so older checkpoints resume


def result_settings(cfg: TrainConfig) -> dict:
    """The TrainConfig fields that decide the trained weights (a resume must keep them)."""
    return without_unset({k: v for k, v in asdict(cfg).items() if k not in NOT_RESULT_SETTINGS}, ADDED_LATER)


def recorded_change(recorded: dict, train_settings: dict) -> str:
    """What differs between a recorded train_config and ``train_settings`` (result_settings; "" if nothing), over
    the result settings only (a record may hold more); an ADDED_LATER option compares as its off value where either
    side leaves it out, so an option used before and off now (or the reverse) is a change."""
    now = {**ADDED_LATER, **json.loads(json.dumps(train_settings))}
    return settings_change({k: recorded.get(k, ADDED_LATER.get(k)) for k in now}, now)


def check_budget(cfg: TrainConfig) -> None:
    """Refuse a budget that trains nothing (an exported checkpoint would be the untrained initialisation), and
    log or checkpoint intervals that could not be kept."""
    for key in ("iterations", "batch", "grad_accum", "log_every", "checkpoint_every"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"--set {key}={getattr(cfg, key)}: must be >= 1")
    if cfg.stop_at < 0:
        raise ValueError(f"--set stop_at={cfg.stop_at}: must be >= 0 (0 = train to the end)")


def method_config_change(recorded: dict, method_cfg) -> str:
    """What differs between a recorded method config and ``method_cfg`` ("" if nothing), keys as ``method.KEY``. The
    record is read as a config, so a field added later (its default keeps the old behaviour) counts as unchanged."""
    try:
        recorded = asdict(config_from_dict(type(method_cfg), recorded, "recorded"))
    except (TypeError, ValueError):  # another method's config: compared key by key
        pass
    before, now = ({f"method.{k}": v for k, v in c.items()} for c in (recorded, asdict(method_cfg)))
    return settings_change(json.loads(json.dumps(before)), json.loads(json.dumps(now)))


def check_export(folder: Path, method_cfg, train_settings: dict, world_size: int) -> None:
    """Refuse to replace a checkpoint trained with other settings (e.g. a shipped one under methods/weights/): the
    same settings again regenerate it, anything else must be exported elsewhere (``--set export=DIR``). The
    number of processes counts (processes x batch x grad_accum is the effective batch)."""
    summary_path = folder / "training_summary.json"
    if not summary_path.is_file():
        refuse_unrecorded_folder(folder, "training_summary.json", "--set export=DIR")
        return
    recorded = read_json_object(summary_path, "train into another folder (--set export=DIR), or move this one away")
    processes = settings_change({"world_size": recorded.get("world_size", 1)}, {"world_size": world_size})
    change = ", ".join(c for c in (
        method_config_change(recorded.get("method_config", {}), method_cfg),
        recorded_change(recorded.get("train_config", {}), train_settings), processes) if c)
    refuse_replacing(folder, "a checkpoint trained", change, "--set export=DIR")


def _check_resume(out: Path, state: dict, method_cfg, train_settings: dict, world_size: int) -> None:
    """Refuse to continue a checkpoint under other settings (it would end as no uninterrupted run would)."""
    change = method_config_change(state.get("method_config", {}), method_cfg)
    if change:
        raise ValueError(f"{out}/checkpoint was trained with another method config ({change}); resume with the same "
                         f"settings or choose another --set output=DIR")
    change = recorded_change(state.get("train_config", train_settings), train_settings)  # older: unrecorded
    if change:
        raise ValueError(f"{out}/checkpoint was trained with other training settings ({change}); resume with the "
                         f"same settings or choose another --set output=DIR")
    if state.get("world_size", world_size) != world_size:  # older checkpoints: unrecorded
        raise ValueError(f"{out}/checkpoint was trained on {state['world_size']} processes, this run has "
                         f"{world_size}: the effective batch would change mid-run; resume on {state['world_size']} "
                         f"or choose another --set output=DIR")


def _save_state(accelerator, out: Path, record: dict) -> None:
    """Checkpoint to out/checkpoint (written to a temp folder, then swapped in: a kill never leaves half a one);
    ``record`` (iteration, configs, loss EMAs) goes to its iteration.json."""
    tmp, final = out / "checkpoint.tmp", out / "checkpoint"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))  # every process: the first writes model and optimiser, each its RNG state
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    (tmp / "iteration.json").write_text(json.dumps(record))
    swap_in_folder(tmp, final)  # a kill between its renames leaves checkpoint.old, which the resume puts back


def load_checkpoint(accelerator, folder: Path) -> None:
    """Restore model, optimiser, schedule, moving average and RNG states from ``folder``, naming it and the fix when
    a file is missing or damaged."""
    try:
        accelerator.load_state(str(folder))
    except (FileNotFoundError, RuntimeError, EOFError, KeyError, ValueError) as err:
        raise RuntimeError(f"{folder} cannot be resumed ({type(err).__name__}: {err}); remove it to train from the "
                           f"start, or choose another --set output=DIR") from err


def joined_accelerator(cfg: TrainConfig):
    """The Accelerator of this process, joined with the others the launcher started. Without a GPU, accelerate joins
    them (over gloo) only when told to use the CPU, else each would train alone: say so, and check it did."""
    from accelerate import Accelerator, DataLoaderConfiguration

    launched = int(os.environ.get("WORLD_SIZE", "1"))
    # split_batches: the processes split one global batch per step, so the schedule steps once per iteration
    # (accelerate's default steps it once per process, for loaders that give each process a batch of its own)
    accelerator = Accelerator(gradient_accumulation_steps=cfg.grad_accum, mixed_precision=cfg.mixed_precision,
                              cpu=launched > 1 and not torch.cuda.is_available(),
                              dataloader_config=DataLoaderConfiguration(split_batches=True))
    if accelerator.num_processes != launched:
        raise RuntimeError(f"the launcher started {launched} processes but accelerate joined {accelerator.num_processes}"
                           f"; each would train alone and overwrite the others' files")
    return accelerator


def share(drawn: tuple, rank: int, batch: int) -> tuple:
    """This process' rows (rank x batch .. (rank + 1) x batch) of every tensor of a global draw."""
    return tuple(x[rank * batch:(rank + 1) * batch] for x in drawn)


def mean_over_processes(ema: dict) -> dict:
    """Each loss term's running mean averaged over the processes that have it (a collective: all must call)."""
    from accelerate.utils import gather_object

    return mean_of(gather_object([ema]))


def mean_of(emas: list[dict]) -> dict:
    """Each key's mean over the dicts that have it."""
    keys = list(dict.fromkeys(k for e in emas for k in e))
    return {k: sum(e[k] for e in emas if k in e) / sum(k in e for e in emas) for k in keys}


def continued_ema(saved: list[dict] | None, world: int, rank: int) -> dict:
    """This process' loss EMAs from a checkpoint's per-process list (their mean when the number of processes
    changed; none from a checkpoint written before they were saved)."""
    if not saved:
        return {}
    return dict(saved[rank]) if len(saved) == world else mean_of(saved)


def same_start(accelerator, start: int, out: Path) -> None:
    """Every process resumes from the same iteration, or none trains (a checkpoint only some machines see)."""
    from accelerate.utils import gather_object

    starts = gather_object([start])
    if len(set(starts)) > 1:
        raise RuntimeError(f"processes would resume {out} from different iterations {starts}: with several machines "
                           f"the training folder (--set output=DIR) must be on a disk all of them share")


def trainable_for(method_cfg) -> type:
    """The registered model class whose config class ``method_cfg`` is an instance of."""
    load_entries()
    for cls in TRAINABLE.values():
        if type(method_cfg) is cls.config_cls:
            return cls
    raise ValueError(f"no trainable method takes a {type(method_cfg).__name__}; known: {sorted(TRAINABLE)}")


def train(method_cfg, cfg: TrainConfig, command: str, method_name: str = "dpbridge_tiny",
          data_roots: Optional[dict] = None) -> dict:
    """Train the model ``method_cfg`` configures (any registered trainable) and export it; ``data_roots``: name ->
    folder of the training adapters in ``cfg.datasets`` (`--data-root`; paths, so not a result setting)."""
    check_budget(cfg)
    export_folder = Path(cfg.export or WEIGHTS_DIR / f"{method_name}_{method_cfg.task}")
    out = Path(cfg.output or Path("cache") / "train" / f"{method_name}_{method_cfg.task}")
    accelerator = joined_accelerator(cfg)
    if accelerator.is_main_process:  # folders a kill left between two renames get their last whole version back
        restore_interrupted_swap(export_folder)
        restore_interrupted_swap(out / "checkpoint")
    accelerator.wait_for_everyone()
    check_export(export_folder, method_cfg, result_settings(cfg), accelerator.num_processes)  # before rendering
    out.mkdir(parents=True, exist_ok=True)
    model = trainable_for(method_cfg).build(method_cfg, seed=cfg.seed)
    source = None  # real training adapters, latents encoded on the fly (harness.train_data)
    if cfg.datasets:
        from harness.train_data import dataset_batches

        source = dataset_batches(cfg.datasets, cfg.dataset_mix, method_cfg.task, model, data_roots)
    else:
        with accelerator.main_process_first():  # the first renders and encodes the pool; the others read its cache
            pool = render_pool("train", cfg.pool_count, cfg.seed, TINY_IMAGE_SIZE)
            latents = latent_pool(pool, method_cfg.task, model.vae, model.scaling_factor,
                                  key=f"train_{cfg.pool_count}_{cfg.seed}_{TINY_IMAGE_SIZE}")
        n_rows = len(latents["x_0"])
    opt = torch.optim.Adam(model.unet.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, cfg))
    model.unet, opt, sched = accelerator.prepare(model.unet, opt, sched)
    average = None
    if cfg.weight_ema:
        average = WeightEMA(accelerator.unwrap_model(model.unet), cfg.weight_ema)
        accelerator.register_for_checkpointing(average)  # saved and restored with the checkpoint
    model.vae.to(accelerator.device)
    model.null_text = model.null_text.to(accelerator.device)

    start, resumed_ema = 0, None
    if (out / "checkpoint" / "iteration.json").is_file():
        state = read_json_object(out / "checkpoint" / "iteration.json",
                                 f"remove {out / 'checkpoint'} to train from the start, or choose another output")
        _check_resume(out, state, method_cfg, result_settings(cfg), accelerator.num_processes)
        load_checkpoint(accelerator, out / "checkpoint")
        start = state["iteration"]
        resumed_ema = state.get("loss_ema_per_process")
    else:  # a checkpoint is written whole (temp folder, then swapped in): one without iteration.json is not ours
        refuse_unrecorded_folder(out / "checkpoint", "iteration.json", "--set output=DIR")
    same_start(accelerator, start, out)
    log_path = out / "training_log.jsonl"
    if start == 0 and accelerator.is_main_process:
        log_path.write_text("")
    elif accelerator.is_main_process:  # rows logged after the checkpoint (and at a stop_at) are logged again below
        keep_jsonl_rows(log_path, lambda row: "event" in row or (row.get("iteration", 0) < start
                                                                 and not row.get("at_stop")))
    effective = accelerator.num_processes * cfg.batch * cfg.grad_accum
    if accelerator.is_main_process:
        _log(log_path, {"event": "start", "iteration": start, "effective_batch": effective,
                        "world_size": accelerator.num_processes, "device": str(accelerator.device)})
    world, rank = accelerator.num_processes, accelerator.process_index
    started, ema = time.time(), (continued_ema(resumed_ema, world, rank) if start else {})
    model.unet.train()
    end = min(cfg.stop_at, cfg.iterations) if cfg.stop_at else cfg.iterations
    for it in range(start, end):
        for micro in range(cfg.grad_accum):
            # One global batch (processes x batch) per micro-step from a generator every process seeds alike; each
            # process takes its rows, so N processes train on exactly what one process with batch N x batch would.
            # (The trailing 0 keeps the stream of runs made when each process seeded by its own index.)
            gen = torch.Generator().manual_seed(hash_seed(cfg.seed, it, micro, 0))
            dev = accelerator.device
            if source is not None:  # this process' rows of the global batch, only those encoded
                mine = slice(rank * cfg.batch, (rank + 1) * cfg.batch)
                x_T, x_0, target, valid, t, noise = source.draw(world * cfg.batch, gen, model.draw_times, dev, mine)
            else:
                idx, t, noise = share(draw_batch(latents, n_rows, world * cfg.batch, gen, model.draw_times),
                                      rank, cfg.batch)
                x_T, x_0, target, valid = (latents["x_T"][idx], latents["x_0"][idx],
                                           latents["target"][idx].float(), latents["valid"][idx])
            with accelerator.accumulate(model.unet):
                with accelerator.autocast():
                    losses = model.loss(x_T.to(dev), x_0.to(dev), target.to(dev), valid.to(dev), t.to(dev),
                                        noise.to(dev))
                accelerator.backward(losses["loss"])
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
        if average is not None:
            average.update(accelerator.unwrap_model(model.unet))
        for k, v in losses.items():
            ema[k] = v.item() if k not in ema else 0.98 * ema[k] + 0.02 * v.item()
        done = it + 1
        if it % cfg.log_every == 0 or done == end:
            shared = mean_over_processes(ema)  # every process takes part
            at_stop = {"at_stop": True} if done == end < cfg.iterations and it % cfg.log_every else {}
            if accelerator.is_main_process:  # a row logged only because stop_at ends here goes on resume
                _log(log_path, {"iteration": it, **{f"{k}_ema": round(v, 5) for k, v in shared.items()},
                                "lr": sched.get_last_lr()[0], "elapsed_s": round(time.time() - started, 1), **at_stop})
        if done % cfg.checkpoint_every == 0 or done == end:
            from accelerate.utils import gather_object

            _save_state(accelerator, out, {"iteration": done, "method_config": asdict(method_cfg),
                                           "train_config": result_settings(cfg), "world_size": world,
                                           "loss_ema_per_process": gather_object([ema])})
    accelerator.wait_for_everyone()
    ema = mean_over_processes(ema)
    summary = {"command": command, "method": method_name, "method_config": asdict(method_cfg),
               "train_config": asdict(cfg), "effective_batch": effective, "world_size": accelerator.num_processes,
               "final_loss_ema": {k: round(v, 5) for k, v in ema.items()},
               "train_time_s_this_session": round(time.time() - started, 1), "torch_threads": torch.get_num_threads(),
               "machine": device_description(str(accelerator.device)),
               "exported_weights": f"moving average, decay {cfg.weight_ema}" if average is not None
               else "last iteration"}
    if source is not None:
        summary["train_data"] = source.describe()
    if end < cfg.iterations:
        summary["stopped_at"] = max(end, start)
        if accelerator.is_main_process:
            _log(log_path, {"event": "stopped", "iteration": summary["stopped_at"], "of": cfg.iterations})
        return summary
    if average is not None:
        average.copy_to(accelerator.unwrap_model(model.unet))
    if accelerator.is_main_process:
        export(accelerator.unwrap_model(model.unet), model, summary, log_path, export_folder)
    return summary


def hash_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across runs and platforms)."""
    return stable_seed(repr(parts))


def export(unet, model, summary: dict, log_path: Path, folder: Path) -> None:
    """The shipped checkpoint: fp16 UNet + config + summary + the training log, written to a temporary folder that
    then replaces ``folder`` (a kill mid-export leaves the earlier export, or none, and the resume exports again)."""
    def write(into: Path) -> None:
        save_module_fp16(unet, into / "unet")
        save_config(model, into)
        (into / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        shutil.copy(log_path, into / "training_log.jsonl")

    write_folder_atomically(folder, write)
