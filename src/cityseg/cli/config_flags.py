"""The training options of `cityseg cv` and `cityseg train`, generated from TrainConfig: one flag per field.

A field's name gives the flag (`batch_size` -> `--batch-size`), its type the value syntax, its metadata the help
text, option group and choices (cityseg.training.config), and the built-in recipes its defaults. So a new config
field gets its flag without an edit here, and `--help` shows what each recipe sets.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable
from typing import Any

from cityseg.cli.common import size_type
from cityseg.training.config import RECIPE_GROUP, TrainConfig, field_text, read_recipe, resolve_config, value_text
from cityseg.training.recipes import BUILTIN

# Options that change the recipe use SUPPRESS as default, so only what the user typed overrides it.
_UNSET = argparse.SUPPRESS


def optional_size(text: str) -> tuple[int, int] | None:
    """'WxH', or 'none'/'full' for the images' own resolution."""
    return None if text.strip().lower() in ("none", "full") else size_type(text)


def float_pair(text: str) -> tuple[float, float]:
    """'A,B' (e.g. 0.5,2.0 or 0.9,0.999)."""
    try:
        first, second = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a pair of numbers; write A,B, e.g. 0.5,2.0") from None
    return first, second


def optional_float_pair(text: str) -> tuple[float, float] | None:
    """'LO,HI' (e.g. 0.5,2.0), or 'none'."""
    return None if text.lower() == "none" else float_pair(text)


def name_list(text: str) -> tuple[str, ...]:
    """A comma list like 'flip,photometric'; 'none' or '' for an empty list."""
    return () if text.lower() in ("", "none") else tuple(part.strip() for part in text.split(",") if part.strip())


def optional_text(text: str) -> str | None:
    """A path or name, or 'none'."""
    return None if text.lower() == "none" else text


def optional_int(text: str) -> int | None:
    """A whole number, or 'none'."""
    return None if text.lower() == "none" else int(text)


# Value syntax per field type; a field of a new type fails loudly in `add_config_arguments` until it has one.
_PARSERS: dict[Any, tuple[Callable[[str], Any], str | None]] = {
    int: (int, "N"),
    float: (float, "X"),
    str: (str, None),
    int | None: (optional_int, "N"),
    str | None: (optional_text, "PATH"),
    tuple[int, int] | None: (optional_size, "WxH"),
    tuple[float, float] | None: (optional_float_pair, "LO,HI"),
    tuple[float, float]: (float_pair, "A,B"),
    tuple[str, ...]: (name_list, "LIST"),
}


def flag_args(name: str, value: Any) -> list[str]:
    """The command-line words that set field `name` to `value` (`--no-amp`, `--size 1024x512`; none for a
    switch left at auto)."""
    option = "--" + name.replace("_", "-")
    if value is None and typing.get_type_hints(TrainConfig)[name] == bool | None:
        return []
    if isinstance(value, bool):
        return [option if value else "--no-" + option[2:]]
    return [option, value_text(value)]


def _recipe_defaults(name: str, configs: dict[str, TrainConfig]) -> str:
    """What each recipe sets a field to, for its --help line."""
    if name == "workers":
        return "default: one per core, at most 8"
    values = {recipe: field_text(name, getattr(config, name)) for recipe, config in configs.items()}
    if len(set(values.values())) == 1:
        return f"default: {next(iter(values.values()))}"
    return "; ".join(f"{recipe}: {value}" for recipe, value in values.items())


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The recipe and one option per TrainConfig field, in the fields' groups; unset options keep the recipe's value."""
    parser.allow_abbrev = False  # `--encoder` must never be read as a prefix of `--encoder-lr-mult`, nor the reverse
    recipes = " | ".join(f"{name}: {read_recipe(name).description.split('. ')[0]}" for name in BUILTIN)
    groups = {
        RECIPE_GROUP: parser.add_argument_group(
            RECIPE_GROUP,
            "a built-in recipe or a recipe .toml file (`cityseg recipes` prints each with its sources); the options "
            "below override single fields",
        )
    }
    groups[RECIPE_GROUP].add_argument(
        "--recipe", default="seed", metavar="NAME|FILE", help=f"{recipes} | or a .toml file"
    )
    hints = typing.get_type_hints(TrainConfig)
    configs = {recipe: resolve_config(recipe, workers=0) for recipe in BUILTIN}
    for config_field in dataclasses.fields(TrainConfig):
        if config_field.name == "recipe":
            continue
        meta = config_field.metadata
        group_name = meta["group"]
        if group_name not in groups:
            groups[group_name] = parser.add_argument_group(group_name)
        option = "--" + config_field.name.replace("_", "-")
        help_text = f"{meta['help']} [{_recipe_defaults(config_field.name, configs)}]"
        hint = hints[config_field.name]
        if hint in (bool, bool | None):  # bool | None: a switch whose default (None) leaves it to the machine
            groups[group_name].add_argument(
                option, action=argparse.BooleanOptionalAction, default=_UNSET, help=help_text
            )
            continue
        if hint not in _PARSERS:
            raise TypeError(f"config field {config_field.name} has type {hint}, which has no CLI syntax in {__name__}")
        value_type, metavar = _PARSERS[hint]
        if meta.get("choices"):
            value_type, metavar = str, None
        groups[group_name].add_argument(
            option, type=value_type, choices=meta.get("choices"), default=_UNSET, metavar=metavar, help=help_text
        )
    run_group = list(groups.values())[-1]
    run_group.add_argument("--resume", action="store_true", help="continue an interrupted run from its last.pt")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The recipe with every option the user gave applied (range errors are UserErrors: exit 2)."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"recipe"}
    overrides = {name: value for name, value in vars(args).items() if name in fields}
    return resolve_config(args.recipe, **overrides)
