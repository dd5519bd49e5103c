"""What this machine offers a run: cores for workers, installed libraries. The CLI reads it to print its defaults,
so it imports nothing heavy."""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Iterable


def default_workers() -> int:
    """All cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def package_versions(names: Iterable[str]) -> dict[str, str | None]:
    """The installed version of each distribution, None for one that is not installed."""
    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found
