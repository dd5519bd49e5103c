"""Builds that test files in different pytest-xdist workers read: made once per test session, not once per worker."""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

BUILT_MARK = ".built"


def session_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The temp folder of the whole session: under xdist each worker's base temp is a subfolder of it."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """The folder `build(folder)` filled, built by the first worker that asks; the others wait on a file lock.

    A build that failed half-way is thrown away and tried again by the next caller, so it fails there too
    rather than handing out half a folder. Callers only read the folder (copy it to change anything).
    """
    session = session_folder(tmp_path_factory)
    folder = session / f"shared-{name}"
    with open(session / f".shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this worker dies
        if not (folder / BUILT_MARK).is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / BUILT_MARK).touch()
    return folder
