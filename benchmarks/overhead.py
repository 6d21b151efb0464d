"""Harness overhead and batch scaling on the CPU with the tiny model; prints two tables.

    OMP_NUM_THREADS=1 python benchmarks/overhead.py [--images 32] [--steps 10] [--batch-size 8] [--repeats 3]

1. Overhead: `python -m harness run` on N tiny-world images x S steps (a fresh folder each time, so everything is
   computed) against the same network calls alone: per batch one VAE encode, S UNet calls and one VAE decode on
   inputs prepared beforehand. Ratios: the evaluation loop (load samples, predict, score, cache, append rows) and
   the whole run() (plus building the models, the manifest and the summary) over the network time. Target: the
   loop <= 1.10. The loop is timed twice: on the tiny world as `run` sees it, rendered on the fly (about 5 ms of
   numpy per 64 px sample, a stand-in for a dataset that no real benchmark pays), and on the same samples written
   once to a `folder:DIR` dataset (PNG RGB, NPY depth in metres, the tiny world's depth range and alignment) and
   decoded from disk by its adapter, as every real benchmark is read. Both score the same ids with the same seeds;
   their abs_rel must agree (checked). `--loading background|in-turn` overrides where the harness loads the next
   batch (`harness.prefetch`). Harness and network runs alternate and the median of the repeats is kept;
   wall and process CPU time are both given (with OMP_NUM_THREADS=1 on a shared machine the CPU time is the
   steadier one).
2. Throughput: images per second of method.predict (the network path of a run, sampler included) at batch sizes
   1, 2, 4, 8, 16 on the same images, the sizes in turn for --repeats rounds; medians, and the range of the
   per-round ratios. Target: batch 8 >= 3x batch 1.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tabulate import tabulate  # noqa: E402

import harness.evaluate as evaluate_module  # noqa: E402
import harness.run as run_module  # noqa: E402
from datasets.decode import encode_image  # noqa: E402
from datasets.synthetic import MAX_DEPTH, MIN_DEPTH  # noqa: E402
from harness.evaluate import prepare_batch  # noqa: E402
from harness.manifest import device_description  # noqa: E402
from harness.registry import build_method, dataset_class  # noqa: E402
from methods.base import RunOptions  # noqa: E402


class Clock:
    """Wall and process CPU seconds of a block (on a shared machine the CPU time is the steadier measure)."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def timed_run(cfg) -> tuple[Clock, Clock, float]:
    """(whole run(), evaluation loop) clocks and the run's abs_rel, in a fresh folder."""
    loop = Clock()
    real = run_module.evaluate_pairs

    def timed(*args, **kwargs):
        with loop:
            real(*args, **kwargs)

    run_module.evaluate_pairs = timed
    try:
        with tempfile.TemporaryDirectory() as tmp, Clock() as whole:
            _, summary = run_module.run(cfg, str(Path(tmp) / "run"), progress=False)
        abs_rel = summary[(summary.metric == "abs_rel") & (summary.group == "all")].value.item()
        return whole, loop, abs_rel
    finally:
        run_module.evaluate_pairs = real


def write_folder_dataset(samples, root: Path) -> Path:
    """``samples`` as a ``folder:DIR`` dataset under ``root`` with the same ids (``rgb/test/00000.png``, ...):
    8-bit PNG RGB, float32 NPY depth in metres (0 where invalid), the tiny world's depth range and alignment."""
    for s in samples:
        for sub in ("rgb", "depth"):
            (root / sub / s.id).parent.mkdir(parents=True, exist_ok=True)
        (root / "rgb" / f"{s.id}.png").write_bytes(encode_image(s.rgb))
        np.save(root / "depth" / f"{s.id}.npy", np.where(s.valid, s.depth, 0).astype(np.float32))
    spec = {"task": "depth", "min_depth": MIN_DEPTH, "max_depth": MAX_DEPTH, "alignment": "least_squares"}
    (root / "spec.json").write_text(json.dumps(spec))
    return root


def network_only(model, batches: list[torch.Tensor], steps: int) -> Clock:
    """The UNet and VAE calls of `batches` at `steps`, nothing else (no sampler math, no I/O)."""
    with torch.inference_mode(), Clock() as clock:
        for rgb in batches:
            x_T = model.encode(rgb)  # [B,4,h,w]
            x = torch.randn_like(x_T)
            context = model.null_text.expand(x.shape[0], -1, -1)
            k = torch.full((x.shape[0],), 500, dtype=torch.int64)
            for _ in range(steps):
                x = model.unet(torch.cat([x_T, x], dim=1), k, encoder_hidden_states=context).sample
            model.decode(x)
    return clock


