"""Training configuration: one typed dataclass whose values a recipe file (`recipes`) gives and flags override; each
field's metadata gives its flag's help and group. The resolved config is saved in config.json and every checkpoint."""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cityseg.data.layout import AUGMENTATIONS, LABEL_SOURCES
from cityseg.errors import UserError
from cityseg.system import default_workers
from cityseg.training.model_names import DEFAULT_ARCH, canonical_arch, check_encoder, model_title_of, size_multiple
from cityseg.training.recipes import BUILTIN, Recipe, jsonable, load_recipe, match, type_name, value_text
from cityseg.training.recipes import parse_size as parse_size  # the one size syntax, imported from here

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "poly")
SELECT = ("loss", "miou", "last")
DEVICES = ("auto", "cpu", "cuda")
FOLD_SPLITS = ("city", "random")  # whole cities per fold, or shuffled images (cityseg.training.folds)
# Validation and prediction pad inputs to a multiple of this; every model's size_multiple must divide it.
SIDE_MULTIPLE = 32
# The longest side a size or crop may have: 8x Cityscapes' 2048 (a 16384x16384 float32 image is already 3 GiB).
MAX_SIDE = 16384
MAX_SEED = 2**32 - 1  # scikit-learn's KFold (the folds) and NumPy's global seed take 32-bit seeds

# Fields a resumed run may change: the machine's, and amp (a run that diverged in fp16 continues with --no-amp).
RUNTIME_FIELDS = ("workers", "device", "amp", "compile", "cache", "gpu_aug")
# Where and how fast a run happens, resolved per machine when left at auto (`runtime`); never set by a recipe.
MACHINE_FIELDS = ("workers", "device", "cache", "compile", "gpu_aug")
AUTO = "auto"  # the `cache` that lets the machine decide (the boolean machine fields use None)

# Option groups of the generated CLI flags (`cityseg cv --help` lists them in this order).
RECIPE_GROUP = "Recipe"
OPTIMIZATION = "Optimization"
DATA = "Data and augmentation (sizes are WIDTHxHEIGHT)"
LOSS_MODEL = "Loss, model and selection"
RUN = "Run"


def _option(default: Any, help: str, *, group: str, factory: Any = dataclasses.MISSING, choices: Any = None) -> Any:
    """A config field whose metadata is the one source of its CLI flag: option group, help text, choices."""
    metadata = {"help": help, "group": group, "choices": choices}
    return field(default=default, default_factory=factory, metadata=metadata)


