"""A cheap content fingerprint of a checkpoint file or folder, recorded with every result of the weights in it.

A run folder's cached predictions belong to the weights that made them: a retrained checkpoint at the same path
must not resume an old run (harness.run compares this fingerprint). Per file: its path relative to the folder,
its size and the sha256 of its first and last MiB, so multi-GB Stable Diffusion folders cost milliseconds and
any retraining (which changes every weight) is seen.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 20  # bytes read from each end of a file


def _file_digest(path: Path, out: "hashlib._Hash") -> None:
    size = path.stat().st_size
    out.update(f"{size}\n".encode())
    with path.open("rb") as handle:
        out.update(handle.read(_CHUNK))
        if size > 2 * _CHUNK:
            handle.seek(size - _CHUNK)
            out.update(handle.read(_CHUNK))
        elif size > _CHUNK:
            out.update(handle.read())


def weights_fingerprint(path: Path) -> str:
    """16 hex digits over a file, or over every file under a folder (sorted relative paths); "" if absent."""
    path = Path(path)
    if not path.exists():
        return ""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    out = hashlib.sha256()
    for file in files:
        out.update(f"{file.relative_to(path) if file != path else file.name}\n".encode())
        _file_digest(file, out)
    return out.hexdigest()[:16]
