"""Recipes: TOML files of config values with the source of each choice (`seed`, `strong` ship here; `extends`,
`description`, `deviations`, `[sources]`), and the values of config fields: the one size syntax, checks against a
field's type hint (JSON and TOML give lists and ints for tuples and floats), and the text a value is typed as."""

import hashlib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from cityseg.errors import UserError, describe_error


def parse_size(value: str | tuple[int, int] | list[int] | None, name: str = "size") -> tuple[int, int] | None:
    """'WxH', a (W, H) pair, or None/'none'/'full' (the images' own size): the one size parser."""
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


def jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "").replace("NoneType", "None")


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


def from_text(hint: Any, value: Any) -> Any:
    """A value as typed after a flag or in a recipe file, in the field's type: "none" for None, sizes as WxH, pairs
    and lists comma-separated ('0.5,2.0', 'flip,photometric'); malformed text raises ValueError or UserError."""
    if not isinstance(value, str):
        return value
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    kind = next(option for option in options if option is not type(None))
    if value.strip().lower() == "none" and (type(None) in options or kind == tuple[str, ...]):
        return None if type(None) in options else ()
    if kind == tuple[int, int]:
        return parse_size(value)
    if kind == tuple[str, ...]:
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if typing.get_origin(kind) is tuple:
        parts = value.split(",")
        if len(parts) != len(typing.get_args(kind)):
            raise ValueError(f"{value!r} is not {len(typing.get_args(kind))} comma-separated numbers")
        return tuple(float(part) for part in parts)
    return kind(value) if kind in (int, float) else value


def match(hint: Any, value: Any) -> tuple[bool, Any]:
    """(whether `value` fits the type `hint`, the value converted: lists to tuples, ints to floats)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            ok, converted = match(option, value)
            if ok:
                return True, converted
        return False, None
    if hint is type(None):
        return value is None, None
    if hint in (bool, int, str):  # a bool is an int, but not a number here
        return isinstance(value, hint) and not (hint is int and isinstance(value, bool)), value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else None
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False, None
        args = typing.get_args(hint)
        item_types = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(item_types) != len(value):
            return False, None
        items = [match(t, v) for t, v in zip(item_types, value, strict=True)]
        return all(ok for ok, _ in items), tuple(v for _, v in items)
    raise TypeError(f"unsupported config type {hint}")  # a new field type needs a branch here


BUILTIN_DIR = Path(__file__).with_name("recipe_files")
BUILTIN = ("seed", "strong")
# Groups of fields a recipe cites a source for; fields in no group (seed, workers, device, ...) are run settings.
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
    """Read, check and resolve a recipe and its `extends` chain; every problem a UserError naming the file."""
    if str(spec) in BUILTIN:
        path = BUILTIN_DIR / f"{spec}.toml"
    else:  # a path, relative to the file that extends it (or to the working folder)
        path = ((_seen[-1].parent if _seen else Path()) / Path(spec).expanduser()).resolve()
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
