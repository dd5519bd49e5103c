"""Argument types and option groups shared by several subcommands."""

import argparse
from collections.abc import Callable

from cityseg.system import default_workers


def size_type(text: str) -> tuple[int, int]:
    """Parse 'WxH' into (width, height) with config's parse_size, raising argparse's error type."""
    from cityseg.errors import UserError
    from cityseg.training.config import parse_size

    try:
        size = parse_size(text, name="size")
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if size is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size here; write WIDTHxHEIGHT, e.g. 1024x512")
    return size


def int_at_least(minimum: int) -> Callable[[str], int]:
    """The argparse type of a whole number >= `minimum`, with argparse's error type."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be at least {minimum}")
        return value

    return parse


positive_int, non_negative_int = int_at_least(1), int_at_least(0)  # batch sizes and counts; workers and seeds


def add_workers(add: Callable, what: str, at_most: int | None = None) -> None:
    """--workers N, default all usable cores (at most `at_most`, which also allows 0: in process)."""
    if at_most is None:
        add("--workers", type=positive_int, default=default_workers(), metavar="N", help=f"{what} (default: all cores)")
    else:
        limit = f"; 0: in this process (default: all cores, at most {at_most})"
        add("--workers", type=non_negative_int, default=min(at_most, default_workers()), metavar="N", help=what + limit)


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """' (default: X)' once per option, unless the help says it or there is none (None, False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or "(default:" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def add_command(subparsers, name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
    """Add a subcommand parser that also accepts `--debug` after the command name."""
    parser = subparsers.add_parser(name, help=help, description=description or help, formatter_class=_DefaultsFormatter)
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")
    return parser
