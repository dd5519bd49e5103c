"""Training configuration: one typed dataclass and the named recipes that fill it.

A recipe is a documented starting point; every field can be overridden (`--lr 2e-4`, or
`resolve_config("strong", lr=2e-4)` in a notebook). Each field's metadata holds its help text and
option group, from which `cityseg cv`/`train` generate one flag per field. The resolved config is
saved as `config.json` in each run folder and inside every checkpoint, so a run can be rebuilt
from its folder alone. Adding a recipe is one entry in `RECIPES`; `cityseg recipes` prints them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from cityseg.data.layout import LABEL_SOURCES
from cityseg.errors import UserError
from cityseg.training.recipes import FIELD_GROUPS, RECIPES, RUN_SETTING, Recipe

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "poly")
LOSSES = ("ce", "ohem")
SELECT = ("loss", "miou", "last")
DEVICES = ("auto", "cpu", "cuda")
FOLD_SPLITS = ("city", "random")  # whole cities per fold, or shuffled images (cityseg.training.folds)
# U-Net/ResNet-34 downsamples five times, so every side the model sees must divide by 2**5.
SIDE_MULTIPLE = 32

# Fields that describe the machine rather than the experiment: a resumed run may change them. Mixed
# precision is among them so that a run that diverged in fp16 can continue in fp32 (--resume --no-amp).
RUNTIME_FIELDS = ("workers", "device", "amp", "compile", "cache", "gpu_aug")
# Fields that say where and how fast a run happens, resolved per machine when left at auto (cityseg.training.runtime;
# config.json's "runtime" record says what ran): never listed as a change from the recipe.
MACHINE_FIELDS = ("workers", "device", "cache", "compile", "gpu_aug")
# The value of `cache` that lets the machine decide (the boolean machine fields use None for auto).
AUTO = "auto"

# Option groups of the generated CLI flags (`cityseg cv --help` lists them in this order).
RECIPE_GROUP = "Recipe"
OPTIMIZATION = "Optimization"
DATA = "Data and augmentation (sizes are WIDTHxHEIGHT)"
LOSS_MODEL = "Loss, model and selection"
RUN = "Run"


def _default_workers() -> int:
    from cityseg.system import default_workers

    return min(8, default_workers())


def _option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    group: str,
    factory: Any = dataclasses.MISSING,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A config field whose metadata is the single source of its CLI flag: help text, option group, choices."""
    metadata = {"help": help, "group": group, "choices": choices}
    return field(default=default, default_factory=factory, metadata=metadata)


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of one training run; sizes are (width, height) like the images' 2048x1024."""

    recipe: str = _option("seed", help="the named default config the other fields override", group=RECIPE_GROUP)
    # Optimisation
    epochs: int = _option(10, help="training epochs", group=OPTIMIZATION)
    batch_size: int = _option(4, help="images per step per process", group=OPTIMIZATION)
    optimizer: str = _option(
        "adam", help="adam and adamw use --betas, sgd uses --momentum", group=OPTIMIZATION, choices=OPTIMIZERS
    )
    lr: float = _option(1e-4, help="base learning rate of the decoder and head (the logged lr)", group=OPTIMIZATION)
    encoder_lr_mult: float = _option(1.0, help="the pretrained encoder's lr is lr times this", group=OPTIMIZATION)
    weight_decay: float = _option(
        0.0,
        help="weight decay of the decoder's weights: coupled L2 for adam and sgd, "
        "decoupled for adamw; norm weights and biases never decay",
        group=OPTIMIZATION,
    )
    encoder_weight_decay_mult: float = _option(
        1.0, help="the encoder's weight decay is weight_decay times this", group=OPTIMIZATION
    )
    betas: tuple[float, float] = _option((0.9, 0.999), help="Adam/AdamW moment decay rates B1,B2", group=OPTIMIZATION)
    momentum: float = _option(0.9, help="SGD momentum (sgd only)", group=OPTIMIZATION)
    # Learning-rate schedule (stepped every iteration)
    schedule: str = _option(
        "constant", help="lr schedule, stepped every iteration", group=OPTIMIZATION, choices=SCHEDULES
    )
    warmup_epochs: float = _option(0.0, help="linear lr warm-up length in epochs", group=OPTIMIZATION)
    min_lr: float = _option(0.0, help="final lr of the cosine schedule", group=OPTIMIZATION)
    poly_power: float = _option(0.9, help="exponent of the poly schedule", group=OPTIMIZATION)
    schedule_epochs: int | None = _option(
        None,
        help="epochs the lr schedule spans when training stops earlier ('none' = --epochs); the full fit "
        "of `cityseg cv` runs the folds' schedule cut at the chosen epoch this way",
        group=OPTIMIZATION,
    )
    # Data and augmentation
    size: tuple[int, int] | None = _option(
        None, help="resize every image before anything else, e.g. 1024x512; 'none' = full resolution", group=DATA
    )
    crop: tuple[int, int] | None = _option(None, help="training crop, e.g. 768x768; 'none'", group=DATA)
    scale_range: tuple[float, float] | None = _option(None, help="random scale LO,HI, e.g. 0.5,2.0; 'none'", group=DATA)
    crop_max_class_ratio: float = _option(
        0.75, help="re-draw crops where one class covers more than this share", group=DATA
    )
    aug: tuple[str, ...] = _option(
        ("flip",),
        help="comma list of named augmentations, e.g. flip,scale-crop,"
        "photometric ('none' for none; an unknown name lists the valid ones)",
        group=DATA,
    )
    labels: str = _option(
        "trainIds",
        help="train from labelTrainIds PNGs (after `cityseg prepare`) or the shipped labelIds",
        group=DATA,
        choices=LABEL_SOURCES,
    )
    workers: int = _option(help="data-loading processes per training process", group=DATA, factory=_default_workers)
    cache: str | None = _option(
        AUTO,
        help="decoded-image cache folder (see `cityseg cache`), built on first use "
        "and shared by every fold and the full fit; 'auto': on CUDA, in ROOT/../cityseg-cache "
        "(else $XDG_CACHE_HOME/cityseg) when the disk has room, else the PNGs; 'none': always "
        "the PNGs",
        group=DATA,
    )
    gpu_aug: bool | None = _option(
        None,
        help="run the colour augmentations (photometric, color-jitter, gaussian-blur) "
        "on the training device instead of in the loader workers (photometric batched, the "
        "same mmsegmentation ops and draws; ~5 ms of a CPU core per 768x768 crop otherwise); "
        "auto: on CUDA when the recipe has one",
        group=DATA,
    )
    # Loss
    loss: str = _option("ce", help="cross-entropy or OHEM cross-entropy", group=LOSS_MODEL, choices=LOSSES)
    ohem_thresh: float = _option(
        0.7, help="OHEM keeps pixels whose true-class probability is below this", group=LOSS_MODEL
    )
    ohem_min_kept: int = _option(100_000, help="OHEM keeps at least this many pixels per image", group=LOSS_MODEL)
    # Model
    arch: str = _option(
        "Unet",
        help="segmentation architecture (smp.create_model's arch, e.g. Unet, FPN, DeepLabV3Plus)",
        group=LOSS_MODEL,
    )
    encoder: str = _option("resnet34", help="encoder (an smp encoder name, e.g. resnet18, resnet50)", group=LOSS_MODEL)
    encoder_weights: str | None = _option(
        "imagenet", help="'imagenet' (download), a local torchvision resnet34 state dict, or 'none'", group=LOSS_MODEL
    )
    sync_bn: bool = _option(False, help="SyncBatchNorm across GPUs under torchrun", group=LOSS_MODEL)
    # Checkpoint selection on the held-out fold
    select: str = _option(
        "loss",
        help="best.pt and the full fit's epoch count: the fold's best epoch by val loss "
        "or mIoU, or 'last' (a fixed budget: nothing is selected)",
        group=LOSS_MODEL,
        choices=SELECT,
    )
    # Reproducibility and machine
    seed: int = _option(0, help="seed of the folds and of training", group=RUN)
    device: str = _option("auto", help="auto, cpu, cuda or cuda:N", group=RUN)
    amp: bool = _option(
        False,
        help="mixed precision on CUDA: bf16 where the GPU has it natively, else fp16 with a gradient scaler",
        group=RUN,
    )
    compile: bool | None = _option(
        None,
        help="torch.compile the training step (eager again, with one warning, if "
        "compiling fails); auto: on CUDA for runs long enough to repay the compile time "
        "(cityseg.training.runtime)",
        group=RUN,
    )
    # Not a RUNTIME_FIELDS member: a run is reproducible only if every resume of it ran deterministic too.
    deterministic: bool = _option(
        False,
        help="deterministic cuDNN/cuBLAS/torch kernels and no compile, so CUDA runs repeat bit for bit "
        "(slower; CPU runs repeat without it)",
        group=RUN,
    )

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

    @property
    def schedule_length(self) -> int:
        """Epochs the lr schedule spans (training may stop earlier, see schedule_epochs)."""
        return self.schedule_epochs if self.schedule_epochs is not None else self.epochs


