"""`python -m harness ablate`: Table 3 (fine-tuning x DAN x image consistency, plus math.md's open choices) and
the bridges-from-scratch / noise-to-map baselines, evaluated from shipped checkpoints at several step counts.

Each (step count, row) is one ordinary resumable run folder (``<output>/steps<N>/<row>``); the table is assembled
from their summaries, so a killed ablation continues where it stopped, a row added later never re-runs the others,
and a new metric never re-runs a model. Every row
records its checkpoint's training budget (iterations): rows are comparable only at equal budgets, and the shipped
default DPBridge-tiny (trained longer) is printed as a reference row, never as the grid's "full" row. With
``--method dpbridge_sd21 --backbone PATH`` the same grid runs at scale: variants start from the paper's defaults,
train with the paper's preset on HyperSim + Virtual KITTI, and are evaluated on NYUv2 and KITTI.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd

from harness import manifest as mf
from harness.claims import budget_caveats, claims, claims_markdown, dan_caveats
from harness.distributed import processes
from harness.evaluate import DEFAULT_SIZE_FIT
from harness.run import RESULTS_DIR, RunConfig, run
from harness.runio import atomic_write_text, read_json_object
from harness.tables import format_cell, header
from methods.ablation import ABLATION_VARIANTS, variant_settings
from methods.backbones import recorded_path

BASELINES = ("i2sb", "bbdm", "marigold_tiny")  # tiny-world baselines (shipped)
TINY = "dpbridge_tiny"
ABLATION_BUDGET = 1000  # iterations every tiny grid row and baseline is trained for (`--train`)
TABLE_METRICS = ("abs_rel", "delta1")  # Table 3's columns


@dataclass(frozen=True)
class AblateConfig:
    method: str = TINY  # whose grid: dpbridge_tiny, or dpbridge_sd15 / dpbridge_sd21 at scale
    backbone: Optional[str] = None  # SD folder for the methods at scale (else $HARNESS_SDxx / the HF cache)
    variants: Optional[tuple[str, ...]] = None  # None: every variant the method offers (methods.ablation)
    baselines: Optional[tuple[str, ...]] = None  # None: BASELINES for the tiny grid, none at scale
    reference: bool = True  # also evaluate the method's default checkpoint
    steps: tuple[int, ...] = (10, 50)
    datasets: Optional[tuple[str, ...]] = None  # None: the tiny world's depth test split (its indoor / outdoor
    #                                              groups stand in for Table 3's NYUv2 / KITTI), at scale nyuv2,kitti
    count: Optional[int] = None
    seed: int = 0
    batch_size: int = 8
    iterations: Optional[int] = None  # `--train` budget; None: ABLATION_BUDGET (tiny), the method's preset (scale)
    eta: float = 0.0  # sampler stochasticity of every row (math.md: DDIM eta, an open choice)
    device: str = "cpu"
    dtype: str = "float32"
    processing_res: Optional[int] = None  # None: each dataset's protocol value, else the method's
    size_fit: str = DEFAULT_SIZE_FIT  # how the processing size meets the network's multiple (harness.evaluate)

    @property
    def at_scale(self) -> bool:
        return self.method != TINY

    def baseline_rows(self) -> tuple[str, ...]:
        if self.baselines is None:
            return () if self.at_scale else BASELINES
        if self.at_scale and self.baselines:
            raise ValueError(f"baselines {', '.join(self.baselines)} are tiny-world models; at scale train them with "
                             f"`python -m harness train --method i2sb --method-set backbone=PATH` and evaluate them "
                             f"with `run --checkpoint`, or pass --baselines none")
        return self.baselines

    def dataset_names(self) -> tuple[str, ...]:
        return self.datasets or (("nyuv2", "kitti") if self.at_scale else ("synthetic",))

    def budget(self) -> Optional[int]:
        return self.iterations if self.iterations is not None else (None if self.at_scale else ABLATION_BUDGET)


def check_config(cfg: AblateConfig) -> None:
    """Refuse an unknown method, a step count below 1 or a sample count below 1 before anything is trained or run."""
    from harness.registry import method_class

    method_class(cfg.method)  # KeyError naming the close matches
    if not method_class(cfg.method).spec_options:
        raise ValueError(f"{cfg.method} offers no ablation variants; Table 3 ablates {TINY} or a method with "
                         f"variants (python -m harness ls methods)")
    if not cfg.steps or any(s < 1 for s in cfg.steps):
        raise ValueError(f"--steps must list step counts >= 1, got {list(cfg.steps)}")
    if cfg.count is not None and cfg.count < 1:
        raise ValueError(f"--count must be >= 1 (leave it out for every sample), got {cfg.count}")
    if cfg.iterations is not None and cfg.iterations < 1:
        raise ValueError(f"--iterations must be >= 1 (leave it out for the ablation budget), got {cfg.iterations}")
    for flag, values in (("--steps", cfg.steps), ("--variants", cfg.variants or ()),
                         ("--baselines", cfg.baselines or ()), ("--datasets", cfg.datasets or ())):
        repeated = sorted({str(v) for v in values if list(values).count(v) > 1})
        if repeated:
            raise ValueError(f"{flag} names {', '.join(repeated)} more than once")
    for name in cfg.baseline_rows():
        if not hasattr(method_class(name), "shipped_checkpoint"):
            raise ValueError(f"--baselines {name}: not a trained tiny-world model; the baselines are "
                             f"{', '.join(BASELINES)} (or none)")


def method_specs(cfg: AblateConfig) -> list[str]:
    from harness.registry import method_class

    offered = method_class(cfg.method).spec_options
    variants = tuple(offered) if cfg.variants is None else cfg.variants
    unknown = [v for v in variants if v not in offered]
    if unknown:
        raise ValueError(f"{cfg.method} has no variant {', '.join(unknown)}; it offers {', '.join(offered)}")
    specs = [f"{cfg.method}[{v}]" for v in variants] + list(cfg.baseline_rows())
    return specs + ([cfg.method] if cfg.reference else [])


def checkpoint_of(spec: str) -> Path:
    from harness.registry import method_class, parse_method_spec

    parsed = parse_method_spec(spec)
    return method_class(spec).shipped_checkpoint("depth", parsed.option or "default")


def train_command(spec: str, cfg: AblateConfig) -> str:
    from harness.registry import parse_method_spec

    parsed = parse_method_spec(spec)
    parts = [f"python -m harness train --method {parsed.name} --task depth"]
    if parsed.option:
        parts.append(f"--variant {parsed.option}")
    if cfg.at_scale and parsed.name == cfg.method:
        parts.append(f"--datasets hypersim,vkitti{' --backbone ' + cfg.backbone if cfg.backbone else ''}")
    if cfg.budget() is not None:
        parts.append(f"--set iterations={cfg.budget()}")
    return " ".join(parts)


def missing_checkpoints(cfg: AblateConfig) -> list[str]:
    return [s for s in method_specs(cfg) if not (checkpoint_of(s) / "trained_config.json").is_file()]


def training_sets(cfg: AblateConfig) -> set[str]:
    """The training adapters `ablate --train` reads: the method's preset's at scale (HyperSim, Virtual KITTI), none
    for the tiny grid (the tiny world is rendered)."""
    from harness.train_data import method_train_settings

    if not cfg.at_scale:
        return set()
    return {n.strip() for n in method_train_settings(cfg.method, None).get("datasets", "").split(",") if n.strip()}


def regenerate(specs: list[str], cfg: AblateConfig, train_settings: Optional[dict] = None,
               train_roots: Optional[dict] = None) -> None:
    """Train each missing checkpoint (resumable: cache/train/ablation/<method>/<row>): the tiny grid at the
    ablation budget, the grid at scale with the method's preset (the paper's recipe) on HyperSim + Virtual KITTI;
    ``train_settings``: other TrainConfig fields (tests use tiny batches); ``train_roots``: name -> folder of those
    training sets (`ablate --train --data-root hypersim=PATH`; else the environment or the config file)."""
    from harness.registry import parse_method_spec
    from harness.train import TrainConfig, train
    from harness.train_data import method_train_settings
    from harness.trainables import trained_method_config

    for spec in specs:
        parsed = parse_method_spec(spec)
        backbone = cfg.backbone if cfg.at_scale and parsed.name == cfg.method else None
        method_cfg, export = trained_method_config(parsed.name, "depth", parsed.option, [], backbone)
        settings = {**method_train_settings(parsed.name, None),
                    "output": f"cache/train/ablation/{parsed.name}/{parsed.option or 'default'}", "export": str(export)}
        if cfg.budget() is not None:
            settings["iterations"] = cfg.budget()
        settings.update(train_settings or {})
        train(method_cfg, TrainConfig(**settings), train_command(spec, cfg), method_name=parsed.name,
              data_roots=train_roots if backbone is not None else None)


def design_columns(spec: str) -> dict:
    """What a row is: fine-tuned?, DAN, image consistency, process, training budget."""
    from harness.registry import method_class, parse_method_spec

    parsed = parse_method_spec(spec)
    folder = checkpoint_of(spec)
    fix = f"move {folder} away and train it again (`python -m harness ablate --train`)"
    config = read_json_object(folder / "trained_config.json", fix).get("method_config", {})
    summary_path = folder / "training_summary.json"
    summary = read_json_object(summary_path, fix) if summary_path.is_file() else {}
    iterations = summary.get("train_config", {}).get("iterations")
    out = {"row": parsed.option or parsed.name, "process": parsed.name, "finetune": bool(config.get("finetune")),
           "dan": config.get("dan", "-"), "image_consistency": config.get("image_consistency", "-"),
           "train_iterations": iterations, "checkpoint": recorded_path(folder)}  # relative inside the repository
    if parsed.option:
        out["about"] = ABLATION_VARIANTS[parsed.option][1]
        wanted = variant_settings(parsed.option, method_class(spec).ablation_base)
        if {k: config.get(k) for k in wanted} != wanted:
            raise ValueError(f"{folder} was not trained with the settings of variant {parsed.option} ({wanted}); "
                             f"retrain it with `{train_command(spec, AblateConfig(method=parsed.name))}`")
    else:
        out["about"] = "default checkpoint (reference)" if method_class(spec).spec_options else "baseline"
    return out


def ablate(cfg: AblateConfig, output: Optional[str] = None, train_missing: bool = False, progress: bool = True,
           train_settings: Optional[dict] = None, roots=None,
           train_roots: Optional[dict] = None) -> tuple[Path, Optional[pd.DataFrame]]:
    """Evaluate every row at every step count; returns the folder and the tidy Table 3 rows. ``roots``: data roots
    of the datasets (harness.dataroots), for the grid at scale; ``train_roots``: of its training sets
    (``regenerate``)."""
    check_config(cfg)
    commit = mf.git_commit()  # the code as this call started: the tree may change while the rows run
    missing = missing_checkpoints(cfg)
    if missing and not train_missing:
        lines = "\n".join(f"  {s}: {checkpoint_of(s)}  (regenerate: {train_command(s, cfg)})" for s in missing)
        raise FileNotFoundError(f"{len(missing)} ablation checkpoint(s) missing:\n{lines}\nRun `python -m harness "
                                f"ablate --train` to train them, or choose rows with --variants / --baselines.")
    if missing:
        regenerate(missing, cfg, train_settings, train_roots)
    folder = Path(output) if output else RESULTS_DIR / "runs" / f"ablate_{cfg.method}"
    specs = method_specs(cfg)
    design = {s: design_columns(s) for s in specs}
    tables = []
    for steps in cfg.steps:
        for spec in specs:  # one run folder per row: rows added later never re-run the others
            run_cfg = RunConfig(methods=(spec,), datasets=cfg.dataset_names(), steps=steps, seed=cfg.seed,
                                batch_size=cfg.batch_size, count=cfg.count, eta=cfg.eta, device=cfg.device,
                                dtype=cfg.dtype, processing_res=cfg.processing_res, size_fit=cfg.size_fit)
            row_folder, summary = run(run_cfg, str(folder / f"steps{steps}" / design[spec]["row"]),
                                      progress=progress, roots=roots, commit=commit)
            if summary is not None:  # None: launched on several processes and not the first (harness.distributed)
                tables.append(table_rows(summary, [spec], design).assign(git_commit=recorded_commit(row_folder)))
    if not processes().is_main:
        return folder, None
    table = pd.concat(tables, ignore_index=True)
    found, skipped = claims(folder, cfg.steps, {design[s]["row"] for s in specs})  # before any file is replaced
    atomic_write_text(folder / "table3.csv", table.to_csv(index=False))
    atomic_write_text(folder / "table3.md", render_markdown(table))
    atomic_write_text(folder / "claims.csv", found.to_csv(index=False))
    budgets = {d["row"]: d["train_iterations"] for d in design.values()}
    caveats = dan_caveats(folder, cfg.steps) + budget_caveats(found, budgets)
    atomic_write_text(folder / "claims.md", claims_markdown(found, skipped, caveats))
    return folder, table


ROW_SETTINGS = ("dataset", "group", "steps", "metric", "value", "ci_low", "ci_high", "n_samples", "n_failed", "seed",
                "eta", "dtype", "device", "processing_res", "size_fit", "ensemble_size", "alignment",
                "list_fingerprint")


def recorded_commit(run_folder: Path) -> str:
    """The code a row's numbers come from: the git commit its run manifest recorded when the folder was started
    (a resumed row keeps it; "-" for a manifest without one)."""
    fix = "move that folder away: the ablation runs the row again"
    return read_json_object(Path(run_folder) / "manifest.json", fix).get("git_commit", "-")


def table_rows(summary: pd.DataFrame, specs: list[str], design: dict) -> pd.DataFrame:
    """Summary rows of Table 3's metrics, with the design columns of the row they belong to."""
    from harness.registry import parse_method_spec

    keep = summary[summary.metric.isin(TABLE_METRICS)].copy()
    rows = []
    for spec in specs:
        parsed = parse_method_spec(spec)
        variant = parsed.option or "default"
        part = keep[(keep.method == parsed.name) & (keep.variant == variant)]
        if part.empty:
            raise ValueError(f"the run has no rows for {spec}; its summary holds "
                             f"{sorted(set(zip(keep.method, keep.variant)))}")
        for r in part.to_dict("records"):
            rows.append({**design[spec], **{k: r[k] for k in ROW_SETTINGS if k in r}})
    return pd.DataFrame(rows)