# One field maker per option group: `_optim(10, "training epochs")`.
_recipe, _optim, _data, _model, _run = (
    functools.partial(_option, group=group) for group in (RECIPE_GROUP, OPTIMIZATION, DATA, LOSS_MODEL, RUN)
)


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of one training run; sizes are (width, height) like the images' 2048x1024."""

    recipe: str = _recipe("seed", "a built-in recipe or a recipe .toml file; the other fields override it")
    epochs: int = _optim(10, "training epochs")
    batch_size: int = _optim(4, "images per step per process")
    optimizer: str = _optim("adam", "adam and adamw use --betas, sgd uses --momentum", choices=OPTIMIZERS)
    lr: float = _optim(1e-4, "base learning rate of the decoder and head (the logged lr)")
    encoder_lr_mult: float = _optim(1.0, "the pretrained encoder's lr is lr times this")
    weight_decay: float = _optim(
        0.0,
        "weight decay of the decoder's weights: coupled L2 for adam and sgd, decoupled for adamw; norm weights and "
        "biases never decay",
    )
    encoder_weight_decay_mult: float = _optim(1.0, "the encoder's weight decay is weight_decay times this")
    betas: tuple[float, float] = _optim((0.9, 0.999), "Adam/AdamW moment decay rates B1,B2")
    momentum: float = _optim(0.9, "SGD momentum (sgd only)")
    schedule: str = _optim("constant", "lr schedule, stepped every iteration", choices=SCHEDULES)
    warmup_epochs: float = _optim(0.0, "linear lr warm-up length in epochs")
    min_lr: float = _optim(0.0, "final lr of the cosine schedule")
    poly_power: float = _optim(0.9, "exponent of the poly schedule")
    schedule_epochs: int | None = _optim(
        None,
        "epochs the lr schedule spans when training stops earlier ('none' = --epochs); the full fit of `cityseg cv` "
        "runs the folds' schedule cut at the chosen epoch this way",
    )
    size: tuple[int, int] | None = _data(
        None, "resize every image before anything else, e.g. 1024x512; 'none' = full resolution"
    )
    crop: tuple[int, int] | None = _data(None, "training crop, e.g. 768x768; 'none'")
    scale_range: tuple[float, float] | None = _data(None, "random scale LO,HI, e.g. 0.5,2.0; 'none'")
    crop_max_class_ratio: float = _data(0.75, "re-draw crops where one class covers more than this share")
    aug: tuple[str, ...] = _data(
        ("flip",),
        "comma list of named augmentations, e.g. flip,scale-crop,photometric ('none' for none; an unknown name lists "
        "the valid ones)",
    )
    labels: str = _data(
        "trainIds",
        "train from labelTrainIds PNGs (after `cityseg prepare`) or the shipped labelIds",
        choices=LABEL_SOURCES,
    )
    workers: int = _data(
        dataclasses.MISSING, "data-loading processes per training process", factory=lambda: min(8, default_workers())
    )
    cache: str | None = _data(
        AUTO,
        "decoded-image cache folder (see `cityseg cache`), built on first use and shared by every fold and the full "
        "fit; 'auto': on CUDA, in ROOT/../cityseg-cache (else $XDG_CACHE_HOME/cityseg) when the disk has room, else "
        "the PNGs; 'none': always the PNGs",
    )
    gpu_aug: bool | None = _data(
        None,
        "run the colour augmentations (photometric, color-jitter, gaussian-blur) on the training device instead of in "
        "the loader workers (photometric batched, the same mmsegmentation ops and draws; ~5 ms of a CPU core per "
        "768x768 crop otherwise); auto: on CUDA when the recipe has one",
    )
    loss: str = _model(
        "ce",
        "a loss name (ce, ohem, or smp's dice, focal, lovasz, ...: an unknown name lists them all) or a weighted sum "
        "such as ce+0.5*dice",
    )
    ohem_thresh: float = _model(0.7, "OHEM keeps pixels whose true-class probability is below this")
    ohem_min_kept: int = _model(100_000, "OHEM keeps at least this many pixels per image")
    arch: str = _model(
        "Unet",
        "segmentation architecture, any smp.create_model takes (any case): Unet, FPN, DeepLabV3Plus, Segformer, ... "
        "(an unknown name lists them)",
    )
    encoder: str = _model("resnet34", "an smp encoder name, e.g. resnet18, resnet50, mit_b0, tu-<timm model>")
    encoder_weights: str | None = _model(
        "imagenet", "'imagenet' (download), a local state dict of the encoder, or 'none'"
    )
    sync_bn: bool = _model(False, "SyncBatchNorm across GPUs under torchrun")
    select: str = _model(
        "loss",
        "best.pt and the full fit's epoch count: the fold's best epoch by val loss or mIoU, or 'last' (a fixed "
        "budget: nothing is selected)",
        choices=SELECT,
    )
    seed: int = _run(0, f"seed of the folds and of training, 0 to {MAX_SEED}")
    device: str = _run("auto", "auto, cpu, cuda or cuda:N")
    amp: bool = _run(
        False, "mixed precision on CUDA: bf16 where the GPU has it natively, else fp16 with a gradient scaler"
    )
    compile: bool | None = _run(
        None,
        "torch.compile the training step (eager again, with one warning, if compiling fails); auto: on CUDA for runs "
        "long enough to repay the compile time (cityseg.training.runtime)",
    )
    # Not a RUNTIME_FIELDS member: a run is reproducible only if every resume of it ran deterministic too.
    deterministic: bool = _run(
        False,
        "deterministic cuDNN/cuBLAS/torch kernels and no compile, so CUDA runs repeat bit for bit (slower; CPU runs "
        "repeat without it)",
    )

    def __post_init__(self) -> None:
        """Spell the model and loss one way ('fpn' -> 'FPN', 'CE + 0.50*dice' -> 'ce+0.5*dice'), then validate."""
        if isinstance(self.arch, str) and self.arch != DEFAULT_ARCH:
            object.__setattr__(self, "arch", canonical_arch(self.arch))
        if isinstance(self.loss, str) and self.loss != "ce":
            from cityseg.training.losses import loss_text  # imports torch: the default loss needs no check

            object.__setattr__(self, "loss", loss_text(self.loss))
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists) for config.json and checkpoints."""
        return {f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

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
        recipe = values.pop("recipe", "seed")
        if recipe in BUILTIN:  # older files lack newer fields: they take the recipe's values
            return resolve_config(recipe, **values)
        return TrainConfig(recipe=recipe, **values)  # a recipe file's run records every field; the file may be gone

    @property
    def schedule_length(self) -> int:
        """Epochs the lr schedule spans (training may stop earlier, see schedule_epochs)."""
        return self.schedule_epochs if self.schedule_epochs is not None else self.epochs


def flag(name: str) -> str:
    """The CLI flag that sets a config field, so error messages name what the user types."""
    return "--" + name.replace("_", "-")


def resolve_config(recipe: str | Path = "seed", **overrides: Any) -> TrainConfig:
    """A recipe's config (a built-in name or a .toml path) with some fields changed; typos are UserErrors."""
    unknown = sorted(name for name in overrides if name not in _FIELD_TYPES or name == "recipe")
    if unknown:
        raise UserError(
            f"unknown training config field(s) {', '.join(map(repr, unknown))}; valid fields are "
            f"{', '.join(n for n in _FIELD_TYPES if n != 'recipe')}."
        )
    source = load_recipe(recipe, _RECIPE_HINTS)
    try:
        config = TrainConfig(recipe=source.name, **source.values)
    except UserError as exc:
        raise UserError(f"recipe file {source.path}: {exc}") from None
    changed = {name: _coerce(name, value) for name, value in overrides.items()}
    return dataclasses.replace(config, **changed) if changed else config


