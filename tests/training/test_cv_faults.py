"""`cityseg cv` killed (SIGKILL) or interrupted (Ctrl-C) at chosen moments, then `--resume`d: same outputs as one clean run.

Every run is a real `cityseg cv` child process with --workers 0 on one CPU thread, so a clean run is
deterministic and a resumed one must reproduce it exactly: the trainer restores weights, optimizer moments,
schedule step and every random stream from last.pt, which leaves nothing to differ (a tolerance here would
hide a resume that loses state). The folder killed three times is also read for its TensorBoard streams.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from helpers_tensorboard import assert_matches_log
from helpers_training import CLI_ENV, cityseg_command, running, signal_when

from cityseg.training.checkpoint import load_checkpoint
from cityseg.training.runfolder import load_log

pytestmark = pytest.mark.slow  # a reference cv plus killed and resumed ones in child processes

# 2 folds x 2 epochs of 2 steps, then a full fit of 1-2 epochs of 5 steps: every stage of cv, each moment below
# (mid-run, between folds, in the full fit) present; batch 4 halves the steps, whose count no check here needs.
BATCH_SIZE = 4
CV_OPTIONS = (
    "--folds",
    "2",
    "--epochs",
    "2",
    "--size",
    "64x32",
    "--batch-size",
    str(BATCH_SIZE),
    "--workers",
    "0",
    "--encoder-weights",
    "none",
    "--device",
    "cpu",
    "--lr",
    "1e-3",
)
RUNS = ("fold_0", "fold_1", "full")
DETERMINISTIC_FIELDS = ("epoch", "lr", "train_loss", "val_loss", "val_miou", "class_iou")  # not seconds, images_per_s


def cv_command(root: Path, runs: Path, *extra: str) -> list[str]:
    """The tiny cross-validation every test here runs."""
    return cityseg_command("cv", root, "--out", runs, *CV_OPTIONS, *extra)


def run_to_the_end(root: Path, runs: Path, *extra: str) -> None:
    """`cityseg cv` left alone until it exits; it must succeed."""
    done = subprocess.run(cv_command(root, runs, *extra), env=CLI_ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def reference(synth_root, tmp_path_factory) -> dict:
    """One uninterrupted `cityseg cv`, shared by the tests: its folder and its final models' weights."""
    runs = tmp_path_factory.mktemp("reference") / "runs"
    run_to_the_end(synth_root, runs)
    weights = {name: load_checkpoint(runs / name / "last.pt")["model"] for name in RUNS}
    return {"runs": runs, "weights": weights}


def temp_files(folder: Path) -> list[Path]:
    """Half-written files a kill can leave (atomic writes go through '.<name>.*.tmp' beside the target);
    not the lock files, which stay (an flock needs no clean-up: the kernel drops it with its holder)."""
    return sorted(p for p in folder.rglob(".*") if not p.name.startswith(".lock-")) if folder.exists() else []


def deterministic(rows: list[dict]) -> list[dict]:
    """The fields a resume must reproduce exactly (timings differ between any two runs)."""
    return [{key: row[key] for key in DETERMINISTIC_FIELDS} for row in rows]


def assert_same_outputs(runs: Path, reference: dict) -> None:
    """The finished folder holds what the clean run wrote: folds, one row per epoch, summary, loadable models."""
    expected = reference["runs"]
    assert (runs / "folds.json").read_bytes() == (expected / "folds.json").read_bytes()
    summary = json.loads((runs / "summary.json").read_text())
    assert summary == json.loads((expected / "summary.json").read_text())
    assert summary["complete"] and summary["full"]["finished"]
    assert sorted(p.name for p in runs.iterdir()) == sorted(p.name for p in expected.iterdir())
    best_epochs = {f"fold_{f['fold']}": f["best_epoch"] for f in summary["folds"]} | {"full": summary["chosen_epochs"]}
    for name in RUNS:
        # Raw lines, not load_log: it would quietly skip a torn line; a duplicated epoch would show here.
        rows = [json.loads(line) for line in (runs / name / "log.jsonl").read_text().splitlines()]
        expected_rows = load_log(expected / name)
        assert [r["epoch"] for r in rows] == list(range(1, len(expected_rows) + 1)), name
        assert deterministic(rows) == deterministic(expected_rows), name

        last, best = load_checkpoint(runs / name / "last.pt"), load_checkpoint(runs / name / "best.pt")
        assert last["epoch"] == len(rows) and best["epoch"] == best_epochs[name], name
        for key, tensor in reference["weights"][name].items():
            assert torch.equal(last["model"][key], tensor), f"{name}: {key} differs from the uninterrupted run"
    assert temp_files(runs) == []


