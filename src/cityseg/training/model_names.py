"""The network a config names: smp's architecture and encoder names checked against smp's registries, and titles
like "U-Net / resnet34". Imports neither torch nor smp for the default model, so `cityseg --help` stays light.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from cityseg.errors import UserError

DEFAULT_ARCH, DEFAULT_ENCODER = "Unet", "resnet34"  # the reference's network
DEFAULT_SIZE_MULTIPLE = 32  # smp.Unet("resnet34").encoder.output_stride, known without importing smp

# smp's class names as papers write them; an architecture not listed is shown under its smp name.
ARCH_TITLES = {
    "Unet": "U-Net",
    "UnetPlusPlus": "U-Net++",
    "DeepLabV3Plus": "DeepLabV3+",
    "Linknet": "LinkNet",
    "MAnet": "MA-Net",
    "Segformer": "SegFormer",
}


def model_title(arch: str | None = None, encoder: str | None = None) -> str:
    """'U-Net / resnet34', 'DeepLabV3+ / resnet18': the architecture's usual name and smp's encoder name."""
    arch = arch or DEFAULT_ARCH
    return f"{ARCH_TITLES.get(arch, arch)} / {encoder or DEFAULT_ENCODER}"


def model_title_of(config: Any) -> str:
    """The title of a TrainConfig or a config dict (older files name no model: the default one)."""
    if isinstance(config, Mapping):
        return model_title(config.get("arch"), config.get("encoder"))
    return model_title(getattr(config, "arch", None), getattr(config, "encoder", None))


def canonical_arch(name: str) -> str:
    """smp's class name for an architecture named in any case ('fpn' -> 'FPN'); unknown names list the valid ones."""
    if name == DEFAULT_ARCH:
        return name
    import segmentation_models_pytorch as smp

    known = {cls.__name__.lower(): cls.__name__ for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()}
    if name.lower() not in known:
        raise UserError(
            f"unknown architecture {name!r} (--arch); segmentation_models_pytorch {smp.__version__} offers "
            f"{', '.join(known.values())} (any case)."
        )
    return known[name.lower()]


def check_encoder(encoder: str, weights: str | None) -> None:
    """'imagenet' only for an encoder smp has ImageNet weights for ('tu-' encoders: timm's own pretrained weights)."""
    if encoder == DEFAULT_ENCODER or weights != "imagenet" or encoder.startswith("tu-"):
        return
    import segmentation_models_pytorch as smp

    offered = smp.encoders.encoders.get(encoder, {}).get("pretrained_settings", {"imagenet": None})
    if "imagenet" not in offered:
        raise UserError(
            f"smp has no ImageNet weights for encoder {encoder!r} (it has {', '.join(offered) or 'none'}); pass "
            "--encoder-weights none, or a local state dict of this encoder."
        )


@functools.cache
def size_multiple(arch: str, encoder: str) -> int:
    """The number every input side must divide by: the encoder's output stride, built on the meta device."""
    if (arch, encoder) == (DEFAULT_ARCH, DEFAULT_ENCODER):
        return DEFAULT_SIZE_MULTIPLE
    import warnings

    import segmentation_models_pytorch as smp
    import torch

    def build(device: str) -> Any:
        with torch.device(device), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return smp.create_model(canonical_arch(arch), encoder, encoder_weights=None, classes=2)

    try:
        try:
            model = build("meta")
        except (RuntimeError, NotImplementedError) as exc:  # Mix Transformers call .item() while being built
            if "meta" not in str(exc):
                raise
            model = build("cpu")
    except (RuntimeError, ValueError, KeyError, AssertionError) as exc:
        detail = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)  # a KeyError's str() is quoted
        raise UserError(
            f"smp cannot build {arch} with encoder {encoder!r} (--arch, --encoder): {' '.join(detail.split())} "
            "('tu-' encoders name a timm model: timm.list_models())."
        ) from None
    return int(model.encoder.output_stride)
