"""The network: any segmentation_models_pytorch architecture and encoder a config names, 19 output classes.

Encoder weights come from smp's Hugging Face hub copy ("imagenet"), a local state dict of that encoder (machines
without internet), or nowhere (random init). `load_model` rebuilds a checkpoint's network.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cityseg.errors import UserError, describe_error
from cityseg.labels import NUM_CLASSES
from cityseg.training.checkpoint import read_checkpoint, require_safe_torch
from cityseg.training.model_names import DEFAULT_ARCH, DEFAULT_ENCODER, canonical_arch, model_title

# Architectures whose ONNX export (dynamic height and width) fails, and how (bench/model_zoo.py, docs/models.md).
ONNX_REFUSALS = {
    arch: "torch.export cannot trace it for every input size (its shape guards hold for one size only)"
    for arch in ("FPN", "DeepLabV3Plus", "Linknet", "MAnet", "UnetPlusPlus", "PAN")
} | {arch: "its exported graph works at the traced size only" for arch in ("PSPNet", "UPerNet", "DPT")}


def onnx_refusal(config: Mapping[str, Any] | None) -> str | None:
    """Why the stored config's architecture cannot be exported to ONNX, or None when it can."""
    arch = (config or {}).get("arch") or DEFAULT_ARCH
    reason = ONNX_REFUSALS.get(arch)
    return None if reason is None else f"{model_title(arch, (config or {}).get('encoder'))}: {reason}"


def _hub_errors() -> tuple[type[BaseException], ...]:
    """Exception types a failed hub download raises (offline, proxy, HTTP error; connection errors are OSErrors)."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        from httpx import HTTPError  # the hub's HTTP client in its newer versions
    except ImportError:  # pragma: no cover - older hub versions use requests, whose errors are OSErrors
        return OSError, HfHubHTTPError
    return OSError, HfHubHTTPError, HTTPError


def _create(arch: str, encoder: str, weights: str | None, num_classes: int) -> nn.Module:
    import segmentation_models_pytorch as smp

    arch = canonical_arch(arch)
    extra = {"dynamic_img_size": True} if arch == "DPT" else {}  # timm's ViTs take only their pretraining size else
    with warnings.catch_warnings():  # smp warns that 'tu-' encoders take a flag, not a weights name
        warnings.simplefilter("ignore", UserWarning)
        return smp.create_model(arch, encoder, encoder_weights=weights, classes=num_classes, **extra)


def _load_local_encoder(model: nn.Module, path: Path, encoder: str) -> None:
    """Load a local state dict into the encoder, naming the first key or shape that does not fit."""
    fix = f"save the {encoder} encoder's state dict with torch.save, or pass 'imagenet' or 'none'"
    if not path.is_file():
        raise UserError(f"encoder weights file {path} does not exist; {fix}.")
    require_safe_torch(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load fails on foreign files with many types (even IndexError)
        raise UserError(
            f"cannot read encoder weights {path} as a tensor-only state dict ({describe_error(exc)}); {fix}."
        ) from None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} is not a state dict (a dict of tensors); {fix}.")
    own = model.encoder.state_dict()
    try:
        model.encoder.load_state_dict(state, strict=True)  # smp's encoders pop their classifier keys from `state`
    except RuntimeError:
        wrong = [
            f"missing key {k}" if k not in state else f"{k} has shape {list(state[k].shape)}, not {list(own[k].shape)}"
            for k in own
            if k not in state or state[k].shape != own[k].shape
        ] + [f"unexpected key {k}" for k in state if k not in own]
        if wrong:
            raise UserError(
                f"{path} does not fit the {encoder} encoder: first mismatch: {wrong[0]} ({len(wrong)} in all). Pass "
                f"weights of the {encoder} encoder (e.g. not of another depth or family), 'imagenet', or 'none'."
            ) from None


def build_model(
    encoder_weights: str | Path | None = "imagenet",
    num_classes: int = NUM_CLASSES,
    arch: str = DEFAULT_ARCH,
    encoder: str = DEFAULT_ENCODER,
) -> nn.Module:
    """smp's `arch` on `encoder`, encoder weights from the hub ("imagenet"), a local state dict, or none."""
    if isinstance(encoder_weights, str) and encoder_weights == "imagenet":
        try:
            return _create(arch, encoder, "imagenet", num_classes)
        except _hub_errors() as exc:
            offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
            raise UserError(
                f"could not get the ImageNet {encoder} encoder weights from the Hugging Face hub{offline}: "
                f"{describe_error(exc)}. Without internet, either train from scratch with `--encoder-weights none`, "
                f"or pass `--encoder-weights PATH` with a local state dict of the {encoder} encoder saved with "
                "torch.save (for resnets, torchvision's resnet state dict), or pre-fill the Hugging Face cache on a "
                "connected machine (build the model once there) and set HF_HUB_OFFLINE=1."
            ) from None
    model = _create(arch, encoder, None, num_classes)
    if encoder_weights is not None and str(encoder_weights).lower() not in ("none", ""):
        _load_local_encoder(model, Path(encoder_weights), encoder)
    return model


