"""Recipes: TOML files of training config values with the source of each choice; `seed` and `strong` ship here.

A file holds config field names at top level, an optional `extends` (a built-in name, or a path relative to
the file), a `description`, `deviations` (where it knowingly departs from its sources) and a `[sources]` table
(one text per group of FIELD_GROUPS). cityseg.training.config.resolve_config turns one into a TrainConfig.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from cityseg.errors import UserError, describe_error
from cityseg.training.config_values import from_text, jsonable, match, type_name

BUILTIN_DIR = Path(__file__).with_name("recipe_files")
BUILTIN = ("seed", "strong")
# Groups of fields a recipe cites a source for. Fields in no group (labels, seed, workers, device, compile, cache,
# gpu_aug) are run settings, not part of a recipe.
FIELD_GROUPS: dict[str, tuple[str, ...]] = {
    group: tuple(names.split())
    for group, names in {
        "optimization": "optimizer lr encoder_lr_mult weight_decay encoder_weight_decay_mult betas momentum batch_size "
        "epochs",
        "schedule": "schedule warmup_epochs min_lr poly_power schedule_epochs",
        "augmentation": "aug size crop scale_range crop_max_class_ratio",
        "loss": "loss ohem_thresh ohem_min_kept",
        "model": "arch encoder encoder_weights sync_bn",
        "selection": "select",
        "precision": "amp",
    }.items()
}
RUN_SETTING = "run setting, not part of the recipe"
# The keys of a recipe file that are not config fields: what each must be, and a check of it.
_META = {
    "description": ("a string", lambda v: isinstance(v, str)),
    "extends": ("a built-in recipe's name or a path", lambda v: isinstance(v, str)),
    "deviations": ("a list of strings", lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v)),
    "sources": ("a table of strings", lambda v: isinstance(v, dict) and all(isinstance(s, str) for s in v.values())),
}


@dataclass(frozen=True)
class Recipe:
    """A recipe file read and checked: its values (its parents' overlaid by its own), sources and deviations."""

    name: str  # a built-in's name, or the file's resolved path
    path: Path
    sha256: str
    description: str
    values: dict[str, Any]
    sources: dict[str, str]
    deviations: tuple[str, ...]
    parents: tuple[str, ...] = ()  # the names of the recipes it extends, nearest first

    def record(self) -> dict[str, Any]:
        """What config.json says about the recipe: its file and sha256, what it extends, its resolved values."""
        values = {name: jsonable(value) for name, value in self.values.items()}
        record = {"name": self.name, "file": str(self.path), "sha256": self.sha256}
        return record | {"extends": list(self.parents), "values": values}


def load_recipe(spec: str | Path, hints: Mapping[str, Any], _seen: tuple[Path, ...] = ()) -> Recipe:
    """Read, check and resolve a recipe (its `extends` chain included); `hints` are the recipe fields' types. Every
    problem (missing file, invalid TOML, unknown key, wrong type, extends cycle) is a UserError naming the file."""
    path = Path(spec).expanduser()  # a built-in name, or a path relative to the file that extends it
    if str(spec) in BUILTIN:
        path = BUILTIN_DIR / f"{spec}.toml"
    elif _seen and not path.is_absolute():
        path = (_seen[-1].parent / path).resolve()
    else:
        path = path.resolve()
    where = f"recipe file {path}"
    if path in _seen:
        raise UserError(f"{where}: `extends` makes a cycle ({' -> '.join(map(str, (*_seen, path)))}); break it.")
    try:
        data = path.read_bytes()
        table = tomllib.loads(data.decode())
    except FileNotFoundError:
        parent = f" (extended by {_seen[-1]})" if _seen else ""
        raise UserError(
            f"{where} does not exist{parent}; name a built-in recipe ({', '.join(BUILTIN)}) or an existing "
            ".toml file (a relative `extends` is relative to the file that says it)."
        ) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"{where} cannot be read as TOML ({describe_error(exc)}); fix the file.") from None
    unknown = sorted(set(table) - set(_META) - set(hints))
    if unknown:
        raise UserError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; valid keys are {', '.join(_META)} and the "
            f"config fields {', '.join(hints)} (machine settings such as workers or device are flags, not recipe "
            "values)."
        )
    for key, (kind, fits) in _META.items():
        if key in table and not fits(table[key]):
            raise UserError(f"{where}: {key} must be {kind}, got {table[key]!r}.")
    groups = set(table.get("sources", {})) - set(FIELD_GROUPS)
    if groups:
        raise UserError(
            f"{where}: [sources] names unknown group(s) {', '.join(sorted(groups))}; the groups are "
            f"{', '.join(FIELD_GROUPS)}."
        )
    own = {name: _value(where, name, hints[name], value) for name, value in table.items() if name in hints}
    parent = load_recipe(table["extends"], hints, (*_seen, path)) if "extends" in table else None
    changed = {group for group, names in FIELD_GROUPS.items() if set(names) & set(own)}
    inherited = {g: text for g, text in (parent.sources if parent else {}).items() if g not in changed}
    return Recipe(
        name=str(spec) if str(spec) in BUILTIN else str(path),
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        description=table.get("description", parent.description if parent else ""),
        values={**(parent.values if parent else {}), **own},
        sources={**inherited, **table.get("sources", {})},
        deviations=tuple(table.get("deviations", ())),
        parents=(parent.name, *parent.parents) if parent else (),
    )


def _value(where: str, name: str, hint: Any, value: Any) -> Any:
    """A field's value from a file, converted to the field's type; a wrong type names the file and the key."""
    try:
        ok, converted = match(hint, from_text(hint, value))
    except (ValueError, UserError):
        ok, converted = False, None
    if not ok:
        raise UserError(f'{where}: {name} must be {type_name(hint)} ("none" for none, sizes as "WxH"), got {value!r}.')
    return converted
