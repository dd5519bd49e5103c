"""What produced a run (code version, library versions, hardware), stored in config.json so a report can say
which code, data and machine made a number without guessing."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

import torch

import cityseg

_PACKAGES = ("torch", "torchvision", "segmentation-models-pytorch", "cityscapesscripts", "numpy", "scikit-learn")


def git_info() -> dict[str, Any]:
    """Commit sha of cityseg's checkout and whether it had uncommitted changes; None values outside a checkout."""
    path = Path(cityseg.__file__).resolve().parent
    try:
        sha = _git(path, "rev-parse", "HEAD")
        dirty = bool(_git(path, "status", "--porcelain"))
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}
    return {"sha": sha, "dirty": dirty}


def _git(path: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, timeout=10, check=True)
    return result.stdout.strip()


def versions() -> dict[str, str | None]:
    """Versions of Python, cityseg and the libraries whose behaviour the numbers depend on."""
    found: dict[str, str | None] = {"python": platform.python_version(), "cityseg": cityseg.__version__}
    for package in _PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    found["cuda"] = torch.version.cuda
    found["cudnn"] = str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None
    return found


def hardware(device: torch.device | str) -> dict[str, Any]:
    """The machine and accelerator a run used, in words a reader can compare across runs."""
    device = torch.device(device)
    info: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "device": str(device),
        "gpu": None,
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    return info


def collect(device: torch.device | str, data_root: Path, world_size: int = 1) -> dict[str, Any]:
    """Everything config.json records besides the config itself."""
    data_root = Path(data_root)
    return {
        "git": git_info(),
        "versions": versions(),
        "hardware": hardware(device),
        "world_size": world_size,
        "data_root": str(data_root.resolve()),
        "synthetic": (data_root / "SYNTHETIC.json").is_file(),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
