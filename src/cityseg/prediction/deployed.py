"""Models as `cityseg predict` takes them: a checkpoint file, or a folder written by `cityseg export`.

An export folder holds `model.safetensors` (the network's tensors only: nothing that can run code; its metadata
names the architecture and encoder), `model.onnx` and `card.json`, whose `config` is the training config the
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
from cityseg.training.checkpoint import check_stored_config
from cityseg.training.model import load_into, load_model, model_of, resolve_device

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


def weights_metadata(network: nn.Module) -> dict[str, str]:
    """What model.safetensors records beside the tensors: the format, and smp's architecture and encoder names."""
    return {"format": EXPORT_FORMAT, "arch": type(network).__name__, "encoder": network.config["encoder_name"]}


def load_weights(path: Path) -> nn.Module:
    """The network (CPU, eval mode) from a model.safetensors; anything else is a UserError naming the file."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}  # exports before arch and encoder were recorded hold the U-Net
        weights = load_file(path, device="cpu")
    except (OSError, SafetensorError) as exc:
        raise UserError(
            f"{path} cannot be read as safetensors weights ({describe_error(exc)}); export the model again."
        ) from None
    return load_into(model_of(metadata), weights, path, metadata)


def load_exported(folder: Path, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """The network of an export folder in eval mode on `device`, and a checkpoint-like state (config, epoch)."""
    folder = Path(folder)
    card = read_card(folder)
    model = load_weights(folder / WEIGHTS_FILE)
    source = card.get("source") or {}
    state = {"config": card.get("config") or {}, "epoch": source.get("epoch"), "num_classes": NUM_CLASSES}
    return model.to(device), state


def load_network(model_path: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """A checkpoint file (cityseg.training.model.load_model) or an export folder, in eval mode on `device`."""
    device = resolve_device(device) if isinstance(device, str) else device
    if Path(model_path).is_dir():
        return load_exported(Path(model_path), device)
    return load_model(Path(model_path), device)
