"""The ledger of a prediction output folder: which files `cityseg predict` wrote there, with what settings.

Safety rules for the output folder, because the official matcher walks it recursively and
takes any `<city>_<seq>_<frame>*.png` it finds:

- A manifest `.cityseg-predict.json` records which files this command wrote, with the
  checkpoint's sha256 and the inference settings. PNGs it does not list are never touched
  and make the run stop, naming them.
- PNGs from other settings (another checkpoint, mode, TTA, split) or for frames that are
  not in this run are refused, or deleted with `overwrite=True` (only files the manifest lists).
- Resuming after a kill at any moment is correct: frames are recorded as "pending" in the
  manifest before their files are written, every file is written to a temporary name and
  renamed into place, and a frame is "done" only after all its files exist. A rerun
  recomputes pending frames and skips done frames whose files still match their sha256.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cityseg.data.frames import Frame
from cityseg.data.labelpng import encode_label_png
from cityseg.errors import UserError, format_paths
from cityseg.fileio import atomic_write_bytes, is_name_inside

MANIFEST_NAME = ".cityseg-predict.json"


LOCK_NAME = ".lock-predict"  # held by the one `predict` writing the folder (not a PNG: matchers ignore it)


MANIFEST_FORMAT = "cityseg-predict"


MANIFEST_VERSION = 1


# Settings that change the pixels written; two runs may share a folder only if all are equal.
_COMPARED = ("kind", "split", "checkpoint_sha256", "mode", "tta", "crop", "stride", "scale_size")


# Errors that mean "this folder cannot take the files", as opposed to a bug.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}


def prediction_name(frame_id: str) -> str:
    """The file name the official evaluation and the test server expect for a frame."""
    return f"{frame_id}_leftImg8bit.png"


def color_names(frame_id: str) -> tuple[str, str]:
    """Colour and overlay file names of a frame in the --color-out folder."""
    return f"{frame_id}_color.png", f"{frame_id}_overlay.png"


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so multi-hundred-MB checkpoints stay cheap on memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _png_bytes(array: np.ndarray) -> bytes:
    """Label maps in the fast-to-decode encoding every evaluation reads them in; colour images by PIL."""
    if array.ndim == 2:
        return encode_label_png(array)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_png(path: Path, array: np.ndarray) -> str:
    """Write (H, W) or (H, W, 3) uint8 atomically (temp name not ending in .png); return its sha256."""
    data = _png_bytes(array)
    atomic_write_bytes(path, lambda handle: handle.write(data))
    return hashlib.sha256(data).hexdigest()


@contextmanager
def storage_errors(folder: Path, what: str) -> Iterator[None]:
    """Turn 'disk full' / 'read-only' into a UserError naming the folder instead of a traceback."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _STORAGE_ERRNOS:
            raise
        raise UserError(
            f"could not write {what} to {folder}: {exc.strerror}. Free some space, make the folder writable, "
            "or choose another folder; every file already there is complete, and rerunning the same command "
            "resumes where this one stopped."
        ) from None


