"""Drawing the qualitative grid of `figures` (matplotlib, Agg): exact pixel sizes for a column and a slide.

column: 3.3 in wide at 300 dpi (990 px), as tall as the rows need; slide: 1920 x 1080 px (16:9, 13.33 x 7.5 in
at 144 dpi), the grid scaled to fit and centred. Per sample two rows: the maps (input, GT, each method, with the
method's per-sample AbsRel or mean angular error in the corner) and under each method its error map.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.pictures import DEPTH_COLORMAP, ERROR_COLORMAP
from harness.runio import atomic_save_figure

SIZES = {  # name -> (width in, dpi, fixed height in or None, font pt, left margin in, top margin in, footer in)
    "column": (3.3, 300, None, 4.0, 0.10, 0.10, 0.09),
    "slide": (1920 / 144, 144, 1080 / 144, 9.0, 0.30, 0.30, 0.25),
}
GAP_IN = 0.01  # between panels
SAMPLE_GAP_IN = 0.03  # between samples


@dataclass
class Grid:
    task: str
    columns: list[str]
    rank_label: str
    rows: list[tuple] = field(default_factory=list)  # (label, rgb, gt, maps, errors, notes)

    def add(self, label, rgb, gt, maps, errors, notes) -> None:
        self.rows.append((label, rgb, gt, maps, errors, notes))


def figure_size_px(grid: Grid, size: str) -> tuple[int, int]:
    """(width, height) in pixels of the PNG ``draw_grid`` writes."""
    width_in, dpi, height_in, *_ = SIZES[size]
    if height_in is None:
        height_in = column_height_in(grid)
    return int(round(width_in * dpi)), int(round(height_in * dpi))


def cell_width_in(grid: Grid, size: str) -> float:
    width_in, _, height_in, _, left, top, footer = SIZES[size]
    ncols = len(grid.columns)
    cell = (width_in - left - GAP_IN * (ncols - 1)) / ncols
    if height_in is not None:  # slide: also fit the height
        aspects = sum(2 * r[1].shape[0] / r[1].shape[1] for r in grid.rows)
        gaps = GAP_IN * len(grid.rows) + SAMPLE_GAP_IN * max(len(grid.rows) - 1, 0)
        cell = min(cell, (height_in - top - footer - gaps) / max(aspects, 1e-9))
    return cell


def column_height_in(grid: Grid) -> float:
    _, _, _, _, _, top, footer = SIZES["column"]
    cell = cell_width_in(grid, "column")
    body = sum(2 * cell * r[1].shape[0] / r[1].shape[1] + GAP_IN for r in grid.rows)
    return top + body + SAMPLE_GAP_IN * max(len(grid.rows) - 1, 0) + footer


def draw_grid(grid: Grid, size: str, path: Path) -> None:
    """Render ``grid`` to ``path`` (PNG of exactly ``figure_size_px``), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if size not in SIZES:
        raise ValueError(f"unknown figure size {size!r}; expected {' or '.join(SIZES)}")
    if not grid.rows:
        raise ValueError("no samples selected: pass --ids, --random N or --best-worst K")
    width_in, dpi, _, font, left, top, footer = SIZES[size]
    w_px, h_px = figure_size_px(grid, size)
    W, H = w_px / dpi, h_px / dpi
    fig = plt.figure(figsize=(W, H), dpi=dpi)
    cell = cell_width_in(grid, size)
    ncols = len(grid.columns)
    x0 = left + (W - left - ncols * cell - GAP_IN * (ncols - 1)) / 2
    xs = [x0 + k * (cell + GAP_IN) for k in range(ncols)]
    for k, title in enumerate(grid.columns):
        fig.text((xs[k] + cell / 2) / W, 1 - top * 0.45 / H, title, ha="center", va="center", fontsize=font)
    y = H - top  # top edge of the next row, inches from the bottom
    for label, rgb, gt, maps, errors, notes in grid.rows:
        h = cell * rgb.shape[0] / rgb.shape[1]
        panels = [rgb, gt] + list(maps)
        _row(fig, W, H, xs, y - h, cell, h, panels, [""] * 2 + list(notes), font)
        _row(fig, W, H, xs, y - 2 * h - GAP_IN, cell, h, [None, None] + list(errors), [], font)
        fig.text((xs[0] - 0.02) / W, (y - h - GAP_IN / 2) / H, label, rotation=90, ha="right", va="center",
                 fontsize=font * 0.9)
        y -= 2 * h + GAP_IN + SAMPLE_GAP_IN
    top_err = "AbsRel 0-0.5" if grid.task == "depth" else "angular error 0-60°"
    maps_note = f"depth: {DEPTH_COLORMAP} on the GT's range (near = bright)" if grid.task == "depth" else \
        "normals: RGB = (n+1)/2 (x right, y up, z to viewer)"
    fig.text(0.5, footer * 0.45 / H, f"{maps_note}; error rows: {top_err} ({ERROR_COLORMAP}); corner: "
             f"{grid.rank_label.split(': ')[-1]}", ha="center", va="center", fontsize=font * 0.85)
    atomic_save_figure(fig, path, dpi=dpi, metadata={"Software": None})
    plt.close(fig)


def _row(fig, W, H, xs, y, cell, h, panels, notes, font) -> None:
    for k, panel in enumerate(panels):
        if panel is None and k < 2:
            continue  # nothing under the input and the GT in an error row
        ax = fig.add_axes([xs[k] / W, y / H, cell / W, h / H])
        ax.set_axis_off()
        if panel is None:  # a failed sample of this method
            ax.imshow(np.full((2, 2, 3), 200, np.uint8), aspect="auto")
        else:
            ax.imshow(panel, interpolation="nearest", aspect="auto")
        if k < len(notes) and notes[k]:
            ax.text(0.03, 0.04, notes[k], transform=ax.transAxes, fontsize=font * 0.8, color="white",
                    va="bottom", ha="left", bbox={"facecolor": "black", "alpha": 0.55, "pad": 0.6, "linewidth": 0})
