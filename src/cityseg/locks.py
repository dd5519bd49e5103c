"""Locks that a kill never leaves held, and pool workers that die with the process that started them.

Every lock is an flock on a hidden `.lock-<name>` file: the kernel drops it when the holder dies, and a forked
child drops the descriptors it inherited. `hold_lock` refuses at once (a second trainer must stop, not wait hours);
`wait_lock` waits at most CITYSEG_LOCK_TIMEOUT seconds. The holder writes `pid<TAB>started<TAB>command` into the
lock file, so a refusal names the process in the way.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from cityseg.errors import UserError

TIMEOUT_ENV = "CITYSEG_LOCK_TIMEOUT"
DEFAULT_TIMEOUT_S = 3600.0
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_HELD: set[int] = set()  # descriptors of the locks this process holds


def _drop_in_child() -> None:
    """After fork, point the inherited lock descriptors at /dev/null (dup2, not close: the child's copies of the
    parent's objects still name these numbers)."""
    if _HELD:
        null = os.open(os.devnull, os.O_RDONLY)
        for fd in _HELD:
            os.dup2(null, fd)
        os.close(null)
        _HELD.clear()


os.register_at_fork(after_in_child=_drop_in_child)


def lock_timeout() -> float:
    """Seconds a blocked wait lasts (CITYSEG_LOCK_TIMEOUT, default one hour); anything but a finite number >= 0 is
    refused."""
    text = os.environ.get(TIMEOUT_ENV)
    if text is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise UserError(
            f"{TIMEOUT_ENV}={text!r} is not a number of seconds >= 0 (finite); set it to e.g. 600, or unset it "
            f"for the default {DEFAULT_TIMEOUT_S:.0f}."
        )
    return value


def _command() -> str:
    """How this process was started, as the user typed it where possible (`cityseg cv ...`)."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name == "__main__.py" and Path(argv[0]).parent.name == "cityseg":
        argv[0] = "cityseg"
    text = " ".join(argv) or "python"
    return text if len(text) <= 200 else text[:197] + "..."


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def describe_holders(path: Path) -> str:
    """'pid 123 (`cityseg cv ...`, since 12:00:01)' for each live holder named in the lock file."""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    live, dead = [], []
    for parts in (line.split("\t", 2) for line in lines):
        if len(parts) == 3 and parts[0].isdigit():
            (live if _is_running(int(parts[0])) else dead).append(f"pid {parts[0]} (`{parts[2]}`, since {parts[1]})")
    if live:
        return ", ".join(dict.fromkeys(live))
    if dead:
        return (
            f"a process that inherited it from {dead[-1]}, which is no longer running; `fuser -v {path}` "
            "shows which process still has the file open"
        )
    return f"another process (`fuser -v {path}` shows which)"


@contextlib.contextmanager
def _locked(path: Path, shared: bool, give_up: float | None, what: str, refusal: Callable[[], str]) -> Iterator[None]:
    """flock `path`, waiting until the monotonic time `give_up` (None: not at all), then UserError(refusal())."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    told = False
    try:
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if give_up is None or time.monotonic() >= give_up:
                    raise UserError(refusal()) from None
                if not told:
                    print(f"waiting for {what} (lock file {path}, held by {describe_holders(path)})", file=sys.stderr)
                    told = True
                time.sleep(0.1)
        started = datetime.datetime.now().isoformat(sep=" ", timespec="seconds")
        with contextlib.suppress(OSError):  # best effort: it only feeds error messages
            if not shared:
                os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\t{started}\t{_command()}\n".encode())  # O_APPEND: shared holders add
        _HELD.add(fd)
        yield
    finally:
        _HELD.discard(fd)
        os.close(fd)  # closing the last descriptor releases the flock


def hold_lock(path: Path, what: str, fix: str, shared: bool = False) -> contextlib.AbstractContextManager[None]:
    """Hold the lock at `path` (shared ones coexist), or refuse at once: '`what` is in use by <holders>; `fix`'."""
    return _locked(Path(path), shared, None, what, lambda: f"{what} is in use by {describe_holders(path)}; {fix}")


def wait_lock(path: Path, what: str, timeout: float | None = None) -> contextlib.AbstractContextManager[None]:
    """Hold the exclusive lock at `path`, waiting (with one note on stderr) at most `timeout` seconds
    (CITYSEG_LOCK_TIMEOUT) for a holder to finish, then giving up with a UserError naming the file and holder."""
    timeout = lock_timeout() if timeout is None else timeout

    def refusal() -> str:
        return (
            f"gave up after {timeout:.0f} s waiting for {what} (lock file {path}), held by {describe_holders(path)}. "
            f"If that process is still working, wait for it to finish or allow a longer wait with {TIMEOUT_ENV}="
            "SECONDS; if it hangs or was left behind by a killed command, stop it and run this command again."
        )

    return _locked(Path(path), False, time.monotonic() + timeout, what, refusal)


def die_with_parent() -> None:
    """Pool initializer: end this worker when the process that started it dies, even by SIGKILL (Linux's
    PR_SET_PDEATHSIG; elsewhere a thread waits on the parent)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent.pid:  # the parent died before the request was made
            os._exit(1)
        return
    threading.Thread(target=_exit_when_gone, args=(parent.sentinel,), daemon=True).start()


def _exit_when_gone(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])  # readable once the parent is gone
    os._exit(1)