def render_markdown(table: pd.DataFrame) -> str:
    """One table per step count: rows as Table 3 (design checks), (group x metric) columns with 95% intervals."""
    parts = []
    places = list(dict.fromkeys(zip(table.dataset, table.group)))  # (dataset, group) in order of appearance
    several = len({d for d, _ in places}) > 1
    for steps, df in table.groupby("steps", sort=True):
        cols = [(d, g, m) for d, g in places for m in TABLE_METRICS]
        head = "| row | FT | DAN | IC | iters | " + " | ".join(
            f"{d + ' ' if several else ''}{g} {header('depth', m)}" for d, g, m in cols) + " |"
        lines = [head, "|---|---|---|---|---|" + "---|" * len(cols)]
        for row, cell in df.groupby("row", sort=False):
            first = cell.iloc[0]
            values = {(r.dataset, r.group, r.metric): format_cell("depth", r.metric, r.value, r.ci_low, r.ci_high)
                      for r in cell.itertuples()}
            lines.append(f"| {row} | {'✓' if first.finetune else '-'} | {first.dan} | {first.image_consistency} | "
                         f"{first.train_iterations} | " + " | ".join(values.get(c, "-") for c in cols) + " |")
        sizes = df[df.group == "all"].drop_duplicates("dataset")
        counts = ", ".join(f"{d} n = {int(n)}" for d, n in zip(sizes.dataset, sizes.n_samples))
        where = "".join(f", {c} {df[c].iloc[0]}" for c in ("dtype", "device") if c in df)
        if "git_commit" in df:  # the code of the rows (a table of rows made at several commits names them all)
            commits = sorted({str(c)[:7] + ("+dirty" if str(c).endswith("+dirty") else "") for c in df.git_commit})
            where += f", {'commits' if len(commits) > 1 else 'commit'} {', '.join(commits)}"
        parts.append(f"**{steps} steps** ({counts}, seed "
                     f"{int(df.seed.iloc[0])}, eta {df.eta.iloc[0]}{where}; ± = half-width of the bootstrap 95% "
                     f"interval over images)\n\n" + "\n".join(lines))
    legend = "\n".join(f"- `{row}`: {about}" for row, about in
                       table.drop_duplicates("row")[["row", "about"]].itertuples(index=False))
    return "\n\n".join(parts) + "\n\nRows:\n" + legend + "\n"
