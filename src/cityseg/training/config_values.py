"""Values of training config fields: the one size syntax, type checks against a field's hint (JSON and TOML give
lists and ints where the config wants tuples and floats), and the text a value is typed as after its flag."""

from __future__ import annotations

import types
import typing
from typing import Any

from cityseg.errors import UserError


def parse_size(value: str | tuple[int, int] | list[int] | None, name: str = "size") -> tuple[int, int] | None:
    """'WxH' (like the images' 2048x1024), a (W, H) pair, or None/'none'/'full' for the images' own resolution: the
    one parser of sizes (the CLI's, the notebooks' and the recipe files')."""
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
        items = [match(t, v) for t, v in zip(item_types, value, strict=True)]
        return all(ok for ok, _ in items), tuple(v for _, v in items)
    raise TypeError(f"unsupported config type {hint}")  # a new field type needs a branch here