def read_recipe(name: str | Path) -> Recipe:
    """A recipe (a built-in name or a .toml path) read and checked, for `cityseg recipes` and config.json."""
    return load_recipe(name, _RECIPE_HINTS)


def config_differences(old: TrainConfig, new: TrainConfig, ignore: tuple[str, ...] = RUNTIME_FIELDS) -> list[str]:
    """Fields (outside `ignore`) whose values differ, as 'name: old -> new' lines for resume checks."""
    return [
        f"{name}: {jsonable(before)} -> {jsonable(after)}"
        for name, before, after in field_differences(old, new, ignore)
    ]


def recipe_differences(config: TrainConfig) -> list[tuple[str, Any, Any]]:
    """(field, recipe value, run value) where the run departs from its recipe, machine fields left out."""
    return field_differences(resolve_config(config.recipe), config, MACHINE_FIELDS)


def field_differences(old: TrainConfig, new: TrainConfig, ignore: tuple[str, ...] = ()) -> list[tuple[str, Any, Any]]:
    """(field, old value, new value) for every field outside `ignore` that differs, in the dataclass's order."""
    return [
        (name, getattr(old, name), getattr(new, name))
        for name in _FIELD_TYPES
        if name not in ignore and getattr(old, name) != getattr(new, name)
    ]


def field_text(name: str, value: Any) -> str:
    """A field's value as `value_text` writes it, with 'auto' for a machine field left to the machine."""
    if name in MACHINE_FIELDS and value is None and _FIELD_TYPES[name] == bool | None:
        return AUTO
    return value_text(value)


def with_epochs(config: TrainConfig, epochs: int) -> TrainConfig:
    """The same config stopped after `epochs`, its lr schedule keeping the folds' length."""
    return dataclasses.replace(config, epochs=epochs, schedule_epochs=config.schedule_length)


_FIELD_TYPES: dict[str, Any] = typing.get_type_hints(TrainConfig)
_RECIPE_HINTS = {name: hint for name, hint in _FIELD_TYPES.items() if name not in (*MACHINE_FIELDS, "recipe")}


def _coerce(name: str, value: Any) -> Any:
    """Check `value` against the field's type hint, turning lists into tuples and ints into floats."""
    ok, converted = match(_FIELD_TYPES[name], value)
    if not ok:
        raise UserError(
            f"training config field {name!r} must be {type_name(_FIELD_TYPES[name])}, got {value!r} "
            f"({type(value).__name__}); fix it in the config or with {flag(name)}."
        )
    return converted


