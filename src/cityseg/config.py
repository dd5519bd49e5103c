"""Training configuration: one typed dataclass and the named recipes that fill it.

A recipe is a documented starting point; every field can be overridden (`--lr 2e-4`, or
`resolve_config("strong", lr=2e-4)` in a notebook). The resolved config is saved as
`config.json` in each run folder and inside every checkpoint, so a run can be rebuilt
from its folder alone. Adding a recipe is one entry in `RECIPES`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from cityseg.errors import UserError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "poly")
LOSSES = ("ce", "ohem")
SELECT = ("loss", "miou")
LABEL_SOURCES = ("trainIds", "ids")
DEVICES = ("auto", "cpu", "cuda")
# U-Net/ResNet-34 downsamples five times, so every side the model sees must divide by 2**5.
SIDE_MULTIPLE = 32

# Fields that describe the machine rather than the experiment: a resumed run may change them.
RUNTIME_FIELDS = ("workers", "device", "amp", "compile", "cache", "gpu_aug")


def _default_workers() -> int:
    from cityseg.cli.common import default_workers

    return min(8, default_workers())


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of one training run; sizes are (width, height) like the images' 2048x1024."""

    recipe: str = "seed"
    # Optimisation
    epochs: int = 10
    batch_size: int = 4
    optimizer: str = "adam"
    lr: float = 1e-4
    encoder_lr_mult: float = 1.0  # the pretrained encoder's lr is lr * this
    weight_decay: float = 0.0
    momentum: float = 0.9  # SGD only
    # Learning-rate schedule (stepped every iteration)
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    min_lr: float = 0.0  # cosine decays to this
    poly_power: float = 0.9
    # Data and augmentation
    size: tuple[int, int] | None = None  # resize before anything else; None = full resolution
    crop: tuple[int, int] | None = None
    scale_range: tuple[float, float] | None = None
    crop_max_class_ratio: float = 0.75  # re-draw crops where one class covers more than this
    aug: tuple[str, ...] = ("flip",)
    labels: str = "trainIds"
    # Loss
    loss: str = "ce"
    ohem_thresh: float = 0.7
    ohem_min_kept: int = 100_000
    # Model
    encoder_weights: str | None = "imagenet"
    sync_bn: bool = False
    # Checkpoint selection on the held-out fold
    select: str = "loss"
    # Reproducibility and machine
    seed: int = 0
    workers: int = field(default_factory=_default_workers)
    device: str = "auto"
    amp: bool = True
    compile: bool = False
    cache: str | None = None
    gpu_aug: bool = False  # colour augmentations on the training device instead of the loader workers

    def __post_init__(self) -> None:
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists) for config.json and checkpoints."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Rebuild a config from config.json or a checkpoint; unknown keys and wrong types are UserErrors."""
        if not isinstance(data, dict):
            raise UserError(f"a training config must be a JSON object, got {type(data).__name__}.")
        unknown = sorted(set(data) - set(_FIELD_TYPES))
        if unknown:
            raise UserError(
                f"unknown training config key(s) {', '.join(map(repr, unknown))}; valid keys are "
                f"{', '.join(_FIELD_TYPES)}. Remove or rename them."
            )
        values = {name: _coerce(name, value) for name, value in data.items()}
        return resolve_config(values.pop("recipe", "seed"), **values)



def flag(name: str) -> str:
    """The CLI flag that sets a config field, so error messages name what the user types."""
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class Recipe:
    """A named default config plus, per group of fields, where its choices come from."""

    name: str
    description: str
    values: dict[str, Any]
    sources: dict[str, str]


# Groups of fields a recipe cites a source for (the README quotes these).
FIELD_GROUPS: dict[str, tuple[str, ...]] = {
    "optimization": ("optimizer", "lr", "encoder_lr_mult", "weight_decay", "momentum", "batch_size", "epochs"),
    "schedule": ("schedule", "warmup_epochs", "min_lr", "poly_power"),
    "augmentation": ("aug", "size", "crop", "scale_range", "crop_max_class_ratio"),
    "loss": ("loss", "ohem_thresh", "ohem_min_kept"),
    "model": ("encoder_weights", "sync_bn"),
    "selection": ("select",),
}

_REFERENCE = "the reference write-up (U-Net/ResNet-34, 66.79 val mIoU; NOTES.md)"

RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe(
            name="seed",
            description="The reference exactly: Adam 1e-4, batch 4, plain cross-entropy, 10 epochs, "
            "horizontal flip only, full-resolution images, best checkpoint by fold val loss.",
            values={
                "epochs": 10,
                "batch_size": 4,
                "optimizer": "adam",
                "lr": 1e-4,
                "encoder_lr_mult": 1.0,
                "weight_decay": 0.0,
                "schedule": "constant",
                "warmup_epochs": 0.0,
                "size": None,
                "crop": None,
                "scale_range": None,
                "aug": ("flip",),
                "loss": "ce",
                "encoder_weights": "imagenet",
                "select": "loss",
            },
            sources={
                "optimization": f"Adam, lr 1e-4, batch 4, 10 epochs as in {_REFERENCE}.",
                "schedule": f"constant learning rate, as in {_REFERENCE}.",
                "augmentation": f"horizontal flip only on full-resolution 2048x1024 images, as in {_REFERENCE}.",
                "loss": f"CrossEntropyLoss(ignore_index=255), as in {_REFERENCE}.",
                "model": f"smp.Unet('resnet34') with an ImageNet encoder, as in {_REFERENCE}.",
                "selection": f"best epoch by validation loss, as in {_REFERENCE} (here: on the held-out fold).",
            },
        ),
        Recipe(
            name="strong",
            description="A SwiftNet/mmsegmentation-style recipe: AdamW 4e-4 with the encoder at lr/4, cosine "
            "schedule with warm-up, random scale 0.5-2.0 and 768x768 crops, flip, photometric distortion, "
            "batch 8, 200 epochs, best checkpoint by fold mIoU.",
            values={
                "epochs": 200,
                "batch_size": 8,
                "optimizer": "adamw",
                "lr": 4e-4,
                "encoder_lr_mult": 0.25,
                "weight_decay": 1e-4,
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
                "select": "miou",
            },
            sources={
                "optimization": "SwiftNet RN-18 (Orsic et al., CVPR 2019): Adam lr 4e-4 with the pretrained "
                "encoder at lr/4 and weight decay 1e-4; AdamW (decoupled decay) instead of Adam; 200 epochs "
                "and batch 8 instead of 250 and 14 to fit one GPU (NOTES.md).",
                "schedule": "SwiftNet: cosine decay to 1e-6; linear warm-up as in mmsegmentation's schedules "
                "(here 2 epochs); poly 0.9 (mmsegmentation's Cityscapes default) is `--schedule poly`.",
                "augmentation": "SwiftNet and mmsegmentation Cityscapes configs: random scale 0.5-2.0, 768x768 "
                "crops (SwiftNet; mmsegmentation uses 512x1024) re-drawn when one class covers more than 75% "
                "(mmsegmentation's cat_max_ratio=0.75), horizontal flip, photometric distortion.",
                "loss": "cross-entropy with ignore 255; optional OHEM (`--loss ohem`, thresh 0.7, min_kept "
                "100000) as in mmsegmentation's OHEMPixelSampler configs.",
                "model": "ImageNet-pretrained encoder, as in SwiftNet and the reference; SyncBN for multi-GPU "
                "runs as in mmsegmentation (`--sync-bn`).",
                "selection": "best epoch by held-out fold mIoU, the metric the benchmark reports.",
            },
        ),
    )
}


def resolve_config(recipe: str = "seed", **overrides: Any) -> TrainConfig:
    """A recipe's config with some fields changed; typos and bad values are UserErrors, not silent defaults."""
    if recipe not in RECIPES:
        raise UserError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)} (--recipe).")
    unknown = sorted(name for name in overrides if name not in _FIELD_TYPES or name == "recipe")
    if unknown:
        raise UserError(
            f"unknown training config field(s) {', '.join(map(repr, unknown))}; valid fields are "
            f"{', '.join(n for n in _FIELD_TYPES if n != 'recipe')}."
        )
    values = {**RECIPES[recipe].values, **{name: _coerce(name, value) for name, value in overrides.items()}}
    return TrainConfig(recipe=recipe, **values)


def config_differences(old: TrainConfig, new: TrainConfig, ignore: tuple[str, ...] = RUNTIME_FIELDS) -> list[str]:
    """Fields (outside `ignore`) whose values differ, as 'name: old -> new' lines for resume checks."""
    changed = []
    for f in dataclasses.fields(TrainConfig):
        before, after = getattr(old, f.name), getattr(new, f.name)
        if f.name not in ignore and before != after:
            changed.append(f"{f.name}: {_jsonable(before)} -> {_jsonable(after)}")
    return changed


# ----------------------------------------------------------------------------------------------------------
# Types: JSON gives lists and ints where the dataclass wants tuples and floats
# ----------------------------------------------------------------------------------------------------------

_FIELD_TYPES: dict[str, Any] = typing.get_type_hints(TrainConfig)


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("NoneType", "None")


def _coerce(name: str, value: Any) -> Any:
    """Check `value` against the field's type hint, turning lists into tuples and ints into floats."""
    hint = _FIELD_TYPES[name]
    ok, converted = _match(hint, value)
    if not ok:
        raise UserError(
            f"training config field {name!r} must be {_type_name(hint)}, got {value!r} "
            f"({type(value).__name__}); fix it in the config or with {flag(name)}."
        )
    return converted


