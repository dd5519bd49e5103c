"""`cityseg recipes`: every recipe as a card (each field, its value, its source, the deviations), or two compared."""

from __future__ import annotations

import argparse
import dataclasses
import textwrap

from cityseg.cli.common import add_command
from cityseg.training.config import (
    FIELD_GROUPS,
    RECIPES,
    RUN_SETTING,
    TrainConfig,
    field_differences,
    field_text,
    resolve_config,
    value_text,
)

WIDTH = 100


def register(subparsers) -> None:
    """Add `recipes` to the CLI."""
    parser = add_command(
        subparsers,
        "recipes",
        help="show the training recipes: every field, its value and where it comes from",
        description="Print each recipe's card: every training config field with its value (as typed after its "
        "`cv`/`train` flag), the source each group of choices follows, and where the recipe knowingly departs "
        "from its sources. With --diff, list only the fields where two recipes differ.",
    )
    parser.add_argument("name", nargs="?", choices=list(RECIPES), default=None, help="one recipe (default: all)")
    parser.add_argument(
        "--diff",
        choices=list(RECIPES),
        default=None,
        metavar="OTHER",
        help="compare NAME with recipe OTHER: the fields whose values differ",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cityseg.errors import UserError

    if args.diff is not None and args.name is None:
        raise UserError(
            "--diff compares two recipes: name the first one too, e.g. `cityseg recipes strong --diff seed`."
        )
    if args.diff is not None:
        print(recipe_diff(args.name, args.diff))
    else:
        print("\n\n".join(recipe_card(name) for name in ([args.name] if args.name else RECIPES)))
    return 0


def _rows(config: TrainConfig, names: tuple[str, ...]) -> list[str]:
    width = max(len(n) for n in names)
    return [f"  {name.ljust(width)}  {field_text(name, getattr(config, name))}" for name in names]


def _wrapped(text: str, indent: str = "    ", first: str | None = None) -> str:
    return textwrap.fill(
        text, WIDTH, initial_indent=indent if first is None else first, subsequent_indent=indent, break_on_hyphens=False
    )


def recipe_card(name: str) -> str:
    """One recipe: description, each field group with its source and values, run settings, deviations."""
    recipe, config = RECIPES[name], resolve_config(name)
    lines = [f"recipe {name}", _wrapped(recipe.description, ""), ""]
    for group, names in FIELD_GROUPS.items():
        lines += [f"{group}:", _wrapped(recipe.sources[group]), *_rows(config, names)]
    grouped = {n for names in FIELD_GROUPS.values() for n in names} | {"recipe"}
    others = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in grouped)
    lines += [f"{RUN_SETTING}:", *_rows(config, others)]
    if recipe.deviations:
        lines += ["deviations from its sources:", *(_wrapped(f"- {text}", first="  ") for text in recipe.deviations)]
    return "\n".join(lines)


def recipe_diff(name: str, other: str) -> str:
    """The fields where two recipes differ, one per line: field, NAME's value, OTHER's value."""
    changed = field_differences(resolve_config(name), resolve_config(other), ("recipe",))  # same machine: same workers
    if not changed:
        return f"recipes {name} and {other} set every field alike."
    width = max(len("field"), *(len(field) for field, _, _ in changed))
    values = [(field, value_text(a), value_text(b)) for field, a, b in changed]
    first = max(len(name), *(len(a) for _, a, _ in values))
    lines = [
        f"{len(changed)} fields differ between {name} and {other}:",
        f"{'field'.ljust(width)}  {name.ljust(first)}  {other}",
    ]
    lines += [f"{field.ljust(width)}  {a.ljust(first)}  {b}" for field, a, b in values]
    return "\n".join(lines)
