"""Reading a folder written by `cityseg export` back as a model, so `cityseg predict` takes it like a checkpoint.

The folder holds `model.safetensors` (the network's tensors only: no optimizer, no pickle, nothing
that can run code), `model.onnx` and `card.json`, whose `config` is the training config the
prediction settings (the training scale) come from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cityseg.errors import UserError, describe_error
from cityseg.labels import NUM_CLASSES
from cityseg.training.checkpoint import ARCHITECTURE, check_stored_config

EXPORT_FORMAT = "cityseg-export"
EXPORT_VERSION = 1
CARD_JSON = "card.json"
CARD_MD = "card.md"
WEIGHTS_FILE = "model.safetensors"
ONNX_FILE = "model.onnx"


def weights_path(model_path: Path) -> Path:
    """The file whose bytes identify a model: the checkpoint itself, or an export folder's safetensors."""
    model_path = Path(model_path)
    return model_path / WEIGHTS_FILE if model_path.is_dir() else model_path


def read_card(folder: Path) -> dict[str, Any]:
    """card.json of an export folder; a folder that is not one is a UserError saying what to pass."""
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
        card = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} cannot be read ({describe_error(exc)}); export the model again.") from None
    if not isinstance(card, dict) or card.get("format") != EXPORT_FORMAT:
        raise UserError(f"{path} is not a cityseg model card (no '{EXPORT_FORMAT}' format); export the model again.")
    if card.get("format_version") != EXPORT_VERSION:
        raise UserError(
            f"{path} has export format version {card.get('format_version')!r}; this cityseg reads version "
            f"{EXPORT_VERSION}. Export the model again with this version of cityseg."
        )
    if card.get("config") is not None:
        check_stored_config(card["config"], path)  # predict reads its training size
    return card


def load_weights(path: Path) -> nn.Module:
    """The network (CPU, eval mode) from a model.safetensors; anything else is a UserError naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from cityseg.training.model import build_model

    try:
        weights = load_file(path, device="cpu")
    except (OSError, SafetensorError) as exc:
        raise UserError(
            f"{path} cannot be read as safetensors weights ({describe_error(exc)}); export the model again."
        ) from None
    model = build_model(encoder_weights=None, num_classes=NUM_CLASSES)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError:
        raise UserError(
            f"{path} does not hold {ARCHITECTURE} weights with {NUM_CLASSES} classes; export the model again "
            "with this version of cityseg."
        ) from None
    return model.eval()


def load_exported(folder: Path, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """The network of an export folder in eval mode on `device`, and a checkpoint-like state (config, epoch)."""
    folder = Path(folder)
    card = read_card(folder)
    model = load_weights(folder / WEIGHTS_FILE)
    source = card.get("source") or {}
    state = {"config": card.get("config") or {}, "epoch": source.get("epoch"), "num_classes": NUM_CLASSES}
    return model.to(device), state
