"""Atomic file writes, kept free of heavy imports so worker processes start fast."""

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from cityseg.errors import UserError, name_the_file

FSYNC_ENV = "CITYSEG_FSYNC"


def sync_to_disk(fd: int) -> None:
    """os.fsync(fd), so a finished file survives a power cut, not only a kill; CITYSEG_FSYNC=0 skips it."""
    if os.environ.get(FSYNC_ENV, "1") != "0":
        os.fsync(fd)


def atomic_write_bytes(path: Path, data: bytes | Callable[[BinaryIO], object], tag: str = "") -> None:
    """Write `data` (or call `data(file)`) to a temp file beside `path`, fsync, rename: a kill leaves old or new."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{tag}", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            if callable(data):
                data(handle)
            else:
                handle.write(data)
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
    """{key: relative path, key_bytes, key_mtime_ns}: how cache indexes notice a changed source."""
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


def read_json_dict(path: Path) -> dict | None:
    """A JSON file's top-level object, or None when it is missing, unreadable, not JSON or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; RecursionError: too deep
        return None
    return data if isinstance(data, dict) else None


def is_name_inside(name: str) -> bool:
    """A recorded file name that stays inside its folder (relative, posix, no '..'): deleting it cannot reach out."""
    path = Path(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts and path.as_posix() == name


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically (JSON, CSV, logs that must never be half-written)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def claim_folder(out: Path, marker: str, stamp: dict, what: str, fix: str) -> None:
    """Make `out` ours (with a `marker` JSON) or check that it is; another folder is refused, never emptied."""
    out = Path(out)
    marker_path = out / marker
    if marker_path.is_file():
        if (read_json_dict(marker_path) or {}).get("format") == stamp["format"]:
            return
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
