"""User-facing errors: the CLI turns these into one paragraph and exit code 2; notebooks see a plain exception."""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A problem with the user's input that the user can fix: one paragraph naming the file or value and the fix.
    Raised instead of `sys.exit` so a notebook kernel never dies; the CLI maps it to exit code 2."""

    def __init__(self, message: str = "") -> None:
        # A DataLoader worker re-raises as UserError("Caught UserError in DataLoader worker ...
        # Original Traceback ... UserError: <paragraph>"): keep only the user's paragraph.
        marker = "UserError: "
        if message.startswith("Caught UserError") and marker in message:
            message = message.rsplit(marker, 1)[1].strip()
        super().__init__(message)


def format_paths(paths, limit: int = 5) -> str:
    """Render a few example paths for an error message, saying how many more there are."""
    paths = [str(p) for p in paths]
    shown = ", ".join(paths[:limit])
    more = len(paths) - limit
    return shown + (f" (and {more} more)" if more > 0 else "")


def describe_error(exc: BaseException) -> str:
    """'Type: first line' of an exception, so a UserError can quote the cause without a traceback."""
    lines = str(exc).splitlines()
    return f"{exc.__class__.__name__}: {lines[0]}" if lines else exc.__class__.__name__


def name_the_file(exc: OSError, path) -> OSError:
    """The same OS error naming `path` when it named no file (a full disk surfaces in `write()`) or only our hidden
    temp file `.<name>.*` beside `path`: the user needs the file they asked for."""
    path = Path(path)
    if exc.filename is not None and not Path(exc.filename).name.startswith(f".{path.name}."):
        return exc
    renamed = OSError(exc.errno, exc.strerror or str(exc), str(path))
    renamed.__cause__ = exc
    return renamed
