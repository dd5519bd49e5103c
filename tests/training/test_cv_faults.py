"""`cityseg cv` killed (SIGKILL), interrupted (Ctrl-C) and raced by a second `cv` at chosen moments, then `--resume`d:
the same outputs, bit for bit, as one uninterrupted run; and the same numbers whatever the loader's worker count.

Real child processes with random crops, flips and photometric distortion in 2 loader workers (the default path):
shuffles follow (seed, epoch) and each sample's draws (seed, epoch, index), so nothing depends on which worker
loaded what, or on worker state a kill destroys. The trainer restores weights, optimizer moments, schedule step
and every random stream from last.pt, which leaves nothing to differ: equality is exact (a tolerance here would
hide a resume that loses state), for log rows, summary.json and every checkpoint tensor (timings excluded).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from helpers_shared import built_once
from helpers_tensorboard import assert_matches_log
from helpers_training import CLI_ENV, cityseg_command, cli_in_process, running, signal_when

from cityseg.cli import main
from cityseg.training.checkpoint import load_checkpoint
from cityseg.training.runfolder import load_log

pytestmark = pytest.mark.trains

# 2 folds x 2 epochs of 3 steps and a full fit of 6, with the strong recipe's augmentations on 64x32 crops: every
# stage of cv, each moment below (mid-run, between folds, in the full fit) present. Batch 3: with 2 loader workers
# one worker loads two of each epoch's three batches (the full fit's six are shared 3 + 3), so a draw that depended
# on a worker's own history would show.
BATCH_SIZE = 3
OPTIONS = (
    "--recipe",
    "strong",
    "--folds",
    "2",
    "--epochs",
    "2",
    "--crop",
    "64x32",
    "--scale-range",
    "0.25,1.0",
    "--batch-size",
    str(BATCH_SIZE),
    "--encoder",
    "resnet18",  # the smallest of the default's family: what is checked holds for any model
    "--encoder-weights",
    "none",
    "--device",
    "cpu",
    "--lr",
    "1e-3",
)
RUNS = ("fold_0", "fold_1", "full")
TIMINGS = ("seconds", "images_per_s", "data_wait_share", "peak_memory_gb")
STATE_KEYS = ("model", "optimizer", "scheduler", "rng")  # the tensors a resumed run continues from


def cv_args(root: Path, runs: Path, *extra: str, workers: int = 2) -> list[str]:
    return ["cv", str(root), "--out", str(runs), *OPTIONS, "--workers", str(workers), *extra]


def run_to_the_end(root: Path, runs: Path, *extra: str) -> None:
    """`cityseg cv` in a child process, left alone until it exits; it must succeed."""
    command = cityseg_command(*cv_args(root, runs, *extra))
    done = subprocess.run(command, env=CLI_ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def reference(synth_root, tmp_path_factory) -> Path:
    """One uninterrupted `cityseg cv` with 2 loader workers, read by every test here."""
    return (
        built_once(tmp_path_factory, "cv-reference", lambda folder: run_to_the_end(synth_root, folder / "runs"))
        / "runs"
    )


def without_timings(value):
    """A log row or summary with the wall-clock figures left out, recursively."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def tensors(state, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a (nested) checkpoint entry, by path."""
    if isinstance(state, torch.Tensor):
        return {prefix: state}
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, (list, tuple)) else ()
    found: dict[str, torch.Tensor] = {}
    for key, value in items:
        found |= tensors(value, f"{prefix}/{key}")
    return found


def assert_same_run(run_dir: Path, expected_dir: Path) -> None:
    """Same log rows (raw lines: load_log would skip a torn one) and bit-identical last.pt and best.pt state."""
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert without_timings(rows) == without_timings(load_log(expected_dir)), run_dir.name
    for name in ("last.pt", "best.pt"):
        got, expected = load_checkpoint(run_dir / name), load_checkpoint(expected_dir / name)
        assert got["epoch"] == expected["epoch"], (run_dir.name, name)
        got_tensors = tensors({key: got[key] for key in STATE_KEYS})
        expected_tensors = tensors({key: expected[key] for key in STATE_KEYS})
        assert got_tensors.keys() == expected_tensors.keys()
        for key, tensor in expected_tensors.items():
            assert torch.equal(got_tensors[key], tensor), f"{run_dir.name}/{name}: {key} differs"


def temp_files(folder: Path) -> list[Path]:
    """Half-written files a kill can leave (atomic writes go through '.<name>.*.tmp' beside the target);
    not the lock files, which stay (an flock needs no clean-up: the kernel drops it with its holder)."""
    return sorted(p for p in folder.rglob(".*") if not p.name.startswith(".lock-")) if folder.exists() else []


def log_rows(run_dir: Path) -> int:
    """Epochs the run has logged so far (0 before its folder exists)."""
    return len(load_log(run_dir))


def saving_last(run_dir: Path) -> Callable[[], bool]:
    """A moment: last.pt of `run_dir` is being written right now (its temp file exists)."""
    return lambda: any(run_dir.glob(".last.pt.*.tmp"))


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder below `folder`, hidden ones included, with size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


