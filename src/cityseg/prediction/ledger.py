"""The ledger of a prediction output folder: which files `cityseg predict` wrote there, with what settings.
Only files the ledger lists are ever replaced or deleted; other PNGs stop the run. The manifest is rewritten at a
run's start and end, and each claim and finished file is one fsynced journal line, so a kill resumes cleanly."""

import errno
import functools
import hashlib
import io
import json
import os
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cityseg.data.labelpng import encode_label_png
from cityseg.errors import UserError, format_paths
from cityseg.fileio import atomic_write_bytes, file_sha256, is_name_inside, sync_to_disk

MANIFEST_NAME = ".cityseg-predict.json"
JOURNAL_NAME = ".cityseg-predict.jsonl"
LOCK_NAME = ".lock-predict"  # held by the one `predict` writing the folder (not a PNG: matchers ignore it)
MANIFEST_FORMAT = "cityseg-predict"
MANIFEST_VERSION = 2  # 2 adds the run token and the journal; version 1 manifests are still read
# Settings that change the pixels written; two runs may share a folder only if all are equal.
COMPARED = ("kind", "split", "checkpoint_sha256", "mode", "tta", "crop", "stride", "scale_size", "precision")
# Errors that mean "this folder cannot take the files", as opposed to a bug.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}
_SCALARS = (str, int, float, bool, type(None))


def prediction_name(frame_id: str) -> str:
    """The file name the official evaluation and the test server expect for a frame."""
    return f"{frame_id}_leftImg8bit.png"


def color_names(frame_id: str) -> tuple[str, str]:
    """Colour and overlay file names of a frame in the --color-out folder."""
    return f"{frame_id}_color.png", f"{frame_id}_overlay.png"


def _png_bytes(array: np.ndarray) -> bytes:
    """Label maps in the encoding every evaluation reads them in; colour images by PIL."""
    if array.ndim == 2:
        return encode_label_png(array)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


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


def _storage_errors_named(method: Callable) -> Callable:
    """The ledger method, its 'disk full' / 'read-only' errors naming the ledger's folder."""

    @functools.wraps(method)
    def wrapped(self: "OutputLedger", *args: Any, **kwargs: Any) -> Any:
        with storage_errors(self.folder, self.what):
            return method(self, *args, **kwargs)

    return wrapped


def _valid_entry(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and entry.get("state") in ("pending", "done")
        and isinstance(entry.get("files"), dict)
        and all(is_name_inside(name) and isinstance(sha, (str, type(None))) for name, sha in entry["files"].items())
    )


def _valid_manifest(manifest: Any) -> bool:
    """The schema a manifest must have before anything in it is used (names stay inside the folder)."""
    return (
        isinstance(manifest, dict)
        and manifest.get("format") == MANIFEST_FORMAT
        and manifest.get("version") in (1, MANIFEST_VERSION)
        and isinstance(manifest.get("token", ""), str)
        and isinstance(manifest.get("settings"), dict)
        and all(
            isinstance(value, _SCALARS) or (isinstance(value, list) and all(isinstance(v, _SCALARS) for v in value))
            for value in manifest["settings"].values()
        )
        and isinstance(manifest.get("frames"), dict)
        and all(_valid_entry(entry) for entry in manifest["frames"].values())
    )