def _match(hint: Any, value: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            ok, converted = _match(option, value)
            if ok:
                return True, converted
        return False, None
    if hint is type(None):
        return value is None, None
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else None
    if hint is str:
        return isinstance(value, str), value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False, None
        args = typing.get_args(hint)
        item_types = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(item_types) != len(value):
            return False, None
        items = [_match(t, v) for t, v in zip(item_types, value, strict=True)]
        return all(ok for ok, _ in items), tuple(v for _, v in items)
    raise TypeError(f"unsupported config type {hint}")  # a new field type needs a branch here


# ----------------------------------------------------------------------------------------------------------
# Ranges
# ----------------------------------------------------------------------------------------------------------


def _fail(config: TrainConfig, name: str, requirement: str, fix: str = "") -> None:
    value = _jsonable(getattr(config, name))
    raise UserError(
        f"training config field {name} ({flag(name)}) {requirement}, got {value!r}." + (f" {fix}" if fix else "")
    )


def _check_choice(config: TrainConfig, name: str, choices: tuple[str, ...]) -> None:
    if getattr(config, name) not in choices:
        _fail(config, name, f"must be one of {', '.join(choices)}")


def _check_side_pair(config: TrainConfig, name: str) -> None:
    value = getattr(config, name)
    if value is None:
        return
    if len(value) != 2 or min(value) <= 0:
        _fail(config, name, "must be a positive WIDTHxHEIGHT pair")
    if any(side % SIDE_MULTIPLE for side in value):
        rounded = "x".join(str(max(SIDE_MULTIPLE, round(s / SIDE_MULTIPLE) * SIDE_MULTIPLE)) for s in value)
        _fail(config, name, f"must have sides divisible by {SIDE_MULTIPLE} (the U-Net downsamples 5 times)",
              f"Use e.g. {rounded}.")


def _validate(config: TrainConfig) -> None:
    """Reject values that would crash later or silently train something else."""
    from cityseg.transforms import AUGMENTATIONS

    if config.recipe not in RECIPES:
        _fail(config, "recipe", f"must be one of {', '.join(RECIPES)}")
    for name in ("epochs", "batch_size", "ohem_min_kept"):
        if getattr(config, name) < 1:
            _fail(config, name, "must be at least 1")
    for name in ("workers", "seed"):
        if getattr(config, name) < 0:
            _fail(config, name, "must be 0 or more")
    for name in ("lr", "encoder_lr_mult", "poly_power"):
        if not getattr(config, name) > 0:
            _fail(config, name, "must be greater than 0")
    for name in ("weight_decay", "warmup_epochs", "min_lr"):
        if not getattr(config, name) >= 0:
            _fail(config, name, "must be 0 or more")
    if config.min_lr > config.lr:
        _fail(config, "min_lr", f"must not exceed lr ({config.lr})")
    if config.warmup_epochs > config.epochs:
        _fail(config, "warmup_epochs", f"must not exceed epochs ({config.epochs})")
    if not 0 <= config.momentum < 1:
        _fail(config, "momentum", "must be in [0, 1)")
    if not 0 < config.ohem_thresh <= 1:
        _fail(config, "ohem_thresh", "must be in (0, 1]")
    if not 0 < config.crop_max_class_ratio <= 1:
        _fail(config, "crop_max_class_ratio", "must be in (0, 1]")
    _check_choice(config, "optimizer", OPTIMIZERS)
    _check_choice(config, "schedule", SCHEDULES)
    _check_choice(config, "loss", LOSSES)
    _check_choice(config, "select", SELECT)
    _check_choice(config, "labels", LABEL_SOURCES)
    if config.device not in DEVICES and not config.device.startswith("cuda:"):
        _fail(config, "device", f"must be one of {', '.join(DEVICES)} (or cuda:N)")
    unknown_aug = [name for name in config.aug if name not in AUGMENTATIONS]
    if unknown_aug:
        _fail(config, "aug", f"may only name {', '.join(AUGMENTATIONS)}", f"Unknown: {', '.join(unknown_aug)}.")
    _check_side_pair(config, "size")
    _check_side_pair(config, "crop")
    if config.scale_range is not None:
        lo, hi = config.scale_range
        if not 0 < lo <= hi:
            _fail(config, "scale_range", "must be LO,HI with 0 < LO <= HI")
    if "scale-crop" in config.aug and (config.crop is None or config.scale_range is None):
        _fail(config, "aug", "includes scale-crop, which needs both crop (--crop) and scale_range (--scale-range)")
    if config.crop is not None and config.size is not None and (
        config.crop[0] > config.size[0] or config.crop[1] > config.size[1]
    ):
        _fail(config, "crop", f"must fit inside the resized image {config.size[0]}x{config.size[1]} (--size)",
              "Use a smaller --crop or a larger --size.")
