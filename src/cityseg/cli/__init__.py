"""The `cityseg` command line: one subcommand per step of the pipeline, each a module with `register(subparsers)`.

This module owns the exit codes: 0 success, 2 bad input or usage (one paragraph, no traceback unless `--debug`),
1 internal error (with traceback, since that is a bug to report).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import textwrap
import traceback
from pathlib import Path

from cityseg import __version__
from cityseg.errors import UserError

# Order here is the order `cityseg --help` lists them: the pipeline's order.
COMMAND_MODULES = "synth download prepare cache recipes cv train predict export evaluate submit report compare".split()

# OS errors that mean "the place you pointed me at cannot take this", not a bug.
_USER_OS_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.ENOENT}
# ... and "a file stands where a folder must be created" (out/x when `out` is a file, or a dangling link).
_IN_THE_WAY_ERRNOS = {errno.ENOTDIR, errno.EEXIST}


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="cityseg",
        description="Semantic segmentation on Cityscapes with any segmentation_models_pytorch model (U-Net / "
        "ResNet-34 by default): synthetic data, label preparation, 5-fold cross-validation, prediction, official "
        "evaluation and a PDF report.",
        epilog="Run `cityseg COMMAND --help` for the options of one step. Environment: CITYSEG_LOCK_TIMEOUT "
        "(seconds a wait for another process's lock lasts, default 3600); CITYSEG_FSYNC=0 (do not fsync finished "
        "files: for throwaway runs on slow disks; a kill never needs the fsync, a power cut does).",
    )
    parser.add_argument("--version", action="version", version=f"cityseg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:  # each imports only argparse helpers; the library loads when its command runs
        importlib.import_module(f"cityseg.cli.{name}").register(subparsers)
    return parser


def _print_error(message: str) -> None:
    """`error: ` and the message as one wrapped paragraph, paths kept whole so they can be copied."""
    wrap = {"subsequent_indent": "  ", "break_long_words": False, "break_on_hyphens": False}
    print(f"error: {textwrap.fill(' '.join(message.split()), 100, **wrap)}", file=sys.stderr)


def _os_error_message(exc: OSError) -> str | None:
    """The paragraph for an OS error the user can fix (a full disk, permissions, a file in the way); None for a bug."""
    if exc.errno in _IN_THE_WAY_ERRNOS and exc.filename:
        path = Path(exc.filename)
        blocker = next((p for p in (path, *path.parents) if os.path.lexists(p)), None)
        if blocker is not None and not blocker.is_dir():
            what = "a symbolic link to a path that does not exist" if blocker.is_symlink() else "a file"
            where = f"{blocker} is {what}" if blocker == path else f"cannot create {path}: {blocker} is {what}"
            return (
                f"{where}, not a folder, so nothing can be written below it. Choose another output path, or move "
                f"{blocker} away first (it was left untouched)."
            )
    if exc.errno not in _USER_OS_ERRNOS:
        return None
    return (
        f"could not write or read {exc.filename or 'the output folder'}: {exc.strerror}. Free some space, fix the "
        "permissions, or point the command at another folder; files written before this step are intact."
    )


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run one subcommand and map its outcome to an exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse itself exits 2 on usage errors
    debug = getattr(args, "debug", False)
    try:
        result = args.func(args)
    except BrokenPipeError:  # the reader went away (`cityseg recipes | head`): stop quietly, as `cat` does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 141  # 128 + SIGPIPE, what a shell reports for a command killed by a closed pipe
    except KeyboardInterrupt:
        if not debug:
            # Ctrl-C can land inside a constructor (a tqdm bar being built); the half-built object's __del__
            # then fails when it is collected and Python prints "Exception ignored in ... Traceback" at exit.
            # The user asked to stop and needs only the line below (--debug keeps those reports).
            sys.unraisablehook = lambda unraisable: None
        print("interrupted", file=sys.stderr)
        return 130
    except (UserError, OSError) as exc:
        message = str(exc) if isinstance(exc, UserError) else _os_error_message(exc)
        if message is None:  # an OS error that is not the user's to fix: a bug, with its traceback
            raise
        if debug:
            traceback.print_exc()
        _print_error(message)
        return 2
    except Exception:  # noqa: BLE001 - anything else is a bug: show it
        traceback.print_exc()
        print("internal error: this is a bug in cityseg; the traceback above says where.", file=sys.stderr)
        return 1
    return int(result or 0)