class OutputLedger:
    """The manifest and journal of one output folder (`compared` settings must match)."""

    def __init__(
        self,
        folder: Path,
        settings: dict[str, Any],
        names: dict[str, Sequence[str]],
        what: str = "predictions",
        compared: Sequence[str] = COMPARED,
        keep_others: bool = False,
    ) -> None:
        self.folder, self.path = Path(folder), Path(folder) / MANIFEST_NAME
        self.what = what  # "predictions" or "colour images", for error messages
        self.settings, self.compared, self.keep_others = settings, compared, keep_others
        self.names = {frame_id: list(files) for frame_id, files in names.items()}
        self.entries: dict[str, dict[str, Any]] = {}
        self.token = secrets.token_hex(6)  # this run's: in its temp files' names and its journal's first line
        self._old_token = ""
        self._journal = None
        self._discard: list[str] = []

    @_storage_errors_named
    def check(self, overwrite: bool) -> None:
        """Refuse foreign or stale files before anything is changed (in this folder or another one)."""
        manifest = self._load()
        entries: dict[str, dict[str, Any]] = manifest["frames"] if manifest else {}
        recorded = {name for entry in entries.values() for name in entry["files"]}
        present = {path.relative_to(self.folder).as_posix() for path in self.folder.rglob("*.png")}  # as the matcher
        foreign = sorted(present - recorded)
        if foreign:
            raise UserError(
                f"{self.folder} already holds {len(foreign)} PNG file(s) that cityseg predict did not write "
                f"({format_paths(foreign)}). The official evaluation walks this folder and would mix them in, "
                "and they are never deleted automatically: move them away or choose another output folder."
            )
        reasons = self._stale_reasons(manifest)
        reset = bool(reasons or overwrite)  # every file listed is deleted and predicted again
        ours = sorted(name for name in recorded if (self.folder / name).exists())
        edited = sorted(  # finished files someone changed since (none matter when all are replaced anyway)
            name
            for key, entry in entries.items()
            if not reset and key in self.names and entry["state"] == "done"
            for name, sha in entry["files"].items()
            if (self.folder / name).is_file() and not self._intact(name, sha)
        )
        if edited:
            raise UserError(
                f"{len(edited)} file(s) in {self.folder} changed after `cityseg predict` wrote them (their sha256 no "
                f"longer matches its manifest): {format_paths(self.folder / name for name in edited)}. They are never "
                "replaced silently: pass --overwrite (overwrite=True) to predict them again, or move them away first "
                "to keep them."
            )
        if reasons and ours and not overwrite:
            raise UserError(
                f"{self.folder} holds {len(ours)} file(s) from an earlier `cityseg predict` that cannot be "
                f"mixed with this run: {'; '.join(reasons)}. Pass --overwrite (overwrite=True) to delete "
                "exactly those files and predict again, or choose another output folder."
            )
        self._old_token = manifest.get("token", "") if manifest else ""
        self.entries = {} if reset else entries
        self._discard = ours if reset else []  # deleted by commit

    @_storage_errors_named
    def commit(self) -> set[str]:
        """Delete what `check` condemned and the last run's temp files, start a fresh journal; return finished ids."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for name in self._discard:
            (self.folder / name).unlink(missing_ok=True)
        # Temp files a killed run of this ledger left: only names with that run's recorded token.
        leftover = re.compile(rf"^\..+\.{self._old_token}[a-z0-9_]+\.tmp$")
        for path in self.folder.rglob(f".*.{self._old_token}*.tmp") if self._old_token else ():
            if leftover.match(path.name):
                path.unlink(missing_ok=True)
        self._write_manifest()  # names this run's token before any of its temp files exists
        self._journal = open(self.folder / JOURNAL_NAME, "wb")  # noqa: SIM115 - appended to until close()
        self._append({"token": self.token})
        done = {key: entry["files"] for key, entry in self.entries.items() if entry["state"] == "done"}
        return {key for key, files in done.items() if all(self._intact(name, sha) for name, sha in files.items())}

    @_storage_errors_named
    def mark_pending(self, frame_ids: Iterable[str]) -> None:
        """Claim files before writing them, so after a kill their names are known to be ours."""
        claimed = {frame_id: self.names[frame_id] for frame_id in frame_ids}
        for frame_id, names in claimed.items():
            self.entries[frame_id] = {"state": "pending", "files": dict.fromkeys(names)}
        self._append({"pending": claimed})

    @_storage_errors_named
    def mark_done(self, frame_id: str, files: dict[str, str]) -> None:
        """Record a frame whose files (name -> sha256) are all complete on disk."""
        self.entries[frame_id] = {"state": "done", "files": files}
        self._append({"done": frame_id, "files": files})

    @_storage_errors_named
    def write_png(self, name: str, array: np.ndarray) -> str:
        """Write (H, W) or (H, W, 3) uint8 as `name` atomically (temp name with this run's token); its sha256."""
        data = _png_bytes(array)
        atomic_write_bytes(self.folder / name, data, tag=self.token)
        return hashlib.sha256(data).hexdigest()

    @_storage_errors_named
    def close(self) -> None:
        """Fold the journal into the manifest (atomically), then drop the journal."""
        if self._journal is None:
            return
        self._journal.close()
        self._write_manifest()
        (self.folder / JOURNAL_NAME).unlink(missing_ok=True)
        self._journal = None

    def _append(self, record: dict[str, Any]) -> None:
        self._journal.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")
        self._journal.flush()
        sync_to_disk(self._journal.fileno())

    def _write_manifest(self) -> None:
        manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "token": self.token}
        data = json.dumps(manifest | {"settings": self.settings, "frames": self.entries}, indent=1, sort_keys=True)
        data = data.encode()
        atomic_write_bytes(self.path, data, tag=self.token)

    def _load(self) -> dict[str, Any] | None:
        """The manifest with the journal of its run replayed (a torn last line, cut by a kill, is skipped)."""
        if not self.path.exists():
            return None
        try:
            manifest = json.loads(self.path.read_text())
            valid = _valid_manifest(manifest) and self._replay(manifest)
        except (ValueError, TypeError, AttributeError, RecursionError):  # a journal line of the wrong shape
            valid = False
        if not valid:
            raise UserError(
                f"{self.path} (or its journal {JOURNAL_NAME}) is not a readable cityseg predict manifest, so it is "
                f"unknown which files in {self.folder} this command wrote. Empty that folder yourself or choose "
                "another output folder."
            )
        return manifest

    def _replay(self, manifest: dict[str, Any]) -> bool:
        journal = self.folder / JOURNAL_NAME
        if not journal.is_file():
            return True
        lines = journal.read_bytes().split(b"\n")[:-1]  # the last piece has no newline: empty, or torn by a kill
        records = [json.loads(line) for line in lines]
        if not records or records[0] != {"token": manifest.get("token")}:
            return True  # a journal the manifest already holds (killed between the two writes)
        for record in records[1:]:
            claimed = record.get("pending")
            if isinstance(claimed, dict):
                entries = {key: {"state": "pending", "files": dict.fromkeys(names)} for key, names in claimed.items()}
            else:
                entries = {record.get("done"): {"state": "done", "files": record.get("files")}}
            if not all(isinstance(key, str) and _valid_entry(entry) for key, entry in entries.items()):
                return False
            manifest["frames"].update(entries)
        return True

    def _stale_reasons(self, manifest: dict[str, Any] | None) -> list[str]:
        """Why files recorded in `manifest` must not be mixed with this run (empty list: they may)."""
        if manifest is None:
            return []
        before = manifest["settings"]
        changed = [key for key in self.compared if before.get(key) != self.settings.get(key)]
        reasons = [f"{key} was {before.get(key)!r}, now {self.settings.get(key)!r}" for key in changed]
        if "checkpoint_sha256" in changed:
            reasons.append(f"the earlier checkpoint was {before.get('checkpoint')} (epoch {before.get('epoch')})")
        entries = manifest["frames"]
        extra = [] if self.keep_others else sorted(frame_id for frame_id in entries if frame_id not in self.names)
        if extra:
            reasons.append(f"{len(extra)} frame(s) are not in this run ({format_paths(extra)})")
        return reasons

    def _intact(self, name: str, sha: str | None) -> bool:
        return (self.folder / name).is_file() and file_sha256(self.folder / name) == sha


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
            f"{out_abs.parent / (out_abs.name + '_color')}."
        )