# The range of each numeric field: what its error says it must be, the test, the fields.
_RANGES = (
    ("must be at least 1", lambda v: v >= 1, "epochs batch_size ohem_min_kept"),
    ("must be 0 or more", lambda v: v >= 0, "workers weight_decay encoder_weight_decay_mult warmup_epochs min_lr"),
    ("must be greater than 0", lambda v: v > 0, "lr encoder_lr_mult poly_power"),
    ("must be in [0, 1)", lambda v: 0 <= v < 1, "momentum"),
    ("must be in (0, 1]", lambda v: 0 < v <= 1, "ohem_thresh crop_max_class_ratio"),
)


def _fail(config: TrainConfig, name: str, requirement: str, fix: str = "") -> None:
    value = jsonable(getattr(config, name))
    raise UserError(
        f"training config field {name} ({flag(name)}) {requirement}, got {value!r}." + (f" {fix}" if fix else "")
    )


def _check_side_pair(config: TrainConfig, name: str, multiple: int) -> None:
    value = getattr(config, name)
    if value is None:
        return
    if len(value) != 2 or min(value) <= 0 or max(value) > MAX_SIDE:
        _fail(config, name, f"must be a WIDTHxHEIGHT pair of sides from 1 to {MAX_SIDE}")
    if any(side % multiple for side in value):
        rounded = "x".join(str(max(multiple, round(s / multiple) * multiple)) for s in value)
        needs = f"must have sides divisible by {multiple} (what {model_title_of(config)} needs)"
        _fail(config, name, needs, f"Use e.g. {rounded}.")


def _validate(config: TrainConfig) -> None:
    """Reject values that would crash later or silently train something else."""
    for field_ in dataclasses.fields(config):
        value, choices = getattr(config, field_.name), field_.metadata["choices"]
        values = value if isinstance(value, tuple) else (value,)
        # nan and inf pass every range check below, and JSON cannot store them
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            _fail(config, field_.name, "must be a finite number")
        if choices and value not in choices:  # optimizer, schedule, labels, select: their flags' choices
            _fail(config, field_.name, f"must be one of {', '.join(choices)}")
    for requirement, test, names in _RANGES:
        for name in names.split():
            if not test(getattr(config, name)):
                _fail(config, name, requirement)
    if not 0 <= config.seed <= MAX_SEED:
        _fail(config, "seed", f"must be from 0 to {MAX_SEED} (2**32 - 1: the folds' KFold takes 32-bit seeds)")
    if config.min_lr > config.lr:
        _fail(config, "min_lr", f"must not exceed lr ({config.lr})")
    if config.schedule_epochs is not None and config.schedule_epochs < config.epochs:
        _fail(config, "schedule_epochs", f"must be at least epochs ({config.epochs}), or none")
    if config.warmup_epochs > config.schedule_length:
        _fail(config, "warmup_epochs", f"must not exceed the schedule's length ({config.schedule_length} epochs)")
    if not all(0 <= beta < 1 for beta in config.betas):
        _fail(config, "betas", "must be two numbers in [0, 1), e.g. 0.9,0.999")
    if config.device not in DEVICES and not config.device.startswith("cuda:"):
        _fail(config, "device", f"must be one of {', '.join(DEVICES)} (or cuda:N)")
    unknown_aug = [name for name in config.aug if name not in AUGMENTATIONS]
    if unknown_aug:
        _fail(config, "aug", f"may only name {', '.join(AUGMENTATIONS)}", f"Unknown: {', '.join(unknown_aug)}.")
    check_encoder(config.encoder, config.encoder_weights)
    multiple = size_multiple(config.arch, config.encoder)
    if SIDE_MULTIPLE % multiple:
        raise UserError(
            f"{config.arch} with encoder {config.encoder} needs input sides divisible by {multiple}, but cityseg pads "
            f"images to multiples of {SIDE_MULTIPLE} to validate and predict; choose another --encoder or --arch."
        )
    _check_side_pair(config, "size", multiple)
    _check_side_pair(config, "crop", multiple)
    if config.scale_range is not None and not 0 < config.scale_range[0] <= config.scale_range[1]:
        _fail(config, "scale_range", "must be LO,HI with 0 < LO <= HI")
    if "scale-crop" in config.aug and (config.crop is None or config.scale_range is None):
        _fail(config, "aug", "includes scale-crop, which needs both crop (--crop) and scale_range (--scale-range)")
    crop, size = config.crop, config.size
    if crop is not None and size is not None and (crop[0] > size[0] or crop[1] > size[1]):
        fix = "Use a smaller --crop or a larger --size."
        _fail(config, "crop", f"must fit inside the resized image {size[0]}x{size[1]} (--size)", fix)
