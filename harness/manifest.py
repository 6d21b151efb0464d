"""What a run folder records about how its numbers were made."""
from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

PACKAGES = ("torch", "diffusers", "transformers", "accelerate", "numpy", "scipy", "pandas", "h5py",
            "opencv-python-headless", "safetensors")


def git_commit() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (commit or "unknown") + ("+dirty" if dirty else "")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def device_description(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} torch threads)"


def list_fingerprint(ids: list[str]) -> str:
    """First 16 hex digits of sha256 over the sorted sample list joined by newlines (protocol.md)."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


def stable_seed(text: str) -> int:
    """A 63-bit seed from a string: first 8 bytes of its sha256, little-endian, halved (same on every platform)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def config_key(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def settings_change(before: dict, now: dict) -> str:
    """The settings that differ, as "key: old -> new, ..." ("" when none do)."""
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    return ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed)
