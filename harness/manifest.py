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


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name (Linux: /proc/cpuinfo's first "model name"), else what ``platform`` knows."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description(device: str) -> str:
    """The GPU's name, or the CPU's model, architecture and the vector kernels torch picked (AVX2, AVX512...):
    they set the float rounding. With the same packages, the tiny world's summary moved by up to 4.8e-5 relative
    between the AMD and Intel CPUs this project ran on, and a training's losses drift apart (README)."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    get_capability = getattr(torch.backends.cpu, "get_cpu_capability", None)  # torch >= 2.1
    kernels = f", {get_capability()} kernels" if get_capability else ""
    return f"{cpu_model()}, {platform.machine()}{kernels} ({torch.get_num_threads()} torch threads)"


def list_fingerprint(ids: list[str]) -> str:
    """First 16 hex digits of sha256 over the sorted sample list joined by newlines (protocol.md)."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


def stable_seed(text: str) -> int:
    """A 63-bit seed from a string: first 8 bytes of its sha256, little-endian, halved (same on every platform)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def config_key(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def without_unset(settings: dict, added_later: tuple[str, ...]) -> dict:
    """``settings`` less the ``added_later`` keys that are unset (falsy): options added after results were recorded
    enter a key or a resume check only when used, so what was recorded before them still matches."""
    return {k: v for k, v in settings.items() if k not in added_later or v}


def refuse_replacing(target, what: str, change: str, option: str) -> None:
    """FileExistsError when ``change`` (a :func:`settings_change`) is not empty: ``target`` holds ``what`` (e.g. "a
    checkpoint trained") with other settings, and ``option`` writes elsewhere instead."""
    if change:
        raise FileExistsError(f"{target} holds {what} with other settings ({change}); write this one elsewhere with "
                              f"{option} (or move that away to replace it)")


def refuse_unrecorded_folder(folder, record: str, option: str) -> None:
    """FileExistsError when ``folder`` holds files but not ``record`` (the file this command writes into each folder
    it makes, e.g. training_summary.json): it is not one of ours, and replacing it would delete what it holds."""
    folder = Path(folder)
    if folder.is_dir() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} exists and holds no {record}, so this command did not write it and will not "
                              f"replace it: choose another {option} or move that folder away")


def settings_change(before: dict, now: dict) -> str:
    """The settings that differ, as "key: old -> new, ..." ("" when none do)."""
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    return ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed)