@contextlib.contextmanager
def stopped_when(process: subprocess.Popen, ready: Callable[[], bool]) -> Iterator[None]:
    """SIGSTOP `process` once `ready()` holds: it keeps its locks while stopped, so an overlap is certain."""
    signal_when(process, ready, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(process.pid, signal.SIGCONT)


def test_no_workers_gives_the_numbers_of_two_workers(synth_root, reference, tmp_path):
    torch.set_num_threads(1)  # as the children (CLI_ENV)
    runs = tmp_path / "runs"
    assert main(cv_args(synth_root, runs, "--only-folds", "0", workers=0)) == 0
    assert (runs / "folds.json").read_bytes() == (reference / "folds.json").read_bytes()
    assert_same_run(runs / "fold_0", reference / "fold_0")


def test_kills_a_ctrl_c_and_a_second_cv_then_resume_equal_an_uninterrupted_run(synth_root, reference, tmp_path):
    runs, stderr = tmp_path / "runs", tmp_path / "stderr.txt"
    fold_0, fold_1, full = (runs / name for name in RUNS)

    # 1. SIGKILL during fold 0, while last.pt of epoch 2 is being written: the resume starts from epoch 1's
    #    last.pt (mid-run, the loader workers' state lost) and must drop the half-written temp file.
    with running(cityseg_command(*cv_args(synth_root, runs))) as process:
        signal_when(process, lambda: log_rows(fold_0) == 1 and saving_last(fold_0)())
        process.wait()
    assert log_rows(fold_0) == 1 and load_checkpoint(fold_0 / "last.pt")["epoch"] == 1
    assert temp_files(fold_0) and not fold_1.exists()

    # 2. Between folds (fold 0 finished, fold 1 just begun), with the resuming process stopped: a second `cv`, or
    #    `--resume`, on the same folder is refused before writing a byte, naming the running one; then SIGKILL.
    with running(cityseg_command(*cv_args(synth_root, runs, "--resume"))) as process:
        with stopped_when(process, (fold_1 / "config.json").exists):
            before = snapshot(runs)
            for extra in ((), ("--resume",)):
                second = cli_in_process(*cv_args(synth_root, runs, *extra))
                said = "".join(second.stderr.split())  # the CLI wraps its paragraph, possibly inside a path
                assert second.returncode == 2 and f"pid{process.pid}" in said and "Traceback" not in said, said
            assert snapshot(runs) == before
            process.kill()
        process.wait()
    assert log_rows(fold_0) == 2 and log_rows(fold_1) == 0 and not full.exists()
    assert temp_files(fold_0) == []  # the resume cleaned up after kill 1
    fold_0_files = {p.name: p.stat().st_mtime_ns for p in fold_0.iterdir()}

    # 3. Ctrl-C early in fold 1's epoch 2: exit 130, the state on disk that of the last finished epoch, no
    #    half-written file, and a message that says so.
    with running(cityseg_command(*cv_args(synth_root, runs, "--resume")), stderr=stderr) as process:
        signal_when(process, lambda: log_rows(fold_1) == 1, signal.SIGINT)
        code = process.wait(timeout=120)
    message = stderr.read_text()
    assert code == 130, message[-3000:]  # cityseg.cli maps KeyboardInterrupt to 130, like a shell
    assert "Traceback" not in message
    said = re.search(r"interrupted: (\S+) holds epoch (\d+) of (\S+); continue with --resume", message)
    assert said, message[-3000:]
    assert (said[1], int(said[2]), said[3]) == (str(fold_1 / "last.pt"), 1, "fold_1")
    assert load_checkpoint(fold_1 / "last.pt")["epoch"] == 1 == log_rows(fold_1)
    assert not full.exists() and temp_files(runs) == []

    # 4. SIGKILL during the full fit, while its first last.pt is being written.
    with running(cityseg_command(*cv_args(synth_root, runs, "--resume"))) as process:
        signal_when(process, saving_last(full))
        process.wait()
    assert log_rows(fold_1) == 2 and log_rows(full) == 0 and temp_files(full)
    assert not (runs / "summary.json").exists()

    run_to_the_end(synth_root, runs, "--resume")
    assert {p.name: p.stat().st_mtime_ns for p in fold_0.iterdir()} == fold_0_files  # finished fold never retrained
    assert (runs / "folds.json").read_bytes() == (reference / "folds.json").read_bytes()
    summary = json.loads((runs / "summary.json").read_text())
    assert summary["complete"] and summary["full"]["finished"]
    assert without_timings(summary) == without_timings(json.loads((reference / "summary.json").read_text()))
    assert sorted(p.name for p in runs.iterdir()) == sorted(p.name for p in reference.iterdir())
    for name in RUNS:
        assert_same_run(runs / name, reference / name)
        # TensorBoard: every iteration's loss and lr once, epoch scalars equal to log.jsonl, though kills 1 and 4
        # came after an epoch's events were written
        info = json.loads((runs / name / "config.json").read_text())
        assert_matches_log(runs / name, info["config"]["epochs"], info["n_train"] // BATCH_SIZE)
    assert temp_files(runs) == []