def log_rows(run_dir: Path) -> int:
    """Epochs the run has logged so far (0 before its folder exists)."""
    return len(load_log(run_dir))


def saving_last(run_dir: Path):
    """A moment test: last.pt of `run_dir` is being written right now (its temp file exists)."""
    return lambda: any(run_dir.glob(".last.pt.*.tmp"))


@pytest.fixture(scope="module")
def killed_three_times(synth_root, tmp_path_factory) -> Path:
    """`cityseg cv` SIGKILLed at three moments, each checked as it is reached, then `--resume`d to the end.

    A fixture, not a test, because two tests read the finished folder: the outputs (equal to the reference) and
    the TensorBoard streams (each step once, though kills 1 and 3 came after an epoch's events were written).
    """
    runs = tmp_path_factory.mktemp("killed") / "runs"
    fold_0, fold_1, full = (runs / name for name in RUNS)

    # 1. During fold 0: while last.pt of epoch 2 is being written, so the resume starts from epoch 1's
    #    last.pt (mid-run) and must drop the half-written temp file.
    with running(cv_command(synth_root, runs)) as process:
        signal_when(process, lambda: log_rows(fold_0) == 1 and saving_last(fold_0)())
        process.wait()
    assert log_rows(fold_0) == 1 and load_checkpoint(fold_0 / "last.pt")["epoch"] == 1
    assert temp_files(fold_0) and not fold_1.exists()

    # 2. Between folds: fold 0 finished, fold 1's folder just made (the resume must skip fold 0, untouched).
    with running(cv_command(synth_root, runs, "--resume")) as process:
        signal_when(process, fold_1.exists)
        process.wait()
    assert log_rows(fold_0) == 2 and log_rows(fold_1) == 0 and not full.exists()
    assert temp_files(fold_0) == []  # the resume cleaned up after kill 1
    fold_0_files = {p.name: p.stat().st_mtime_ns for p in fold_0.iterdir()}

    # 3. During the full fit: while its first last.pt is being written.
    with running(cv_command(synth_root, runs, "--resume")) as process:
        signal_when(process, saving_last(full))
        process.wait()
    assert log_rows(fold_1) == 2 and log_rows(full) == 0 and temp_files(full)
    assert not (runs / "summary.json").exists()

    run_to_the_end(synth_root, runs, "--resume")
    assert {p.name: p.stat().st_mtime_ns for p in fold_0.iterdir()} == fold_0_files  # finished fold never retrained
    return runs


def test_sigkill_at_three_moments_then_resume_equals_an_uninterrupted_run(killed_three_times, reference):
    assert_same_outputs(killed_three_times, reference)


def test_sigkill_then_resume_gives_every_run_one_complete_stream(killed_three_times):
    """TensorBoard after the kills: every iteration's loss and lr once, epoch scalars equal to log.jsonl."""
    for name in RUNS:
        info = json.loads((killed_three_times / name / "config.json").read_text())
        steps = info["n_train"] // BATCH_SIZE  # the last, smaller batch is dropped
        assert_matches_log(killed_three_times / name, info["config"]["epochs"], steps)


def test_ctrl_c_exits_130_keeps_the_last_epoch_then_resume_equals_an_uninterrupted_run(synth_root, reference, tmp_path):
    runs, stderr = tmp_path / "runs", tmp_path / "stderr.txt"
    fold_1 = runs / "fold_1"
    with running(cv_command(synth_root, runs), stderr=stderr) as process:
        signal_when(process, lambda: log_rows(fold_1) == 1, signal.SIGINT)  # early in fold 1's epoch 2
        code = process.wait(timeout=120)
    message = stderr.read_text()
    assert code == 130, message[-3000:]  # cityseg.cli maps KeyboardInterrupt to 130, like a shell
    assert "Traceback" not in message
    said = re.search(r"interrupted: (\S+) holds epoch (\d+) of (\S+); continue with --resume", message)
    assert said, message[-3000:]
    assert (said[1], int(said[2]), said[3]) == (str(fold_1 / "last.pt"), 1, "fold_1")
    # The state on disk is that of the last finished epoch, and Ctrl-C leaves no half-written file.
    assert load_checkpoint(fold_1 / "last.pt")["epoch"] == 1 == log_rows(fold_1)
    assert log_rows(runs / "fold_0") == 2 and not (runs / "full").exists() and temp_files(runs) == []

    run_to_the_end(synth_root, runs, "--resume")
    assert_same_outputs(runs, reference)
