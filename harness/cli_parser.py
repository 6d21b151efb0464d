"""The command line's arguments: one sub-parser per subcommand (the functions that run them: harness/cli.py)."""
from __future__ import annotations

import argparse

DESCRIPTION = "Train, run and evaluate DPBridge and regenerate the paper's tables."


def add_device_options(p) -> None:
    p.add_argument("--eta", type=float, default=0.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="autocast dtype for the network (float32 = no autocast)")


def add_inference_options(p) -> None:
    p.add_argument("--channels-last", action="store_true", help="networks in channels-last memory format")
    p.add_argument("--compile", action="store_true", help="torch.compile the networks (compiled on first use)")
    p.add_argument("--bmm-attention", action="store_true", help="the UNet's attention as bmm-softmax-bmm instead "
                   "of PyTorch's fused kernel: faster on the CPU for the tiny model's 4-8-wide heads "
                   "(methods/attention.py)")


def add_processing_res_option(p) -> None:
    p.add_argument("--processing-res", type=int, metavar="PX", help="long side every method sees on every dataset "
                   "(0 = native; default: each benchmark's protocol value, else the method's own)")
    add_size_fit_option(p)


def add_size_fit_option(p) -> None:
    p.add_argument("--size-fit", choices=("pad", "round"), help="how the processing size meets a network's size "
                   "multiple: pad (default; Marigold's: resize to it exactly, pad with edge pixels, crop the "
                   "prediction) or round (each side to the nearest multiple; ETH3D's 504x756 runs as 504x752)")


def add_run_options(p) -> None:
    """The options `run` and `robustness` share (both evaluate a RunConfig; a study reuses a run's clean cells
    only when these agree)."""
    from harness.dataroots import add_data_options

    p.add_argument("--checkpoint", metavar="DIR", help="weights for the one method of the run that loads weights "
                   "(dpbridge_sd15/sd21, dpbridge_tiny, ...: a folder from `train`; marigold: a Marigold folder; "
                   "train_mean: its .safetensors); a run naming several such methods is refused")
    p.add_argument("--ensemble", type=int, default=0, metavar="N",
                   help="samples averaged per image by the stochastic methods (DPBridge, I2SB, BBDM, Marigold; "
                        "the mean of the decoded maps for the ones trained here); 0 = the method's default (one)")
    p.add_argument("--continue-on-error", action="store_true",
                   help="a sample whose GT cannot be decoded, whose valid mask is empty or whose prediction is NaN/inf "
                   "becomes a failed row with its reason (counted in summary.csv n_failed) instead of stopping")
    p.add_argument("--retry-failed", action="store_true",
                   help="resuming a run: try the samples recorded as failed again (e.g. after fixing their files)")
    p.add_argument("--dataset-set", action="append", metavar="KEY=VALUE",
                   help="dataset setting: for folder:DIR one overriding its spec.json, e.g. max_depth=10 (see "
                   "README, folder); for the tiny world its split, seed, height or width, e.g. split=val")
    add_data_options(p)
    add_device_options(p)
    add_inference_options(p)
    add_processing_res_option(p)


