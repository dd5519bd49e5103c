"""Atomic file writes, kept free of heavy imports so worker processes start fast."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from cityseg.errors import name_the_file

FSYNC_ENV = "CITYSEG_FSYNC"


def sync_to_disk(fd: int) -> None:
    """os.fsync(fd), so a finished file survives a power cut, not only a kill; CITYSEG_FSYNC=0 skips it."""
    if os.environ.get(FSYNC_ENV, "1") != "0":
        os.fsync(fd)


def atomic_write_bytes(path: Path, write: Callable[[BinaryIO], object], tag: str = "") -> None:
    """Call `write(file_object)` on a temp file beside `path` (`.<name>.<tag><random>.tmp`), fsync it, rename it over
    `path`: a crash, kill or full disk leaves the old file or the new one; `tag` marks the caller's temp files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{tag}", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            sync_to_disk(handle.fileno())
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)
        os.replace(tmp_name, path)
    except OSError as exc:
        Path(tmp_name).unlink(missing_ok=True)
        raise name_the_file(exc, path) from exc
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def source_fingerprint(key: str, path: Path, root: Path) -> dict[str, object]:
    """{key: path relative to ROOT, key_bytes, key_mtime_ns}: what the caches' indexes record to notice that
    a source file changed, without decoding it (sizes and mtime None for a file that is gone)."""
    fields: dict[str, object] = {key: os.path.relpath(path, root), f"{key}_bytes": None, f"{key}_mtime_ns": None}
    try:
        stat = Path(path).stat()
    except FileNotFoundError:
        return fields
    fields[f"{key}_bytes"], fields[f"{key}_mtime_ns"] = stat.st_size, stat.st_mtime_ns
    return fields


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so large checkpoints stay cheap on memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_name_inside(name: str) -> bool:
    """A recorded file name that stays inside its folder (relative, posix, no '..'): deleting it cannot reach out."""
    path = Path(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts and path.as_posix() == name


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically (JSON, CSV, logs that must never be half-written)."""
    data = text.encode("utf-8")
    atomic_write_bytes(path, lambda handle: handle.write(data))


def claim_folder(out: Path, marker: str, stamp: dict, what: str, fix: str) -> None:
    """Make `out` ours (create it with a `marker` JSON holding `stamp`) or check that it already is: a folder the
    user pointed at by mistake is refused (UserError naming `what` it is not and the `fix`), never emptied."""
    from cityseg.errors import UserError

    out = Path(out)
    marker_path = out / marker
    if marker_path.is_file():
        try:
            if json.loads(marker_path.read_text()).get("format") == stamp["format"]:
                return
        except (OSError, ValueError):
            pass
    elif out.exists() and not out.is_dir():
        raise UserError(f"{what} path {out} is a file; {fix}")
    # temp files of a claim another process is making right now (DDP ranks) do not count as content
    elif not out.exists() or not [p for p in out.iterdir() if not p.name.startswith(f".{marker}.")]:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(marker_path, json.dumps(stamp, indent=1) + "\n")
        return
    raise UserError(
        f"{out} is not empty and has no valid {marker}, so it is not a {what}; cityseg will not write or delete "
        f"anything there. {fix}"
    )


@contextlib.contextmanager
def folder_lock(folder: Path, name: str) -> Iterator[None]:
    """Serialise writers of one entry in `folder` (DDP ranks, two notebooks); see cityseg.locks.wait_lock."""
    from cityseg.locks import wait_lock

    with wait_lock(Path(folder) / f".lock-{name}", f"{Path(folder) / name}, which another process is writing"):
        yield
