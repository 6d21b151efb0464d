"""Tiny-world scenes rendered in chunks and stacked (a training pool's parts), and the worker process of the
parallel pool renderer (``harness.pool.render_arrays`` starts one per CPU):

    python -m datasets.render_chunks SPLIT SEED SIZE OUT_DIR START:STOP [START:STOP ...]

Each chunk is written to OUT_DIR/<START>.npz (atomically: a reader never sees half a file). A plain process rather
than multiprocessing, so nothing depends on how the parent was started (a script, ``python -m``, stdin, a notebook)
and the worker imports numpy only.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from datasets.synthetic import render


def render_stack(split: str, start: int, stop: int, seed: int = 0, size: int = 64) -> dict[str, np.ndarray]:
    """Scenes start..stop-1 of ``split`` at size x size, stacked: rgb uint8 [N,H,W,3], depth float32 [N,H,W] m,
    normals float32 [N,H,W,3], valid bool [N,H,W], outdoor bool [N]."""
    samples = [render(split, i, seed=seed, height=size, width=size) for i in range(start, stop)]
    return {
        "rgb": np.stack([s.rgb for s in samples]),
        "depth": np.stack([s.depth for s in samples]).astype(np.float32),
        "normals": np.stack([s.normals for s in samples]).astype(np.float32),
        "valid": np.stack([s.valid for s in samples]),
        "outdoor": np.array([s.meta.get("scene_type") == "outdoor" for s in samples]),
    }


def main(argv: list[str]) -> None:
    split, seed, size, out = argv[0], int(argv[1]), int(argv[2]), Path(argv[3])
    for chunk in argv[4:]:
        start, stop = (int(x) for x in chunk.split(":"))
        arrays = render_stack(split, start, stop, seed, size)
        partial = out / f"{start}.partial.npz"
        np.savez(partial, **arrays)
        os.replace(partial, out / f"{start}.npz")


if __name__ == "__main__":
    main(sys.argv[1:])
