"""Checkpoints that are safe to open and never half-written.

A checkpoint is a dict of tensors and plain Python types only, so it loads with
`torch.load(weights_only=True)`: opening a file someone shared cannot run code.
Writes go to a temporary file in the same folder and are renamed into place, so a
crash or a full disk leaves the previous checkpoint intact.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from cityseg.errors import UserError
from cityseg.fileio import atomic_write_bytes

__all__ = ["atomic_write_bytes", "load_checkpoint", "save_checkpoint"]

FORMAT = "cityseg-checkpoint"
FORMAT_VERSION = 1
ARCHITECTURE = "unet-resnet34"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` (tensors and plain types) atomically, stamped with format and architecture."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "arch": ARCHITECTURE, **state}
    atomic_write_bytes(Path(path), lambda handle: torch.save(payload, handle))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a cityseg checkpoint with `weights_only=True`; anything else is a clear `UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; pass the best.pt or last.pt of a run folder.")
    if path.stat().st_size == 0:
        raise UserError(f"checkpoint {path} is empty (0 bytes); pass the best.pt or last.pt of a finished run.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(
            f"{path} is not a plain-tensor cityseg checkpoint and was not opened, because loading it would "
            f"run code it contains ({str(exc).splitlines()[0]}). Use a best.pt or last.pt written by cityseg."
        ) from None
    except Exception as exc:  # the unpickler raises many kinds (IndexError on text files, EOFError, ...)
        raise UserError(
            f"{path} cannot be read as a checkpoint ({exc.__class__.__name__}: {str(exc).splitlines()[0]}); "
            "it may be truncated or not a checkpoint. Use a best.pt or last.pt written by cityseg."
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is not a cityseg checkpoint (no '{FORMAT}' marker); pass a run's best.pt or last.pt.")
    if state.get("arch") != ARCHITECTURE:
        raise UserError(
            f"{path} holds a {state.get('arch')!r} model, but cityseg builds {ARCHITECTURE!r}; "
            "use a checkpoint trained by this version of cityseg."
        )
    return state