class OutputLedger:
    """The manifest of one output folder: which files this command wrote there, and with what settings."""

    def __init__(self, folder: Path, settings: dict[str, Any], names: dict[str, Sequence[str]], what: str) -> None:
        self.folder = Path(folder)
        self.what = what  # "predictions" or "colour images", for error messages
        self.path = self.folder / MANIFEST_NAME
        self.settings = settings
        self.names = {frame_id: list(files) for frame_id, files in names.items()}
        self.entries: dict[str, dict[str, Any]] = {}
        self._recorded: set[str] = set()
        self._discard: list[str] = []
        self._reset = False

    def check(self, overwrite: bool) -> None:
        """Refuse foreign or stale files before anything is changed (in this folder or another one)."""
        if self.folder.exists() and not self.folder.is_dir():
            raise UserError(f"output folder {self.folder} is a file; pass a folder (it is created if missing).")
        manifest = self._load()
        entries: dict[str, dict[str, Any]] = manifest["frames"] if manifest else {}
        recorded = {name for entry in entries.values() for name in entry["files"]}
        foreign = sorted(self._present_pngs() - recorded)
        if foreign:
            raise UserError(
                f"{self.folder} already holds {len(foreign)} PNG file(s) that cityseg predict did not write "
                f"({format_paths(foreign)}). The official evaluation walks this folder and would mix them in, "
                "and they are never deleted automatically: move them away or choose another output folder."
            )
        reasons = self._stale_reasons(manifest, entries)
        ours = sorted(name for name in recorded if (self.folder / name).exists())
        edited = [] if reasons or overwrite else self._edited(entries)
        if edited:
            raise UserError(
                f"{len(edited)} file(s) in {self.folder} changed after `cityseg predict` wrote them (their sha256 no "
                f"longer matches its manifest): {format_paths(self.folder / name for name in edited)}. They are never "
                "replaced silently: pass "
                "--overwrite (overwrite=True) to predict them again, or move them away first to keep them."
            )
        if reasons and ours and not overwrite:
            raise UserError(
                f"{self.folder} holds {len(ours)} file(s) from an earlier `cityseg predict` that cannot be "
                f"mixed with this run: {'; '.join(reasons)}. Pass --overwrite (overwrite=True) to delete "
                "exactly those files and predict again, or choose another output folder."
            )
        self.entries = entries
        self._recorded = recorded
        self._reset = bool(reasons or overwrite)
        self._discard = ours if self._reset else []

    def commit(self) -> set[str]:
        """Delete what `check` condemned, write a fresh manifest; return the ids of finished frames."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for name in self._discard:
            (self.folder / name).unlink(missing_ok=True)
        if self._reset:
            self.entries = {}
        self._remove_temp_files(self._recorded)
        self.flush()
        return {frame_id for frame_id, entry in self.entries.items() if self._is_done(entry)}

    def mark_pending(self, frame_ids: Iterable[str]) -> None:
        """Claim files before writing them, so after a kill their names are known to be ours."""
        for frame_id in frame_ids:
            self.entries[frame_id] = {"state": "pending", "files": dict.fromkeys(self.names[frame_id])}

    def mark_done(self, frame_id: str, files: dict[str, str]) -> None:
        """Record a frame whose files (name -> sha256) are all complete on disk."""
        self.entries[frame_id] = {"state": "done", "files": files}

    def flush(self) -> None:
        """Rewrite the manifest atomically: a kill leaves either the old or the new one."""
        manifest = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "settings": self.settings,
            "frames": self.entries,
        }
        data = json.dumps(manifest, indent=1, sort_keys=True).encode()
        atomic_write_bytes(self.path, lambda handle: handle.write(data))

    def _load(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        try:
            manifest = json.loads(self.path.read_text())
            frames = manifest["frames"]
            valid = manifest.get("format") == MANIFEST_FORMAT and all(
                isinstance(entry["files"], dict) and all(is_name_inside(n) for n in entry["files"])
                for entry in frames.values()
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            valid = False
        if not valid:
            raise UserError(
                f"{self.path} is not a readable cityseg predict manifest, so it is unknown which files in "
                f"{self.folder} this command wrote. Empty that folder yourself or choose another output folder."
            )
        return manifest

    def _present_pngs(self) -> set[str]:
        # Recursive, like the official matcher: a PNG in a subfolder would be matched just the same.
        return {path.relative_to(self.folder).as_posix() for path in self.folder.rglob("*.png")}

    def _stale_reasons(self, manifest: dict[str, Any] | None, entries: dict[str, dict[str, Any]]) -> list[str]:
        """Why files recorded in `manifest` must not be mixed with this run (empty list: they may)."""
        if manifest is None:
            return []
        before = manifest.get("settings", {})
        changed = [key for key in _COMPARED if before.get(key) != self.settings.get(key)]
        reasons = [f"{key} was {before.get(key)!r}, now {self.settings.get(key)!r}" for key in changed]
        if "checkpoint_sha256" in changed:
            reasons.append(f"the earlier checkpoint was {before.get('checkpoint')} (epoch {before.get('epoch')})")
        extra = sorted(frame_id for frame_id in entries if frame_id not in self.names)
        if extra:
            reasons.append(f"{len(extra)} frame(s) are not in this run ({format_paths(extra)})")
        return reasons

    def _remove_temp_files(self, recorded: set[str]) -> None:
        """Delete temp files a killed run left; only names our atomic writer produces for our files."""
        ours = recorded | {name for files in self.names.values() for name in files} | {MANIFEST_NAME}
        pattern = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]+\.tmp$")
        for path in self.folder.rglob(".*.tmp"):  # recursive: `cityseg predict --images` mirrors subfolders
            match = pattern.match(path.name)
            if match and (path.parent / match["name"]).relative_to(self.folder).as_posix() in ours:
                path.unlink(missing_ok=True)

    def _edited(self, entries: dict[str, dict[str, Any]]) -> list[str]:
        """Files of this run's finished frames that exist but no longer hold what was written (someone edited them)."""
        return sorted(
            name
            for key, entry in entries.items()
            if key in self.names and entry.get("state") == "done"
            for name, sha in entry["files"].items()
            if (self.folder / name).is_file() and file_sha256(self.folder / name) != sha
        )

    def _is_done(self, entry: dict[str, Any]) -> bool:
        if entry.get("state") != "done":
            return False
        return all(
            (self.folder / name).is_file() and file_sha256(self.folder / name) == sha
            for name, sha in entry["files"].items()
        )