def flag(name: str) -> str:
    """The CLI flag that sets a config field, so error messages name what the user types."""
    return "--" + name.replace("_", "-")


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
    return [
        f"{name}: {_jsonable(before)} -> {_jsonable(after)}"
        for name, before, after in field_differences(old, new, ignore)
    ]


def recipe_differences(config: TrainConfig) -> list[tuple[str, Any, Any]]:
    """(field, recipe value, run value) for every field the run set differently from its recipe.

    Machine fields (workers, device, cache) are left out: they say where a run happened, not what it computed.
    """
    return field_differences(resolve_config(config.recipe), config, MACHINE_FIELDS)


def field_differences(old: TrainConfig, new: TrainConfig, ignore: tuple[str, ...] = ()) -> list[tuple[str, Any, Any]]:
    """(field, old value, new value) for every field outside `ignore` that differs, in the dataclass's order."""
    return [
        (name, getattr(old, name), getattr(new, name))
        for name in _FIELDS
        if name not in ignore and getattr(old, name) != getattr(new, name)
    ]


def parse_size(value: str | tuple[int, int] | list[int] | None, name: str = "size") -> tuple[int, int] | None:
    """'WxH' (as typed on the CLI, like the images' 2048x1024), a (W, H) pair, or None/'none'/'full' for the
    images' own resolution; the one parser of sizes (the CLI's and the notebooks')."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "full")):
        return None
    if isinstance(value, str):
        parts = value.lower().split("x")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise UserError(f"{name} {value!r} is not WIDTHxHEIGHT; write e.g. 1024x512, or none for full resolution.")
        width, height = int(parts[0]), int(parts[1])
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        width, height = int(value[0]), int(value[1])
    else:
        raise UserError(f"{name} {value!r} must be a (width, height) pair, a 'WxH' string, or None.")
    if width <= 0 or height <= 0:
        raise UserError(f"{name} {value!r}: width and height must be positive.")
    return width, height


def field_text(name: str, value: Any) -> str:
    """A field's value as `value_text` writes it, with 'auto' for a machine field left to the machine."""
    if name in MACHINE_FIELDS and value is None and _FIELD_TYPES[name] == bool | None:
        return AUTO
    return value_text(value)


