"""The named recipes: default values for a TrainConfig, with the source of every choice and the deviations.

`cityseg recipes` prints them; `cityseg.training.config.resolve_config(name, **overrides)` turns one into a config.
Each source names the paper or repository it follows (NOTES.md says what "as in X" means precisely).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Recipe:
    """A named default config, where each group of its choices comes from, and where it knowingly departs."""

    name: str
    description: str
    values: dict[str, Any]
    sources: dict[str, str]
    deviations: tuple[str, ...] = ()


# Groups of fields a recipe cites a source for (the README and `cityseg recipes` quote these). Fields in no
# group (labels, seed, workers, device, compile, cache, gpu_aug) are run settings, not part of a recipe.
FIELD_GROUPS: dict[str, tuple[str, ...]] = {
    "optimization": (
        "optimizer",
        "lr",
        "encoder_lr_mult",
        "weight_decay",
        "encoder_weight_decay_mult",
        "betas",
        "momentum",
        "batch_size",
        "epochs",
    ),
    "schedule": ("schedule", "warmup_epochs", "min_lr", "poly_power", "schedule_epochs"),
    "augmentation": ("aug", "size", "crop", "scale_range", "crop_max_class_ratio"),
    "loss": ("loss", "ohem_thresh", "ohem_min_kept"),
    "model": ("arch", "encoder", "encoder_weights", "sync_bn"),
    "selection": ("select",),
    "precision": ("amp",),
}
RUN_SETTING = "run setting, not part of the recipe"

_REFERENCE = "the reference write-up (U-Net/ResNet-34, 66.79 val mIoU; NOTES.md)"
_SWIFTNET = "SwiftNet RN-18 (Oršić et al., CVPR 2019; its configs/rn18_single_scale.py)"

RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe(
            name="seed",
            description="The reference: Adam 1e-4, batch 4, plain cross-entropy, 10 epochs, horizontal flip only, "
            "full-resolution images, float32, epoch count by fold val loss.",
            values={
                "epochs": 10,
                "batch_size": 4,
                "optimizer": "adam",
                "lr": 1e-4,
                "encoder_lr_mult": 1.0,
                "weight_decay": 0.0,
                "betas": (0.9, 0.999),
                "schedule": "constant",
                "warmup_epochs": 0.0,
                "size": None,
                "crop": None,
                "scale_range": None,
                "aug": ("flip",),
                "loss": "ce",
                "encoder_weights": "imagenet",
                "select": "loss",
                "amp": False,
            },
            sources={
                "optimization": f"Adam (PyTorch defaults: betas 0.9, 0.999, no weight decay), lr 1e-4, batch 4, "
                f"10 epochs, as in {_REFERENCE}.",
                "schedule": f"constant learning rate, as in {_REFERENCE}.",
                "augmentation": f"horizontal flip only on full-resolution 2048x1024 images, as in {_REFERENCE}.",
                "loss": f"CrossEntropyLoss(ignore_index=255), as in {_REFERENCE}.",
                "model": f"smp.Unet('resnet34') with an ImageNet encoder, as in {_REFERENCE}.",
                "selection": f"best epoch by validation loss, as in {_REFERENCE} (here on the held-out folds; see "
                "the deviations).",
                "precision": f"float32, as in {_REFERENCE}; `--amp` trains in mixed precision (faster, other numbers).",
            },
            deviations=(
                "The last incomplete batch of each epoch is dropped (drop_last; PyTorch's default, presumably the "
                "reference's, keeps it): a batch of 1-3 images would get a full step's weight and noisy "
                "BatchNorm statistics.",
                "The reference picked its best epoch by loss on the val set it then reported on. Here the "
                "held-out folds pick: the full fit trains for the median of the folds' best epochs on every "
                "train image, and val is scored once, unselected.",
            ),
        ),
        Recipe(
            name="strong",
            description="SwiftNet's optimiser and schedule on the U-Net: Adam 4e-4 (encoder at lr/4) with L2 decay "
            "1e-4 (encoder 2.5e-5), cosine to 1e-6 after a warm-up, random scale 0.5-2.0 and 768x768 crops, flip, "
            "photometric distortion, batch 8, 200 epochs, the last epoch's weights.",
            values={
                "epochs": 200,
                "batch_size": 8,
                "optimizer": "adam",
                "lr": 4e-4,
                "encoder_lr_mult": 0.25,
                "weight_decay": 1e-4,
                "encoder_weight_decay_mult": 0.25,
                "betas": (0.9, 0.99),
                "schedule": "cosine",
                "warmup_epochs": 2.0,
                "min_lr": 1e-6,
                "size": None,
                "crop": (768, 768),
                "scale_range": (0.5, 2.0),
                "crop_max_class_ratio": 0.75,
                "aug": ("flip", "scale-crop", "photometric"),
                "loss": "ce",
                "ohem_thresh": 0.7,
                "ohem_min_kept": 100_000,
                "encoder_weights": "imagenet",
                "select": "last",
                "amp": True,
            },
            sources={
                "optimization": f"{_SWIFTNET}: Adam with betas (0.9, 0.99), lr 4e-4 with the pretrained encoder at "
                "lr/4, and Adam's own (coupled, L2) weight decay 1e-4 with the encoder at 1e-4/4. SwiftNet's "
                "setting is kept whole rather than swapped for AdamW: decoupled decay at 1e-4 shrinks weights by "
                "lr x 1e-4 = 4e-8 per step, i.e. no regularisation, and AdamW at mmsegmentation's 0.01-0.05 would "
                "be an untested mix. 200 epochs at batch 8 instead of 250 at 14, to fit one GPU.",
                "schedule": f"{_SWIFTNET}: cosine decay to 1e-6; a 2-epoch linear warm-up as in mmsegmentation's "
                "schedules; poly 0.9 (mmsegmentation's Cityscapes default) is `--schedule poly`.",
                "augmentation": "SwiftNet and mmsegmentation Cityscapes configs: random scale 0.5-2.0, 768x768 "
                "crops (SwiftNet; mmsegmentation uses 512x1024) re-drawn when one class covers more than 75% "
                "(mmsegmentation's cat_max_ratio=0.75), horizontal flip, photometric distortion (mmsegmentation).",
                "loss": "cross-entropy with ignore 255 (SwiftNet); `--loss ohem` is mmsegmentation's "
                "OHEMPixelSampler (thresh 0.7, min_kept 100000 per image) with its CrossEntropyLoss averaging.",
                "model": "ImageNet-pretrained encoder, as in SwiftNet and the reference; SyncBN for multi-GPU "
                "runs as in mmsegmentation (`--sync-bn`).",
                "selection": "a fixed budget, nothing selected: the folds are scored and the full fit is taken at "
                "the last epoch of the same schedule, where the cosine ends.",
                "precision": "bf16 autocast where the GPU has it natively, else fp16 with a gradient scaler: a "
                "speed choice (SwiftNet trained in float32); weights and optimizer state stay float32.",
            },
            deviations=(
                "U-Net decoder on ResNet-34 (smp) instead of SwiftNet's ladder decoder on ResNet-18.",
                "Batch 8 and 200 epochs instead of 14 and 250; the cosine is stepped every iteration after a "
                "2-epoch warm-up (SwiftNet: once per epoch, no warm-up).",
                "Norm weights and biases get no weight decay (as timm and mmsegmentation's AdamW configs); SwiftNet "
                "decays every parameter.",
                "Photometric distortion and crop re-drawing come from mmsegmentation; SwiftNet uses scale, crop "
                "and flip only.",
                "The last epoch's weights are used; SwiftNet kept the best of its evaluations on val every 4 "
                "epochs, chosen on the set it reported.",
                "Mixed precision (bf16 or fp16 autocast); SwiftNet trained in float32.",
            ),
        ),
    )
}


__all__ = ["FIELD_GROUPS", "RECIPES", "RUN_SETTING", "Recipe"]
