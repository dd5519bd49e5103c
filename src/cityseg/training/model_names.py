"""How a run's network is named to people: titles like "U-Net / resnet34" from the config's arch and encoder.

Kept free of torch so reports, cards and the CLI can name a model without importing it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DEFAULT_ARCH = "Unet"  # the reference's network: smp.Unet with a ResNet-34 encoder
DEFAULT_ENCODER = "resnet34"

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
    """The title of a TrainConfig or a config dict (config.json, a checkpoint, card.json); older files name no
    model and trained the default one."""
    if isinstance(config, Mapping):
        return model_title(config.get("arch"), config.get("encoder"))
    return model_title(getattr(config, "arch", None), getattr(config, "encoder", None))
