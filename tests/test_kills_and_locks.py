"""Kills leave nothing hanging: pool workers die with their parent, no orphan holds a lock, and a wait on a
lock ends with a message instead of blocking forever (real `cityseg` processes, found again through /proc)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from helpers_training import CLI_ENV, cityseg_command

from cityseg.data.cache import build_cache, entry_name
from cityseg.locks import hold_lock, wait_lock

LINUX = Path("/proc/self/environ").exists()
pytestmark = [pytest.mark.skipif(not LINUX, reason="finds processes through /proc"), pytest.mark.slow]  # kills children


def _flat(text: str) -> str:
    return "".join(text.split())


def tagged(tag: str) -> list[int]:
    """Live processes (not zombies) whose environment carries TAG: a command and every child it forked."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if f"CITYSEG_TEST_TAG={tag}".encode() not in (entry / "environ").read_bytes():
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


@pytest.fixture
def tag():
    """A fresh tag for this test's processes; anything still carrying it at the end is killed."""
    value = uuid.uuid4().hex
    yield value
    for pid in tagged(value):
        os.kill(pid, signal.SIGKILL)


def survivors(tag: str, grace_s: float = 10.0) -> list[int]:
    """Processes still carrying TAG after giving the kernel `grace_s` to end them."""
    deadline = time.monotonic() + grace_s
    while (left := tagged(tag)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def run(command: list[str], tag: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    """Run a tagged command to its end; output through a file, since an orphan would hold a pipe open."""
    with open(Path(os.environ.get("TMPDIR", "/tmp")) / f"stderr-{tag}", "w+") as err:
        done = subprocess.run(
            command,
            env=CLI_ENV | {"CITYSEG_TEST_TAG": tag} | env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
            timeout=timeout,
        )
        err.seek(0)
        done.stderr = err.read()
    return done


def test_killed_cache_build_leaves_no_worker_and_no_lock_behind(synth_root, tmp_path, tag):
    out = tmp_path / "cache"
    command = cityseg_command("cache", synth_root, "--out", out, "--splits", "train", "--workers", "2", "--no-progress")
    killed = run(command, tag, CITYSEG_CACHE_CRASH_AT="mid-decode")  # the build SIGKILLs itself mid-decode
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert survivors(tag) == []  # the decoding pool went with it

    rerun = run(command, tag, timeout=60, CITYSEG_LOCK_TIMEOUT="20")  # the same command, no lock in the way
    assert rerun.returncode == 0, rerun.stderr
    assert "waiting for" not in rerun.stderr


def test_a_blocked_wait_on_a_lock_gives_up_with_a_message(synth_root, tmp_path, tag):
    out = tmp_path / "cache"
    build_cache(synth_root, ("val",), None, out, workers=1, progress=False)
    lock = out / f".lock-{entry_name('val', None)}"
    with hold_lock(lock, "the test's hold", "-"):
        done = run(
            cityseg_command("cache", synth_root, "--out", out, "--splits", "val", "--workers", "1", "--no-progress"),
            tag,
            CITYSEG_LOCK_TIMEOUT="1",
        )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    message = _flat(done.stderr)
    assert _flat(str(lock)) in message and f"pid{os.getpid()}" in message and "CITYSEG_LOCK_TIMEOUT" in message


def test_killed_synth_leaves_no_worker_behind(tmp_path, tag):
    out = tmp_path / "synth"
    command = cityseg_command(
        "synth",
        out,
        "--size",
        "256x128",
        "--train-cities",
        "4",
        "--val-cities",
        "0",
        "--test-cities",
        "0",
        "--per-city",
        "4",
        "--workers",
        "2",
        "--no-progress",
    )
    process = subprocess.Popen(
        command, env=CLI_ENV | {"CITYSEG_TEST_TAG": tag}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("leftImg8bit/*/*/*.png")):  # the pool is at work
            assert process.poll() is None and time.monotonic() < deadline, "synth ended before it could be killed"
            time.sleep(0.01)
        process.kill()
    finally:
        process.wait()
    assert survivors(tag) == []


def test_forked_children_do_not_keep_a_lock(tmp_path):
    lock = tmp_path / ".lock-x"
    with hold_lock(lock, "x", "-"):
        child = os.fork()
        if child == 0:  # the child outlives its parent's hold; it must not keep the lock
            time.sleep(2)
            os._exit(0)
    try:
        with wait_lock(lock, "x", timeout=1):
            pass
    finally:
        os.waitpid(child, 0)


@pytest.mark.parametrize("value", ["nan", "-5", "inf", "ten"])
def test_a_lock_timeout_that_is_not_a_finite_number_of_seconds_is_refused(tmp_path, monkeypatch, value):
    from cityseg.errors import UserError

    monkeypatch.setenv("CITYSEG_LOCK_TIMEOUT", value)
    with pytest.raises(UserError, match=f"CITYSEG_LOCK_TIMEOUT='{value}'"):
        with wait_lock(tmp_path / ".lock-x", "x"):
            pass
