"""Helpers shared by the training fault tests: run a CLI command in a child process, signal it at a chosen moment."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

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
