"""Checkpoints that are safe to open and never half-written.

A checkpoint is a dict of tensors and plain Python types only, so it loads with `torch.load(weights_only=True)`:
opening a file someone shared cannot run code. Writes are atomic (`fileio`). Format 2 names its model in its
config (arch, encoder); format 1 files (stamped "unet-resnet34") hold the default U-Net and still load.
"""

from __future__ import annotations

import collections
import hashlib
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from cityseg.errors import UserError, describe_error, name_the_file
from cityseg.fileio import atomic_write_bytes
from cityseg.training.config import TrainConfig

__all__ = ["check_stored_config", "load_checkpoint", "read_checkpoint", "save_checkpoint"]

FORMAT = "cityseg-checkpoint"
FORMAT_VERSION = 2
FORMAT_1_ARCHITECTURE = "unet-resnet34"  # format 1's stamp; its configs name no model (the default U-Net)
# torch.load(weights_only=True) is a safe loader only from this torch on: older ones can be made to run
# code by a crafted file (CVE-2025-32434 below 2.6, CVE-2026-24747 / GHSA-63cw-57p8-fm3p below 2.10).
SAFE_TORCH = "2.10"

# What `torch.load(weights_only=True)` rebuilds without running code (exact types: subclasses are refused).
_PLAIN_LEAVES = (type(None), bool, int, float, complex, str, bytes, bytearray, torch.dtype, torch.device, torch.Size)
_PLAIN_MAPPINGS = (dict, collections.OrderedDict, collections.Counter)
_PLAIN_SEQUENCES = (list, tuple, set)


def require_safe_torch(path: Path) -> None:
    """Refuse to open a file a stranger may have made with a torch whose weights-only loader is not safe."""
    if torch.__version__ < SAFE_TORCH:
        raise UserError(
            f"{path} was not opened: torch {torch.__version__} can be made to run code by a crafted checkpoint even "
            f"with weights_only=True (CVE-2025-32434, CVE-2026-24747); cityseg needs torch {SAFE_TORCH} or newer. "
            f"Upgrade it, e.g. `pip install 'torch>={SAFE_TORCH}'`."
        )


