"""`cityseg recipes`: a recipe (built-in or a .toml file) as a card (each field, its value, its source, the
deviations), or the fields where two recipes differ."""

from __future__ import annotations

import argparse
import textwrap

from cityseg.cli.common import add_command
from cityseg.training.recipes import BUILTIN, FIELD_GROUPS, RUN_SETTING

WIDTH = 100


def register(subparsers) -> None:
    """Add `recipes` to the CLI."""
    parser = add_command(
        subparsers,
        "recipes",
        help="show the training recipes: every field, its value and where it comes from",
        description="Print each recipe's card: every training config field with its value (as typed after its "
        "`cv`/`train` flag), the source each group of choices follows, and where the recipe knowingly departs "
        "from its sources. A recipe is a built-in name or a .toml file (copy a built-in's file to start one). "
        "With --diff, list only the fields where two recipes differ.",
    )
    which = f"{', '.join(BUILTIN)} or a .toml file (default: all built-ins)"
    parser.add_argument("name", nargs="?", metavar="NAME|FILE", help=which)
    parser.add_argument(
        "--diff", metavar="OTHER", help="compare NAME with recipe OTHER: the fields whose values differ"
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
        print("\n\n".join(recipe_card(name) for name in ([args.name] if args.name else BUILTIN)))
    return 0


def _wrapped(text: str, indent: str = "    ", first: str | None = None) -> str:
    return textwrap.fill(
        text, WIDTH, initial_indent=indent if first is None else first, subsequent_indent=indent, break_on_hyphens=False
    )


def recipe_card(name: str) -> str:
    """One recipe: its file, description, each field group with its source and values, run settings, deviations."""
    import dataclasses

    from cityseg.training.config import TrainConfig, field_text, read_recipe, resolve_config

    recipe, config = read_recipe(name), resolve_config(name)
    parents = f", extends {' <- '.join(recipe.parents)}" if recipe.parents else ""
    lines = [f"recipe {name}", f"  file {recipe.path} (sha256 {recipe.sha256}){parents}"]
    lines += [_wrapped(recipe.description or "(no description)", ""), ""]

    def rows(names: tuple[str, ...]) -> list[str]:
        width = max(len(n) for n in names)
        return [f"  {n.ljust(width)}  {field_text(n, getattr(config, n))}" for n in names]

    for group, names in FIELD_GROUPS.items():
        lines += [
            f"{group}:",
            _wrapped(recipe.sources.get(group, f"(no source given in {recipe.path.name})")),
            *rows(names),
        ]
    grouped = {n for names in FIELD_GROUPS.values() for n in names} | {"recipe"}
    lines += [f"{RUN_SETTING}:", *rows(tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in grouped))]
    if recipe.deviations:
        lines += ["deviations from its sources:", *(_wrapped(f"- {text}", first="  ") for text in recipe.deviations)]
    return "\n".join(lines)


def recipe_diff(name: str, other: str) -> str:
    """The fields where two recipes differ, one per line: field, NAME's value, OTHER's value."""
    from cityseg.report.tables import Table
    from cityseg.training.config import field_differences, resolve_config, value_text

    changed = field_differences(resolve_config(name), resolve_config(other), ("recipe",))  # same machine: same workers
    if not changed:
        return f"recipes {name} and {other} set every field alike."
    table = Table.build(("field", name, other), [(field, value_text(a), value_text(b)) for field, a, b in changed])
    return f"{len(changed)} fields differ between {name} and {other}:\n{table.text()}"
