"""Run a CLI command in a child process (and signal it at a chosen moment) or in this one, capturing its output."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

# One thread per child: the CI machine has two cores, and the runs compared must use the same thread count.
CLI_ENV = os.environ | {"OMP_NUM_THREADS": "1"}


def cityseg_command(*args: str) -> list[str]:
    """`python -m cityseg ARGS` with this interpreter, so the child sees the same installed package."""
    return [sys.executable, "-m", "cityseg", *map(str, args)]


def default_sigint() -> None:
    """In a child before exec: SIGINT raises KeyboardInterrupt again (see `running`)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def running(command: list[str], stderr: Path | None = None) -> Iterator[subprocess.Popen]:
    """Start `command`; whatever happens in the block, the child is gone (killed and reaped) when it ends.

    stderr goes to a file, not a pipe: a pipe nobody reads fills up with progress bars and blocks the child.
    """
    with open(stderr or os.devnull, "wb") as err:
        # SIGINT back to its default in the child: a suite started in the background (nohup, `&`) passes an
        # ignored SIGINT down, and Python then never raises KeyboardInterrupt, so Ctrl-C tests could not work.
        process = subprocess.Popen(
            command, env=CLI_ENV, stdout=subprocess.DEVNULL, stderr=err, preexec_fn=default_sigint
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()


def signal_when(
    process: subprocess.Popen, ready: Callable[[], object], signum: int = signal.SIGKILL, timeout: float = 120.0
) -> None:
    """Send `signum` to `process` as soon as `ready()` is true; fail if the child ends first or it takes too long."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, f"the command ended (exit {process.returncode}) before the moment to signal it"
        assert time.monotonic() < deadline, f"the moment to signal the command did not come within {timeout:.0f} s"
        time.sleep(0.01)
    assert process.poll() is None, "the command ended before it could be signalled"
    os.kill(process.pid, signum)


def cli_in_process(*args: object) -> SimpleNamespace:
    """`cityseg ARGS` in this process (no start-up of torch): returncode, stdout and stderr, as a child's would be."""
    from cityseg.cli import main

    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            code = main([os.fspath(arg) if isinstance(arg, Path) else str(arg) for arg in args])
        except SystemExit as exit_:  # argparse's refusals
            code = exit_.code
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def format_1_checkpoint(path: Path, network: nn.Module) -> Path:
    """A checkpoint as cityseg wrote it before models were named: format 1, stamped "unet-resnet34", its config
    without arch or encoder fields."""
    import torch

    from cityseg.training.config import resolve_config

    config = resolve_config("seed", encoder_weights=None, size=(128, 64)).to_dict()
    del config["arch"], config["encoder"]
    payload = {
        "format": "cityseg-checkpoint",
        "format_version": 1,
        "arch": "unet-resnet34",
        "model": network.state_dict(),
    }
    torch.save({**payload, "num_classes": 19, "epoch": 3, "config": config, "best_metric": 0.5}, path)
    return path