def _save_reporting_os_errors(payload: dict[str, Any], handle) -> None:
    """torch.save whose failed write() surfaces as the OSError it was (a full disk), not a RuntimeError."""
    try:
        torch.save(payload, handle)
    except RuntimeError as exc:
        cause = exc.__cause__ or exc.__context__
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise cause from None
        raise


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` (tensors and plain types) atomically, stamped with the format; its config names the model."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **state}
    _check_plain(payload, "state")
    try:
        atomic_write_bytes(Path(path), lambda handle: _save_reporting_os_errors(payload, handle))
    except OSError as exc:  # a full disk fails inside write(), whose error names no file
        named = name_the_file(exc, path)
        if named is exc:
            raise
        raise named from exc


def _check_plain(value: Any, where: str) -> None:
    """Refuse at save time what a weights_only load would refuse, so a run never writes an unloadable file."""
    kind = type(value)
    if kind in _PLAIN_LEAVES or isinstance(value, torch.Tensor):
        return
    if kind in _PLAIN_MAPPINGS:
        for key, item in value.items():
            _check_plain(key, f"{where} key {key!r}")
            _check_plain(item, f"{where}[{key!r}]")
        return
    if kind in _PLAIN_SEQUENCES:
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
        return
    raise TypeError(
        f"checkpoint entry {where} is a {kind.__module__}.{kind.__qualname__}; checkpoints hold only tensors and "
        "plain Python types (convert numpy values with .tolist() or float(), paths with str())."
    )


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A cityseg checkpoint loaded with `weights_only=True`; anything else is a clear `UserError`."""
    return read_checkpoint(path, map_location)[0]


def read_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], str]:
    """`load_checkpoint` and the file's sha256, from one read (hash, CRC check and load share it)."""
    path = Path(path)
    if path.is_dir():
        inside = [name for name in ("best.pt", "last.pt") if (path / name).is_file()]
        hint = f", e.g. {path / inside[0]}" if inside else ""
        raise UserError(f"checkpoint {path} is a folder, not a file; pass a checkpoint file inside a run folder{hint}.")
    if not path.is_file():
        kind = "is a broken link" if path.is_symlink() else "does not exist"
        raise UserError(f"checkpoint {path} {kind}; pass the best.pt or last.pt of a run folder.")
    require_safe_torch(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"checkpoint {path} cannot be read ({describe_error(exc)}); check its permissions.") from None
    if not data:
        raise UserError(f"checkpoint {path} is empty (0 bytes); pass the best.pt or last.pt of a finished run.")
    _check_crcs(data, path)
    try:
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(
            f"{path} is not a plain-tensor cityseg checkpoint, so it was not opened: it holds objects other than "
            f"tensors and plain values, which could run code when loaded ({_unpickler_reason(exc)}), or it is "
            "damaged. Use a best.pt or last.pt written by cityseg."
        ) from None
    except Exception as exc:  # the unpickler raises many kinds (IndexError on text files, EOFError, ...)
        raise UserError(
            f"{path} cannot be read as a checkpoint ({describe_error(exc)}); "
            "it may be truncated or not a checkpoint. Use a best.pt or last.pt written by cityseg."
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is not a cityseg checkpoint (no '{FORMAT}' marker); pass a run's best.pt or last.pt.")
    version = state.get("format_version")
    if version not in (1, FORMAT_VERSION):
        newer = type(version) is int and version > FORMAT_VERSION
        fix = (
            "written by a newer cityseg: upgrade cityseg to use it" if newer else "damaged or edited: use another copy"
        )
        raise UserError(
            f"{path} is a cityseg checkpoint of format version {version!r}, but this cityseg reads versions 1 to "
            f"{FORMAT_VERSION}; it was {fix}."
        )
    if version == 1 and state.get("arch") != FORMAT_1_ARCHITECTURE:
        raise UserError(
            f"{path} holds a {state.get('arch')!r} model, but format 1 checkpoints hold {FORMAT_1_ARCHITECTURE!r}; "
            "it was edited or damaged: use another copy."
        )
    if state.get("config") is not None:
        check_stored_config(state["config"], path)
    return state, hashlib.sha256(data).hexdigest()


def check_stored_config(config: Any, path: Path) -> None:
    """Every load path sees a valid training config (predict reads its size, resume its settings)."""
    try:
        TrainConfig.from_dict(config)
    except UserError as exc:
        raise UserError(
            f"the training config stored in {path} is malformed ({exc}); the file was edited or damaged. "
            "Use an unedited copy (a run's best.pt or last.pt, or a fresh `cityseg export`)."
        ) from None


def _unpickler_reason(exc: pickle.UnpicklingError) -> str:
    """What torch's refusal names (e.g. 'Unsupported global: GLOBAL os.system'), minus its unsafe advice."""
    text = str(exc)
    if "WeightsUnpickler error:" not in text:
        return "it is not a weights-only pickle"
    detail = text.split("WeightsUnpickler error:", 1)[1].strip()
    first = detail.splitlines()[0] if detail else "unsupported content"
    return first.split(" was not an allowed global")[0].strip()


def _check_crcs(data: bytes, path: Path) -> None:
    """Refuse a checkpoint whose stored CRCs do not match: torch.load would silently load flipped weights."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - not a readable zip (truncated, or not a checkpoint): torch.load says so below
        return
    for info in archive.infolist():
        if info.CRC == 0:
            continue  # torch can be told not to record CRCs (serialization compute_crc32=False)
        try:
            archive.read(info)  # zipfile compares the CRC when it reads a member to its end
        except Exception as exc:  # noqa: BLE001 - a damaged archive fails in many ways (BadZipFile, zlib, ...)
            raise UserError(
                f"checkpoint {path} is damaged: its part {info.filename} does not read back as written "
                f"({describe_error(exc)}), so the file changed on disk or in a copy. Use another copy, or the "
                "run's other checkpoint (best.pt or last.pt)."
            ) from None