def build_parser() -> argparse.ArgumentParser:
    from harness.dataroots import add_data_options

    p = argparse.ArgumentParser(prog="python -m harness", description=DESCRIPTION)
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="evaluate methods on datasets (resumable)")
    r.add_argument("--methods", help="comma-separated method names (default: DPBridge-tiny + trivial references); "
                   "saved predictions of any model: predictions:DIR (affine depth / normals), "
                   "predictions[disparity]:DIR (affine disparity), Marigold layout (DIR/.../pred_<name>.npy)")
    r.add_argument("--datasets", help="comma-separated dataset names, or all (default: the tiny world, depth and "
                   "normals); your own data: folder:DIR or folder[normals]:DIR (see README)")
    r.add_argument("--steps", type=int, help="sampling steps (default: each method's own)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--batch-size", type=int, default=8)
    r.add_argument("--count", type=int, help="only the first N samples of each dataset")
    r.add_argument("--allow-missing", action="store_true",
                   help="saved predictions: score the samples that have a file and report how many were missing")
    r.add_argument("--output", help="run folder (default: results/runs/run-<settings hash>)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    add_run_options(r)

    rb = sub.add_parser("robustness", help="Table 4: methods under input noise beside their clean scores")
    rb.add_argument("--noise", default="all", help="noise names (comma-separated) or all; see `ls perturbations`")
    rb.add_argument("--levels", action="append", metavar="NOISE=L1,L2", help="levels replacing a noise's defaults")
    rb.add_argument("--methods", help="comma-separated method names (default: dpbridge_tiny)")
    rb.add_argument("--datasets", help="comma-separated dataset names, or all (default: the tiny world)")
    for flag, kind in (("--steps", int), ("--count", int)):
        rb.add_argument(flag, type=kind)
    rb.add_argument("--seed", type=int, default=0)
    rb.add_argument("--batch-size", type=int, default=8)
    rb.add_argument("--output", help="run folder (default: the `run` folder of the same settings, so clean "
                    "predictions are shared)")
    rb.add_argument("--quiet", action="store_true")
    add_run_options(rb)

    la = sub.add_parser("latency", help="latency, memory and quality against sampling steps (Figure 5)")
    la.add_argument("--methods", default="dpbridge_tiny", help="methods with sampling steps, comma-separated")
    la.add_argument("--datasets", help="comma-separated dataset names (default: the tiny world)")
    la.add_argument("--steps", default="1,2,5,10,20,50", help="comma-separated step counts")
    la.add_argument("--count", type=int, default=16, help="images per cell (the first N of each dataset)")
    la.add_argument("--batch-size", type=int, default=1)
    la.add_argument("--warmup", type=int, default=1, help="untimed batches before each cell")
    la.add_argument("--seed", type=int, default=0)
    la.add_argument("--output", help="folder (default: results/latency/latency-<settings hash>-<UTC time>)")
    add_data_options(la)
    add_device_options(la)
    add_inference_options(la)

    t = sub.add_parser("train", help="train a method (dpbridge_tiny, its ablation variants, i2sb, bbdm, "
                       "marigold_tiny; train_mean)")
    t.add_argument("--method", default="dpbridge_tiny")
    t.add_argument("--variant", help="ablation variant (see `python -m harness ablate --list`); exports to its "
                   "shipped folder methods/weights/ablation/")
    t.add_argument("--task", choices=("depth", "normals"), default="depth")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="TrainConfig setting, e.g. iterations=100")
    t.add_argument("--method-set", action="append", metavar="KEY=VALUE", help="method config setting, e.g. dan=B")
    t.add_argument("--backbone", metavar="PATH", help="Stable Diffusion folder (diffusers layout) for dpbridge_sd15 / "
                   "dpbridge_sd21; default $HARNESS_SD15 / $HARNESS_SD21, then the local Hugging Face cache")
    t.add_argument("--datasets", help="training adapters, e.g. hypersim,vkitti (roots: --data-root, "
                   "HARNESS_DATA_<NAME> or the data config file); default: the tiny-world pool")
    t.add_argument("--data-root", action="append", metavar="NAME=PATH", help="where a training set's files are")

    ab = sub.add_parser("ablate", help="Table 3: the ablation grid and the baselines from shipped checkpoints")
    ab.add_argument("--method", help="whose grid: dpbridge_tiny (default), or dpbridge_sd15 / dpbridge_sd21 at scale")
    ab.add_argument("--backbone", help="Stable Diffusion folder for the grid at scale (else $HARNESS_SDxx, HF cache)")
    ab.add_argument("--variants", help="comma-separated DPBridge variants (default: all; see --list; none)")
    ab.add_argument("--baselines", help="comma-separated baselines (default: i2sb,bbdm,marigold_tiny for the tiny "
                    "grid, none at scale)")
    ab.add_argument("--datasets", help="default: the tiny world (synthetic); at scale nyuv2,kitti")
    ab.add_argument("--no-reference", action="store_true", help="skip the method's default checkpoint row")
    ab.add_argument("--steps", help="comma-separated step counts (default: 10,50)")
    ab.add_argument("--count", type=int, help="only the first N test samples")
    ab.add_argument("--seed", type=int)
    ab.add_argument("--batch-size", type=int)
    ab.add_argument("--train", action="store_true", help="train missing checkpoints first (the ablation budget)")
    ab.add_argument("--iterations", type=int, help="training budget of --train (default: 1000 for the tiny grid, "
                    "the paper's preset at scale)")
    ab.add_argument("--output", help="folder (default: results/runs/ablate_<method>)")
    ab.add_argument("--list", action="store_true", help="list the rows and stop")
    ab.add_argument("--quiet", action="store_true")
    add_device_options(ab)
    add_processing_res_option(ab)
    add_data_options(ab)

    b = sub.add_parser("pretrain", help="pretrain the tiny backbone (VAE + UNet) on the tiny world")
    b.add_argument("--set", action="append", metavar="KEY=VALUE", help="PretrainConfig setting")

    dg = sub.add_parser("diagnose", help="a DPBridge checkpoint's posterior-mean error against its samples' "
                        "(tiny-world validation scenes, latent MSE)")
    dg.add_argument("--task", default="depth", choices=("depth", "normals"))
    dg.add_argument("--checkpoint", metavar="DIR", help="trained DPBridge folder (default: the shipped dpbridge_tiny)")
    dg.add_argument("--split", default="val", choices=("train", "val", "test"))
    dg.add_argument("--count", type=int, default=32)
    dg.add_argument("--steps", default="1,2,5,10", help="sampler step counts")
    dg.add_argument("--ensemble", type=int, default=6, help="draws averaged at the largest step count (1: none)")
    dg.add_argument("--eta", type=float, default=0.0)
    dg.add_argument("--seed", type=int, default=0)
    dg.add_argument("--output", help="also write the rows as CSV here")
    dg.add_argument("--overwrite", action="store_true", help="replace an existing --output file")

    c = sub.add_parser("compare", help="paired differences between two runs (B - A) with bootstrap intervals")
    c.add_argument("run_a")
    c.add_argument("run_b")
    c.add_argument("--method-a", help="method of RUN_A (when it has several on a dataset)")
    c.add_argument("--method-b", help="method of RUN_B")
    c.add_argument("--output", help="also write the table as CSV here")
    c.add_argument("--overwrite", action="store_true", help="replace the CSV if it exists")

    tb = sub.add_parser("tables", help="the paper's Tables 1-4 (published numbers) with runs added as measured rows")
    tb.add_argument("runs", nargs="*", metavar="RUN", help="run folders (their summary.csv); none: published only")
    tb.add_argument("--output", help="folder for table<n>.md/.csv (default: results/tables/)")
    tb.add_argument("--overwrite", action="store_true", help="replace the tables already in that folder")

    ls = sub.add_parser("ls", help="list registered methods, datasets, metrics or perturbations")
    ls.add_argument("what", choices=("methods", "datasets", "metrics", "perturbations"))

    pr = sub.add_parser("predict", help="run a method on your own images; write depth (16-bit PNG, .npy, colour) "
                        "or normals (RGB PNG, .npy)")
    pr.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders of images (recursive)")
    pr.add_argument("--method", default="dpbridge_tiny")
    pr.add_argument("--task", choices=("depth", "normals"), default="depth")
    pr.add_argument("--output", help="folder for the maps (default: results/predict/<method>__<task>); existing "
                    "outputs are skipped, never overwritten")
    pr.add_argument("--steps", type=int, help="sampling steps (default: the method's own)")
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--batch-size", type=int, default=8)
    pr.add_argument("--processing-res", type=int, help="long side the method sees (default: the method's; 0 = native)")
    add_size_fit_option(pr)
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_options(pr)

    fg = sub.add_parser("figures", help="qualitative grids (input | GT | methods, error maps) from runs' cached "
                        "predictions")
    fg.add_argument("runs", nargs="+", metavar="RUN", help="run folders of `python -m harness run`")
    fg.add_argument("--ids", help="comma-separated sample ids to show (e.g. test/00003,test/00010)")
    fg.add_argument("--random", type=int, default=0, metavar="N", help="N samples drawn with --seed")
    fg.add_argument("--seed", type=int, default=0)
    fg.add_argument("--best-worst", type=int, default=0, metavar="K",
                    help="also the K best and K worst samples by AbsRel (depth) or mean angular error (normals)")
    fg.add_argument("--rank-method", help="method whose rows rank best/worst (default: the first of the first run)")
    fg.add_argument("--size", choices=("column", "slide"), default="column",
                    help="column: 3.3 in wide at 300 dpi; slide: 1920x1080 (16:9)")
    fg.add_argument("--output", help="folder for the PNGs (default: RUN/figures of the first run)")
    fg.add_argument("--overwrite", action="store_true", help="replace existing PNGs of the same name")
    fg.add_argument("--datasets", help="comma-separated: only these datasets of the runs (default: all they share)")
    return p
