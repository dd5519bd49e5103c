"""The network: segmentation_models_pytorch U-Net with a ResNet-34 encoder and 19 output classes.

Encoder weights come from smp's Hugging Face hub copy ("imagenet"), from a local torchvision-format
resnet34 state dict (for machines without internet), or nowhere (random init, e.g. before loading a
checkpoint). Input sides must be multiples of 32.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cityseg.errors import UserError, describe_error
from cityseg.labels import NUM_CLASSES

ENCODER = "resnet34"


def _hub_errors() -> tuple[type[BaseException], ...]:
    """Exception types a failed hub download raises (offline, proxy, HTTP error)."""
    errors: list[type[BaseException]] = [OSError, ConnectionError, TimeoutError]
    try:
        from huggingface_hub.errors import HfHubHTTPError

        errors.append(HfHubHTTPError)
    except ImportError:  # pragma: no cover - older hub versions
        pass
    for client in ("httpx", "httpx2"):  # the hub's HTTP client, depending on its version
        try:
            errors.append(importlib.import_module(client).HTTPError)
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _unet(encoder_weights: str | None, num_classes: int) -> nn.Module:
    import segmentation_models_pytorch as smp

    return smp.Unet(ENCODER, encoder_weights=encoder_weights, classes=num_classes)


def _build_imagenet(num_classes: int) -> nn.Module:
    try:
        return _unet("imagenet", num_classes)
    except _hub_errors() as exc:
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise UserError(
            f"could not get the ImageNet resnet34 encoder weights from the Hugging Face hub{offline}: "
            f"{describe_error(exc)}. Without internet, either "
            "train from scratch with `--encoder-weights none`, or pass `--encoder-weights PATH` with a local "
            "torchvision resnet34 state dict (torchvision.models.resnet34(weights='IMAGENET1K_V1').state_dict() "
            "saved with torch.save), or pre-fill the Hugging Face cache with smp-hub/resnet34.imagenet on a "
            "connected machine and set HF_HUB_OFFLINE=1."
        ) from None


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A plain {name: tensor} dict from a local file, opened without running code."""
    if not path.is_file():
        raise UserError(
            f"encoder weights file {path} does not exist; pass a torchvision resnet34 state dict saved with "
            "torch.save, 'imagenet', or 'none'."
        )
    from cityseg.training.checkpoint import require_safe_torch

    require_safe_torch(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load fails on foreign files with many types (even IndexError)
        raise UserError(
            f"cannot read encoder weights {path} as a tensor-only state dict "
            f"({describe_error(exc)}); save one with "
            "torch.save(torchvision.models.resnet34(...).state_dict(), PATH)."
        ) from None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(
            f"{path} is not a state dict (a dict of tensors); save one with "
            "torch.save(torchvision.models.resnet34(...).state_dict(), PATH)."
        )
    return state


def _load_local_encoder(model: nn.Module, path: Path) -> None:
    state = {k: v for k, v in _read_state_dict(path).items() if not k.startswith("fc.")}
    try:
        model.encoder.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise UserError(
            f"{path} is not a torchvision resnet34 state dict: its tensors do not match the resnet34 encoder "
            f"({detail}). Pass resnet34 weights (e.g. not resnet18/50), 'imagenet', or 'none'."
        ) from None


def build_model(encoder_weights: str | Path | None = "imagenet", num_classes: int = NUM_CLASSES) -> nn.Module:
    """U-Net/ResNet-34 with encoder weights from the hub ("imagenet"), a local resnet34 state dict, or none."""
    if isinstance(encoder_weights, str) and encoder_weights == "imagenet":
        return _build_imagenet(num_classes)
    model = _unet(None, num_classes)
    if encoder_weights is not None and str(encoder_weights).lower() not in ("none", ""):
        _load_local_encoder(model, Path(encoder_weights))
    return model


_CHECKED_WEIGHTS: set[str] = set()


def check_encoder_weights(encoder_weights: str | Path | None) -> None:
    """Fail before a run writes anything when its encoder weights cannot be had (hub offline, bad local file).

    Builds the model once (the hub download is cached for the real build); a success is remembered.
    """
    key = "none" if encoder_weights is None else str(encoder_weights)
    if key.lower() in ("none", "") or key in _CHECKED_WEIGHTS:
        return
    build_model(encoder_weights)
    _CHECKED_WEIGHTS.add(key)


def _strip_wrappers(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Drop DDP's 'module.' and torch.compile's '_orig_mod.' prefixes so any saved wrapper loads."""
    for prefix in ("module.", "_orig_mod."):
        if state_dict and all(k.startswith(prefix) for k in state_dict):
            state_dict = {k[len(prefix) :]: v for k, v in state_dict.items()}
    return state_dict


def load_model(checkpoint: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the network from a cityseg checkpoint or `cityseg export` folder (no download) in eval mode on `device`."""
    from cityseg.training.checkpoint import load_checkpoint

    if Path(checkpoint).is_dir():
        from cityseg.training.deployed import load_exported

        return load_exported(Path(checkpoint), resolve_device(device) if isinstance(device, str) else device)
    state = load_checkpoint(Path(checkpoint), map_location="cpu")
    weights = state.get("model")
    if state.get("num_classes") != NUM_CLASSES or not isinstance(weights, dict):
        raise UserError(
            f"{checkpoint} is a checkpoint of another architecture or class count "
            f"(num_classes={state.get('num_classes')!r}, expected {NUM_CLASSES}); use a run of this cityseg version."
        )
    model = build_model(encoder_weights=None)
    try:
        model.load_state_dict(_strip_wrappers(weights), strict=True)
    except RuntimeError:
        raise UserError(
            f"{checkpoint} is a checkpoint of another architecture or class count: its weights do not fit "
            f"U-Net/{ENCODER} with {NUM_CLASSES} classes; use a best.pt or last.pt of a cityseg run."
        ) from None
    device = resolve_device(device) if isinstance(device, str) else device
    return model.to(device).eval(), state


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when present, else CPU; an explicit device that is not there is a UserError, not a crash."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                f"device {name!r} was requested but this machine has no usable CUDA GPU; use --device cpu or auto."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(
                f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                f"numbered 0..{torch.cuda.device_count() - 1}."
            )
    elif device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UserError(f"device {name!r} was requested but MPS is not available here; use --device cpu or auto.")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"device {name!r} is not supported; use auto, cpu, cuda or cuda:N.")
    return device


def mixed_precision_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype on `device`: bf16 where the GPU computes it natively, else fp16; None (float32) off CUDA.

    torch.cuda.is_bf16_supported() also answers True on GPUs that only emulate bf16 (V100, T4, Turing), where
    it is slow; `including_emulation=False` asks for native support (compute capability 8.0+, or ROCm).
    fp16 training needs a GradScaler (`trainer.needs_grad_scaler`); inference needs none.
    """
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
