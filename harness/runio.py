"""Files of a run folder, written so that a kill at any moment loses nothing that finished.

Whole files are written to a temporary name and renamed (atomic on POSIX); per-sample rows are appended one JSON
line at a time and flushed to disk, and a torn last line (a kill mid-write) is ignored on reading.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable, Iterable

import numpy as np


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def atomic_torch_save(obj, path: Path) -> None:
    """torch.save to a temporary name, then renamed over ``path``."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_save_figure(fig, path: Path, **savefig_options) -> None:
    """A matplotlib figure saved as PNG under a temporary name, then renamed over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.png")
    fig.savefig(tmp, **savefig_options)
    os.replace(tmp, path)


def swap_in_folder(tmp: Path, final: Path) -> None:
    """Replace the folder ``final`` by the finished folder ``tmp``: final is renamed to ``<final>.old``, tmp to final,
    and the old one removed. A kill between the two renames leaves only ``<final>.old``, which
    ``restore_interrupted_swap`` puts back."""
    old = final.with_name(final.name + ".old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def restore_interrupted_swap(final: Path) -> None:
    """Put back ``<final>.old`` when a kill in ``swap_in_folder`` left it without ``final``."""
    old = final.with_name(final.name + ".old")
    if not final.exists() and old.is_dir():
        os.replace(old, final)


def write_folder_atomically(final: Path, write: Callable[[Path], None]) -> None:
    """``write(folder)`` fills a fresh hidden sibling of ``final``, which then replaces ``final`` whole: a kill while
    writing leaves ``final`` as it was (or absent), never half written."""
    restore_interrupted_swap(final)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    swap_in_folder(tmp, final)


def drop_torn_tail(path: Path) -> None:
    """Cut a partial last line (left by a kill mid-append) so the next append starts on a fresh line."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    with path.open("r+b") as f:
        f.truncate(data.rfind(b"\n") + 1)


def append_jsonl(path: Path, rows: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    drop_torn_tail(path)
    with path.open("a") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_json_object(path: Path, fix: str) -> dict:
    """A JSON file holding one object; anything else raises ValueError naming the file and ``fix``."""
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is damaged (not valid JSON: {err}); {fix}") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path} is damaged (holds a JSON {type(record).__name__}, not an object); {fix}")
    return record


def read_jsonl(path: Path) -> list[dict]:
    """All complete rows; a torn final line (from a kill mid-append) is dropped, anything else malformed raises."""
    if not path.is_file():
        return []
    lines = path.read_text().split("\n")
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # last line without newline: torn write
                continue
            raise ValueError(f"{path}: line {i + 1} is not valid JSON; the file is damaged") from None
    return rows


def keep_jsonl_rows(path: Path, keep: Callable[[dict], bool]) -> None:
    """Rewrite ``path`` atomically with only the rows ``keep`` accepts (a resumed training drops the rows it logged
    after its last checkpoint, since it logs them again)."""
    rows = [row for row in read_jsonl(path) if keep(row)]
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