def check_output_folder(folder: Path) -> None:
    """Refuse, before anything is created, an output folder that is a file, a dangling link, or below a file."""
    folder = Path(folder)
    blocker = next((path for path in (folder, *folder.parents) if os.path.lexists(path)), None)
    if blocker is None or blocker.is_dir():
        return
    if blocker.is_symlink() and not blocker.exists():
        raise UserError(
            f"the output folder {folder} cannot be created: {blocker} is a symbolic link to {os.readlink(blocker)}, "
            "which does not exist. Create the link's target first, or pass another output folder (--out)."
        )
    raise UserError(
        f"the output folder {folder} cannot be created: {blocker} is a file, not a folder. Pass another output "
        f"folder (--out), or move {blocker} away first; it is left untouched."
    )


@contextmanager
def open_ledgers(ledgers: list[OutputLedger], overwrite: bool) -> Iterator[list[set[str]]]:
    """Lock the ledgers' folders (one `predict` per folder: a second would write the ledger under the first), check
    every one before any is changed, start them and yield each one's finished ids; at the end fold every journal into
    its manifest (after another error, a failure here is left for the rerun)."""
    from cityseg.locks import hold_lock

    for ledger in ledgers:  # every folder is checked before any is created
        check_output_folder(ledger.folder)
    fix = "two predictions into one folder would mix their files and manifests. Wait for it to finish, or pass "
    fix += "another output folder."
    with ExitStack() as stack:
        for folder in (ledger.folder for ledger in ledgers):
            with storage_errors(folder, "the lock file"):
                folder.mkdir(parents=True, exist_ok=True)
                stack.enter_context(hold_lock(folder / LOCK_NAME, f"output folder {folder}", fix))
        for ledger in ledgers:
            ledger.check(overwrite)
        done = [ledger.commit() for ledger in ledgers]
        failed = True
        try:
            yield done
            failed = False
        finally:
            for ledger in ledgers:
                try:
                    ledger.close()
                except UserError:
                    if not failed:
                        raise  # the journal stays and is replayed by the rerun