def model_of(config: Any, encoder_weights: str | Path | None = None) -> nn.Module:
    """The network a TrainConfig (or a stored config dict: older ones name no model) describes."""
    get = config.get if isinstance(config, Mapping) else lambda name: getattr(config, name, None)
    return build_model(encoder_weights, NUM_CLASSES, get("arch") or DEFAULT_ARCH, get("encoder") or DEFAULT_ENCODER)


_CHECKED_WEIGHTS: set[tuple[str, str, str]] = set()


def check_encoder_weights(config: Any) -> None:
    """Fail before a run writes anything when its encoder weights cannot be had (hub offline, bad local file):
    builds the model once (the hub download is cached for the real build); a success is remembered."""
    key = (config.arch, config.encoder, str(config.encoder_weights))
    if config.encoder_weights is None or key[2].lower() in ("none", "") or key in _CHECKED_WEIGHTS:
        return
    model_of(config, config.encoder_weights)
    _CHECKED_WEIGHTS.add(key)


def strip_wrappers(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Drop DDP's 'module.' and torch.compile's '_orig_mod.' prefixes so any saved wrapper loads."""
    for prefix in ("module.", "_orig_mod."):
        if state_dict and all(k.startswith(prefix) for k in state_dict):
            state_dict = {k[len(prefix) :]: v for k, v in state_dict.items()}
    return state_dict


def load_into(model: nn.Module, weights: Any, path: Path, config: Any) -> nn.Module:
    """`weights` loaded strictly into `model`; weights of another network are a UserError naming `path`."""
    try:
        model.load_state_dict(strip_wrappers(weights), strict=True)
    except (RuntimeError, AttributeError):
        raise UserError(
            f"{path} holds weights of another architecture or class count: they do not fit "
            f"{model_title(config.get('arch'), config.get('encoder'))} with {NUM_CLASSES} classes; use a file "
            "written by cityseg (a run's best.pt or last.pt, or `cityseg export`)."
        ) from None
    return model.eval()


def load_model(checkpoint: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """A checkpoint's network in eval mode on `device`, and its state with the file's "sha256" (read once)."""
    state, sha256 = read_checkpoint(Path(checkpoint), map_location="cpu")
    weights, config = state.get("model"), state.get("config") or {}
    if state.get("num_classes") != NUM_CLASSES or not isinstance(weights, dict):
        raise UserError(
            f"{checkpoint} is a checkpoint of another architecture or class count "
            f"(num_classes={state.get('num_classes')!r}, expected {NUM_CLASSES}); use a run of this cityseg version."
        )
    model = load_into(model_of(config), weights, Path(checkpoint), config)
    return model.to(resolve_device(device) if isinstance(device, str) else device), {**state, "sha256": sha256}


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when present, else CPU; an explicit device that is not there is a UserError, not a crash."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N.") from None
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device.type == "cuda" and not count:
        raise UserError(f"device {name!r} was requested but this machine has no usable CUDA GPU; use --device cpu.")
    if device.type == "cuda" and device.index is not None and device.index >= count:
        raise UserError(
            f"device {name!r} does not exist: this machine has {count} CUDA GPU(s), numbered 0..{count - 1}."
        )
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UserError(f"device {name!r} was requested but MPS is not available here; use --device cpu or auto.")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"device {name!r} is not supported; use auto, cpu, cuda or cuda:N.")
    return device


def mixed_precision_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype on `device`: bf16 where the GPU computes it natively (not emulated, as on V100 and T4,
    where it is slow), else fp16; None (float32) off CUDA."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