def check_color_folder(out_dir: Path, color_out: Path | None) -> None:
    """Keep colour images out of the prediction folder (and vice versa): the matcher would see two PNGs per frame."""
    if color_out is None:
        return
    out_abs, color_abs = Path(out_dir).resolve(), Path(color_out).resolve()
    if color_abs == out_abs or color_abs.is_relative_to(out_abs) or out_abs.is_relative_to(color_abs):
        raise UserError(
            f"--color-out {color_out} and the prediction folder {out_dir} are inside one another. The official "
            "evaluation walks the prediction folder recursively and fails when it finds a colour image next to "
            "a prediction of the same frame; put the colour images in a separate folder, e.g. "
            f"{Path(out_dir).resolve().parent / (Path(out_dir).resolve().name + '_color')}."
        )


@contextmanager
def output_locks(folders: list[Path]) -> Iterator[None]:
    """One `predict` per output folder: a second one would rewrite the manifest under the first (see cityseg.locks)."""
    from contextlib import ExitStack

    from cityseg.locks import hold_lock

    with ExitStack() as stack:
        for folder in folders:
            if folder.exists() and not folder.is_dir():
                raise UserError(f"output folder {folder} is a file; pass a folder (it is created if missing).")
            with storage_errors(folder, "the lock file"):
                folder.mkdir(parents=True, exist_ok=True)
                stack.enter_context(
                    hold_lock(
                        folder / LOCK_NAME,
                        f"output folder {folder}",
                        "two predictions into one folder would mix their files and manifests. Wait for it to finish, or "
                        "pass another output folder.",
                    )
                )
        yield


def open_ledgers(
    out_dir: Path, color_out: Path | None, settings: dict[str, Any], frames: list[Frame]
) -> tuple[OutputLedger, OutputLedger | None]:
    """The manifests of the prediction folder and, if asked for, the colour folder."""
    names = {f.id: [prediction_name(f.id)] for f in frames}
    ledger = OutputLedger(out_dir, {**settings, "kind": "labelIds"}, names, "predictions")
    if color_out is None:
        return ledger, None
    color_names_by_id = {f.id: color_names(f.id) for f in frames}
    return ledger, OutputLedger(color_out, {**settings, "kind": "color"}, color_names_by_id, "colour images")


def flush_all(ledgers: list[OutputLedger], after_error: bool) -> None:
    for ledger in ledgers:
        try:
            with storage_errors(ledger.folder, "the manifest"):
                ledger.flush()
        except UserError:
            if not after_error:
                raise  # pending entries in the old manifest make a rerun recompute those frames
