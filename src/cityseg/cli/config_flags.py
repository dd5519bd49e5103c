"""The training options of `cityseg cv` and `cityseg train`, generated from TrainConfig: one flag per field
(`batch_size` -> `--batch-size`; type, help, group and choices from the field), so a new field needs no edit here."""

import argparse
import dataclasses
import functools
import typing
from argparse import SUPPRESS
from collections.abc import Callable
from typing import Any

from cityseg.errors import UserError
from cityseg.training.config import RECIPE_GROUP, TrainConfig, field_text, flag, read_recipe, resolve_config
from cityseg.training.recipes import BUILTIN, from_text

# The metavar of each field type in --help; a field of a new type fails loudly in `add_config_arguments` until it
# has one (and recipes.from_text its syntax).
_METAVARS: dict[Any, str | None] = {
    int: "N",
    float: "X",
    str: None,  # the field's name in capitals: ARCH, ENCODER, LOSS, DEVICE
    int | None: "N",
    str | None: "PATH",
    tuple[int, int] | None: "WxH",
    tuple[float, float] | None: "LO,HI",
    tuple[float, float]: "A,B",
    tuple[str, ...]: "LIST",
}


def value_parser(hint: Any) -> Callable[[str], Any]:
    """The argparse type of a field: its text syntax (recipes.from_text), malformed text a usage error."""

    def parse(text: str) -> Any:
        try:
            return from_text(hint, text)
        except (ValueError, UserError) as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None

    return parse


def _recipe_defaults(name: str, configs: dict[str, TrainConfig]) -> str:
    """What each recipe sets a field to, for its --help line: (default: X), or (default: seed X, strong Y)."""
    if name == "workers":
        return "(default: one per core, at most 8)"
    values = {recipe: field_text(name, getattr(config, name)) for recipe, config in configs.items()}
    if len(set(values.values())) == 1:
        return f"(default: {next(iter(values.values()))})"
    return f"(default: {', '.join(f'{recipe} {value}' for recipe, value in values.items())})"


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The recipe and one option per TrainConfig field (default SUPPRESS: only typed ones override)."""
    parser.allow_abbrev = False  # `--encoder` must never be read as a prefix of `--encoder-lr-mult`, nor the reverse
    recipes = " | ".join(f"{name}: {read_recipe(name).description.split('. ')[0]}" for name in BUILTIN)
    recipe_group = parser.add_argument_group(
        RECIPE_GROUP,
        "a built-in recipe or a recipe .toml file (`cityseg recipes` prints each with its sources); the options "
        "below override single fields",
    )
    recipe_group.add_argument("--recipe", default="seed", metavar="NAME|FILE", help=f"{recipes} | or a .toml file")
    groups = {RECIPE_GROUP: recipe_group}
    hints = typing.get_type_hints(TrainConfig)
    configs = {recipe: resolve_config(recipe, workers=0) for recipe in BUILTIN}
    for name, meta in ((f.name, f.metadata) for f in dataclasses.fields(TrainConfig) if f.name != "recipe"):
        if meta["group"] not in groups:
            groups[meta["group"]] = parser.add_argument_group(meta["group"])
        help_text = f"{meta['help']} {_recipe_defaults(name, configs)}"
        add = functools.partial(groups[meta["group"]].add_argument, flag(name), help=help_text)
        if hints[name] in (bool, bool | None):  # bool | None: a switch whose default (None) leaves it to the machine
            add(action=argparse.BooleanOptionalAction, default=SUPPRESS)
        elif meta.get("choices"):
            add(choices=meta["choices"], default=SUPPRESS)
        elif hints[name] in _METAVARS:
            add(type=value_parser(hints[name]), default=SUPPRESS, metavar=_METAVARS[hints[name]] or name.upper())
        else:
            raise TypeError(f"config field {name} has type {hints[name]}, which has no CLI syntax in {__name__}")
    run_group = list(groups.values())[-1]
    run_group.add_argument("--resume", action="store_true", help="continue an interrupted run from its last.pt")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The recipe with every option the user gave applied (range errors are UserErrors: exit 2)."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"recipe"}
    overrides = {name: value for name, value in vars(args).items() if name in fields}
    return resolve_config(args.recipe, **overrides)
