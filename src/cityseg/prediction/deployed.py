"""Models as `cityseg predict` takes them: a checkpoint file, or a folder written by `cityseg export`.

An export folder holds `model.safetensors` (tensors only, nothing that can run code; its metadata names the
architecture and encoder), `model.onnx` and `card.json` (the training `config`, both files' sha256). Loading a
folder checks card.json's schema and both hashes: a damaged or edited file is refused.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cityseg.errors import UserError, describe_error
from cityseg.labels import NUM_CLASSES
from cityseg.training.checkpoint import check_stored_config
from cityseg.training.model import load_into, load_model, model_of, resolve_device

EXPORT_FORMAT = "cityseg-export"
EXPORT_VERSION = 1
CARD_JSON = "card.json"
CARD_MD = "card.md"
WEIGHTS_FILE = "model.safetensors"
ONNX_FILE = "model.onnx"
_SHA256 = re.compile("[0-9a-f]{64}")
CARD_MAX_BYTES = 1 << 20  # a card is a few kB: anything far larger is not one
_FIX = "export the model again (`cityseg export CHECKPOINT --out FOLDER --overwrite`)"


def read_card(folder: Path) -> dict[str, Any]:
    """card.json of an export folder, its schema checked; any other folder is a UserError saying what to pass."""
    folder = Path(folder)
    path = folder / CARD_JSON
    if not path.is_file():
        inside = [folder / name for name in ("best.pt", "last.pt") if (folder / name).is_file()]
        raise UserError(
            f"{folder} is a folder but not a model exported by `cityseg export` (it has no {CARD_JSON}); pass a "
            f"run's best.pt or last.pt{f' (e.g. {inside[0]})' if inside else ''}, or a folder written by "
            "`cityseg export CKPT --out FOLDER`."
        )
    try:
        if path.stat().st_size > CARD_MAX_BYTES:
            raise ValueError(f"{path.stat().st_size} bytes, where a card has a few thousand")
        card = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than the parser's stack
        raise UserError(f"{path} cannot be read ({describe_error(exc)}); {_FIX}.") from None
    problem = _card_problem(card)
    if problem is not None:
        raise UserError(f"{path} is not a model card this cityseg reads: {problem}; {_FIX}.")
    if card.get("config") is not None:
        check_stored_config(card["config"], path)  # predict reads its training size
    return card


def _card_problem(card: Any) -> str | None:
    """What is wrong with the fields of a parsed card.json that cityseg reads, or None."""
    if not isinstance(card, dict) or card.get("format") != EXPORT_FORMAT:
        return f"it has no '{EXPORT_FORMAT}' format"
    if card.get("format_version") != EXPORT_VERSION:
        return f"its export format version is {card.get('format_version')!r}, this cityseg reads {EXPORT_VERSION}"
    for key, optional in (("files", False), ("config", True), ("source", True)):
        if not isinstance(card.get(key), dict) and not (optional and card.get(key) is None):
            return f"'{key}' is {type(card.get(key)).__name__}, not an object"
    for kind, name in (("weights", WEIGHTS_FILE), ("onnx", ONNX_FILE)):
        entry = card["files"].get(kind)
        if not isinstance(entry, dict) or entry.get("file") != name or not _SHA256.fullmatch(str(entry.get("sha256"))):
            return f"files.{kind} does not record {name} with its sha256"
    epoch = (card.get("source") or {}).get("epoch")
    if epoch is not None and (type(epoch) is not int or not 0 <= epoch < 10**6):
        return f"source.epoch is {epoch!r}, not an epoch number"
    return None


def _read_checked(path: Path, sha256: str | None) -> bytes:
    """The bytes of `path`, refused when they do not hash to the `sha256` card.json records for them."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path} cannot be read ({describe_error(exc)}); {_FIX}.") from None
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise UserError(
            f"{path} is not the file `cityseg export` wrote: its sha256 differs from the one {CARD_JSON} records "
            f"({sha256[:16]}...), so it was changed, damaged or truncated since, and it was not used. Restore the "
            f"folder from a good copy, or {_FIX}."
        )
    return data


def weights_metadata(network: nn.Module) -> dict[str, str]:
    """What model.safetensors records beside the tensors: the format, and smp's architecture and encoder names."""
    return {"format": EXPORT_FORMAT, "arch": type(network).__name__, "encoder": network.config["encoder_name"]}


def load_weights(path: Path, sha256: str | None = None) -> nn.Module:
    """The network (CPU, eval mode) from one read of a model.safetensors (checked against `sha256` when given)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    data = _read_checked(Path(path), sha256)
    try:
        weights = load(data)
        # The header safetensors just checked: 8 bytes of length, then JSON (no arch: an older export's U-Net).
        metadata = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")]).get("__metadata__") or {}
        network = model_of(metadata)
    except (SafetensorError, ValueError, KeyError, RuntimeError) as exc:  # KeyError: smp's unknown encoder
        raise UserError(f"{path} cannot be read as safetensors weights ({describe_error(exc)}); {_FIX}.") from None
    return load_into(network, weights, path, metadata)


def load_network(model_path: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """A checkpoint file or an export folder (model.onnx checked too: the folder is what gets deployed), in eval mode
    on `device`; the state's "sha256" identifies the weights."""
    device = resolve_device(device) if isinstance(device, str) else device
    if not Path(model_path).is_dir():
        return load_model(Path(model_path), device)
    folder = Path(model_path)
    card = read_card(folder)
    files = card["files"]
    _read_checked(folder / ONNX_FILE, files["onnx"]["sha256"])
    model = load_weights(folder / WEIGHTS_FILE, files["weights"]["sha256"])
    epoch = (card.get("source") or {}).get("epoch")
    state = {"config": card.get("config") or {}, "epoch": epoch, "num_classes": NUM_CLASSES}
    return model.to(device), state | {"sha256": files["weights"]["sha256"]}
