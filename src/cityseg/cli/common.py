"""Argument types and option groups shared by several subcommands."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from cityseg.system import default_workers


def size_type(text: str) -> tuple[int, int]:
    """Parse 'WxH' (width x height, like the images' 2048x1024) into (width, height): cityseg.training.config.parse_size,
    with argparse's error type."""
    from cityseg.errors import UserError
    from cityseg.training.config import parse_size

    try:
        size = parse_size(text, name="size")
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if size is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size here; write WIDTHxHEIGHT, e.g. 1024x512")
    return size


def _int_at_least(text: str, minimum: int) -> int:
    """Parse a whole number and check its lower bound, with argparse's error type."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least {minimum}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (batch sizes, epochs, counts)."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """An integer >= 0 (worker counts, seeds)."""
    return _int_at_least(text, 0)


def add_workers(add: Callable, what: str, at_most: int | None = None) -> None:
    """--workers N with its default in words: all cores this process may use, or at most `at_most` of them (then
    0, in this process, is allowed too)."""
    if at_most is None:
        add("--workers", type=positive_int, default=default_workers(), metavar="N", help=f"{what} (default: all cores)")
    else:
        limit = f"; 0: in this process (default: all cores, at most {at_most})"
        add("--workers", type=non_negative_int, default=min(at_most, default_workers()), metavar="N", help=what + limit)


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """One default style for every command: ' (default: X)' added once, unless the help says it or there is none to
    show (None, a switch's False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or "(default:" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def add_command(subparsers, name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
    """Add a subcommand parser that also accepts `--debug` after the command name."""
    parser = subparsers.add_parser(name, help=help, description=description or help, formatter_class=_DefaultsFormatter)
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")
    return parser
