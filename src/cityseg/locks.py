"""Locks that a kill never leaves held, and pool workers that die with the process that started them.

Every lock is an flock on a hidden `.lock-<name>` file. The kernel drops it when the last file
descriptor of the holder's open file closes, so a SIGKILL leaves no stale lock, with two rules that
keep it so:

- a forked child (a pool or DataLoader worker) drops the lock descriptors it inherited
  (`os.register_at_fork`), so an orphaned worker cannot keep its dead parent's lock alive;
- pool workers ask the kernel to kill them when their parent dies (Linux `PR_SET_PDEATHSIG`;
  elsewhere a thread waits on the parent), so no orphan keeps working either.

Two ways to take a lock:

    hold_lock(path, what, fix)            refuse at once when another process holds it (run folders:
                                          a second trainer must not wait hours, it must stop)
    wait_lock(path, what)                 wait for a short-lived holder (cache builds), telling the user
                                          who it waits for, and give up after CITYSEG_LOCK_TIMEOUT seconds

The holder writes one line `pid<TAB>started<TAB>command` into the lock file (exclusive holders
replace the file's text, shared holders append), so a refusal can name the process in the way.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from cityseg.errors import UserError

TIMEOUT_ENV = "CITYSEG_LOCK_TIMEOUT"
DEFAULT_TIMEOUT_S = 3600.0  # a cache build of the whole train split takes minutes, not an hour
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>

# Descriptors of the locks this process holds; a forked child drops its copies (see _drop_in_child).
_HELD: set[int] = set()


def _drop_in_child() -> None:
    """After fork: point the inherited lock descriptors at /dev/null, so only the parent holds the locks.

    dup2 rather than close: the child's copies of the parent's objects still name these numbers, and a
    closed number could be reused by a file the child opens and then closed by mistake.
    """
    if not _HELD:
        return
    null = os.open(os.devnull, os.O_RDONLY)
    for fd in _HELD:
        os.dup2(null, fd)
    os.close(null)
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_in_child)


def lock_timeout() -> float:
    """Seconds a blocked wait lasts before it gives up (CITYSEG_LOCK_TIMEOUT, default one hour)."""
    text = os.environ.get(TIMEOUT_ENV)
    if text is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        raise UserError(
            f"{TIMEOUT_ENV}={text!r} is not a number of seconds; set it to e.g. 600, or unset it."
        ) from None
    return max(0.0, value)


def _command() -> str:
    """How this process was started, as the user typed it where possible (`cityseg cv ...`)."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name == "__main__.py" and Path(argv[0]).parent.name == "cityseg":
        argv[0] = "cityseg"
    text = " ".join(argv) or "python"
    return text if len(text) <= 200 else text[:197] + "..."


def _record_holder(fd: int, shared: bool) -> None:
    """Write who holds the lock into the lock file (best effort: it only feeds error messages)."""
    started = datetime.datetime.now().isoformat(sep=" ", timespec="seconds")
    line = f"{os.getpid()}\t{started}\t{_command()}\n".encode()
    with contextlib.suppress(OSError):
        if not shared:
            os.ftruncate(fd, 0)
        os.write(fd, line)  # O_APPEND: shared holders never overwrite each other's lines


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
    for line in lines:
        parts = line.split("\t", 2)
        if len(parts) != 3 or not parts[0].isdigit():
            continue
        pid, started, command = int(parts[0]), parts[1], parts[2]
        (live if _is_running(pid) else dead).append(f"pid {pid} (`{command}`, since {started})")
    if live:
        return ", ".join(dict.fromkeys(live))
    if dead:
        return (
            f"a process that inherited it from {dead[-1]}, which is no longer running; `fuser -v {path}` "
            "shows which process still has the file open"
        )
    return f"another process (`fuser -v {path}` shows which)"


def _open(path: Path) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)


@contextlib.contextmanager
def _held(fd: int) -> Iterator[None]:
    """Keep `fd` registered (so forked children drop it) while the lock is held; unlock and close after."""
    _HELD.add(fd)
    try:
        yield
    finally:
        _HELD.discard(fd)
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.contextmanager
def hold_lock(path: Path, what: str, fix: str, shared: bool = False) -> Iterator[None]:
    """Hold the lock at `path` (shared ones coexist), or refuse at once naming the holder.

    The refusal is a UserError '`what` is in use by <holders>; `fix`'.
    """
    fd = _open(path)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(f"{what} is in use by {describe_holders(path)}; {fix}") from None
    _record_holder(fd, shared)
    with _held(fd):
        yield


@contextlib.contextmanager
def wait_lock(path: Path, what: str, timeout: float | None = None, poll_s: float = 0.1) -> Iterator[None]:
    """Hold the exclusive lock at `path`, waiting (with one note on stderr) for a holder to finish first.

    After `timeout` seconds (CITYSEG_LOCK_TIMEOUT) it gives up with a UserError naming the lock file,
    its holder and what to do, instead of blocking forever behind a hung or orphaned process.
    """
    timeout = lock_timeout() if timeout is None else timeout
    fd = _open(path)
    deadline = time.monotonic() + timeout
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holders = describe_holders(path)
                os.close(fd)
                raise UserError(
                    f"gave up after {timeout:.0f} s waiting for {what} (lock file {path}), held by {holders}. If that "
                    f"process is still working, wait for it to finish or allow a longer wait with {TIMEOUT_ENV}="
                    "SECONDS; if it hangs or was left behind by a killed command, stop it and run this command again."
                ) from None
            if not told:
                print(f"waiting for {what} (lock file {path}, held by {describe_holders(path)})", file=sys.stderr)
                told = True
            time.sleep(poll_s)
    _record_holder(fd, shared=False)
    with _held(fd):
        yield


# ----------------------------------------------------------------------------------------------------------
# Pool workers
# ----------------------------------------------------------------------------------------------------------


def die_with_parent() -> None:
    """Pool initializer: end this worker when the process that started it dies (even by SIGKILL).

    Linux: the kernel sends SIGKILL (PR_SET_PDEATHSIG) when the thread that forked this worker ends,
    so pools must be started from a thread that outlives them (every cityseg pool is). Elsewhere a
    daemon thread waits on the parent's sentinel (reliable for spawned workers, the default there).
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent.pid:  # the parent died before the request was made
            os._exit(1)
        return
    threading.Thread(target=_exit_when_gone, args=(parent.sentinel,), daemon=True).start()


def _exit_when_gone(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])  # readable once the parent is gone
    os._exit(1)