def images_per_second(method, images: torch.Tensor, batch: int) -> tuple[float, float]:
    """(images per wall second, images per CPU second)."""
    gens = [torch.Generator().manual_seed(i) for i in range(len(images))]
    with torch.inference_mode():
        method.predict(images[:batch], gens[:batch])  # warm-up at this shape
        with Clock() as clock:
            for i in range(0, len(images), batch):
                method.predict(images[i:i + batch], gens[i:i + batch])
    return len(images) / clock.wall, len(images) / clock.cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batches", default="1,2,4,8,16")
    p.add_argument("--channels-last", action="store_true", help="RunOptions.channels_last for both parts")
    p.add_argument("--compile", action="store_true",
                   help="RunOptions.compile for both parts (static shapes: the warm-up call compiles each batch size)")
    p.add_argument("--bmm-attention", action="store_true", help="RunOptions.bmm_attention (methods/attention.py)")
    p.add_argument("--only", choices=("overhead", "throughput"), help="run one of the two parts")
    p.add_argument("--loading", choices=("auto", "background", "in-turn"), default="auto",
                   help="where the harness loads the next batch: auto = harness.prefetch.a_core_is_free_for_loading "
                        "(what `run` does), or forced to a background thread or to in turn")
    args = p.parse_args()
    if args.loading != "auto":
        evaluate_module.a_core_is_free_for_loading = lambda device: args.loading == "background"
    cfg = run_module.RunConfig(methods=("dpbridge_tiny",), datasets=("synthetic",), steps=args.steps,
                               count=args.images, batch_size=args.batch_size, channels_last=args.channels_last,
                               compile=args.compile, bmm_attention=args.bmm_attention)
    method = build_method("dpbridge_tiny", "depth", RunOptions(steps=args.steps, channels_last=args.channels_last,
                                                               compile=args.compile, bmm_attention=args.bmm_attention))
    dataset = dataset_class("synthetic")()
    with Clock() as loading:
        samples = [dataset.load(i) for i in dataset.ids()[:args.images]]
    images = prepare_batch(samples, (64, 64))  # [N,3,64,64]
    batches = list(torch.split(images, args.batch_size))
    print(f"torch threads {torch.get_num_threads()} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}), "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; {args.images} images x {args.steps} "
          f"steps, batch {args.batch_size}, median of {args.repeats}, channels-last {args.channels_last}, "
          f"compile {args.compile}, bmm attention {args.bmm_attention}, loading {args.loading} "
          f"({'background' if evaluate_module.a_core_is_free_for_loading('cpu') else 'in turn'}); "
          f"{device_description('cpu')}\n")
    if args.only != "throughput":
        with tempfile.TemporaryDirectory() as tmp:
            folder = write_folder_dataset(samples, Path(tmp) / "tiny_world_on_disk")
            disk_cfg = dataclasses.replace(cfg, datasets=(f"folder:{folder}",))
            overhead(args, cfg, disk_cfg, method, batches, loading)
    if args.only != "overhead":
        throughput(args, method, images)


def overhead(args, cfg, disk_cfg, method, batches, loading: Clock) -> None:
    network_only(method.model, batches[:1], 1)  # warm-up
    clocks = []  # (whole, loop, whole on disk, loop on disk, network) per repeat
    for _ in range(args.repeats):
        whole, loop, rendered_abs_rel = timed_run(cfg)
        disk_whole, disk_loop, disk_abs_rel = timed_run(disk_cfg)
        if abs(disk_abs_rel - rendered_abs_rel) > 1e-6 * abs(rendered_abs_rel):
            raise SystemExit(f"the folder copy scored abs_rel {disk_abs_rel} against {rendered_abs_rel} rendered: "
                             "it is not the same benchmark, so its timing means nothing")
        clocks.append((whole, loop, disk_whole, disk_loop, network_only(method.model, batches, args.steps)))
    rows = []
    net_wall, net_cpu = (statistics.median(getattr(c[-1], kind) for c in clocks) for kind in ("wall", "cpu"))
    for i, what in enumerate(("harness run() end to end, tiny world rendered on the fly",
                              "harness evaluation loop, tiny world rendered on the fly",
                              "harness run() end to end, the same samples read from disk (folder:DIR)",
                              "harness evaluation loop, the same samples read from disk (folder:DIR)",
                              "UNet + VAE calls alone")):
        wall, cpu = (statistics.median(getattr(c[i], kind) for c in clocks) for kind in ("wall", "cpu"))
        per_round = [c[i].wall / c[-1].wall for c in clocks]  # against the network run right after it
        rows.append([what, f"{wall:.2f}", f"{wall / net_wall:.3f}", f"{min(per_round):.3f}-{max(per_round):.3f}",
                     f"{cpu:.2f}", f"{cpu / net_cpu:.3f}"])
    rows.append(["rendering the samples alone (once, before)", f"{loading.wall:.2f}",
                 f"{loading.wall / net_wall:.3f}", "", f"{loading.cpu:.2f}", f"{loading.cpu / net_cpu:.3f}"])
    print(tabulate(rows, headers=["what", "wall s", "wall ratio", "per-round range", "CPU s", "CPU ratio"],
                   tablefmt="github"))
    print(f"abs_rel {rendered_abs_rel:.6f} rendered and {disk_abs_rel:.6f} from disk (must agree)")


def throughput(args, method, images: torch.Tensor) -> None:
    """Batch sizes measured in turn, round after round (``--repeats``), so a change in the machine's load touches
    every batch size alike; per batch size the median rate, and against the smallest batch the ratio of the
    medians with the range of the per-round ratios (on a shared machine the spread is the honest error bar)."""
    sizes = [int(x) for x in args.batches.split(",")]
    rounds = [{b: images_per_second(method, images, b) for b in sizes} for _ in range(args.repeats)]
    base = min(sizes)
    rows = []
    for b in sizes:
        wall, cpu = (statistics.median(r[b][i] for r in rounds) for i in (0, 1))
        base_wall, base_cpu = (statistics.median(r[base][i] for r in rounds) for i in (0, 1))
        per_round = [r[b][0] / r[base][0] for r in rounds]
        rows.append([b, f"{wall:.2f}", f"{wall / base_wall:.2f}", f"{min(per_round):.2f}-{max(per_round):.2f}",
                     f"{cpu:.2f}", f"{cpu / base_cpu:.2f}"])
    print()
    print(f"median of {args.repeats} rounds; load average {os.getloadavg()[0]:.1f} after")
    print(tabulate(rows, headers=["batch size", "images/wall s", f"x batch {base}", "per-round range",
                                  "images/CPU s", f"x batch {base}"], tablefmt="github"))


if __name__ == "__main__":
    main()