def value_text(value: Any) -> str:
    """A config value as typed after its flag (1024x512, 0.5,2.0, flip,photometric, none); booleans on/off."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        if not value:
            return "none"
        return "x".join(map(str, value)) if all(isinstance(v, int) for v in value) else ",".join(map(str, value))
    return str(value)


# ----------------------------------------------------------------------------------------------------------
# Types: JSON gives lists and ints where the dataclass wants tuples and floats
# ----------------------------------------------------------------------------------------------------------

_FIELD_TYPES: dict[str, Any] = typing.get_type_hints(TrainConfig)
_FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainConfig)}


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
        _fail(
            config,
            name,
            f"must have sides divisible by {SIDE_MULTIPLE} (the U-Net downsamples 5 times)",
            f"Use e.g. {rounded}.",
        )


def _validate(config: TrainConfig) -> None:
    """Reject values that would crash later or silently train something else."""
    from cityseg.data.augmentations import AUGMENTATIONS

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
    for name in ("weight_decay", "encoder_weight_decay_mult", "warmup_epochs", "min_lr"):
        if not getattr(config, name) >= 0:
            _fail(config, name, "must be 0 or more")
    if config.min_lr > config.lr:
        _fail(config, "min_lr", f"must not exceed lr ({config.lr})")
    if config.schedule_epochs is not None and config.schedule_epochs < config.epochs:
        _fail(config, "schedule_epochs", f"must be at least epochs ({config.epochs}), or none")
    if config.warmup_epochs > config.schedule_length:
        _fail(config, "warmup_epochs", f"must not exceed the schedule's length ({config.schedule_length} epochs)")
    if not all(0 <= beta < 1 for beta in config.betas):
        _fail(config, "betas", "must be two numbers in [0, 1), e.g. 0.9,0.999")
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
    if (
        config.crop is not None
        and config.size is not None
        and (config.crop[0] > config.size[0] or config.crop[1] > config.size[1])
    ):
        _fail(
            config,
            "crop",
            f"must fit inside the resized image {config.size[0]}x{config.size[1]} (--size)",
            "Use a smaller --crop or a larger --size.",
        )


__all__ = [
    "FOLD_SPLITS",
    "with_epochs",
    "AUTO",
    "DEVICES",
    "FIELD_GROUPS",
    "LABEL_SOURCES",
    "LOSSES",
    "MACHINE_FIELDS",
    "OPTIMIZERS",
    "RECIPES",
    "RUNTIME_FIELDS",
    "RUN_SETTING",
    "Recipe",
    "SCHEDULES",
    "SELECT",
    "SIDE_MULTIPLE",
    "TrainConfig",
    "config_differences",
    "field_differences",
    "field_text",
    "flag",
    "parse_size",
    "recipe_differences",
    "resolve_config",
    "value_text",
]


def with_epochs(config: TrainConfig, epochs: int) -> TrainConfig:
    """The same config and the same lr schedule, stopped after `epochs` (the full fit after cross-validation).

    The schedule keeps its length (the folds' epochs), so at every point of training the lr is the one the
    folds had there: the full fit's weights at its last epoch follow the trajectory that produced each
    fold's score at that epoch, not a cosine squeezed into fewer epochs.
    """
    return dataclasses.replace(config, epochs=epochs, schedule_epochs=config.schedule_length)
