"""Two commands on one folder: folds of one RUNS train in parallel `--only-folds` processes while a third command is
refused, naming them; a second `predict` into one folder is refused before it writes anything. (A second `cv` on a
running one: tests/training/test_cv_faults.py; under torchrun: tests/training/test_dist.py.)

The first process is paused (SIGSTOP) while it holds its locks, so the overlap is certain, not a race.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers_training import cityseg_command, running

from cityseg.cli import main

# Batch 10 and resnet18: one small step per fold and two in the full fit; the locks are the point here.
OPTIONS = (
    "--folds",
    "2",
    "--epochs",
    "1",
    "--size",
    "64x32",
    "--batch-size",
    "10",
    "--workers",
    "0",
    "--encoder",
    "resnet18",
    "--encoder-weights",
    "none",
    "--device",
    "cpu",
)


def cv(root: Path, runs: Path, *extra: str) -> list[str]:
    return cityseg_command("cv", root, "--out", runs, *OPTIONS, *extra)


def _flat(text: str) -> str:
    return "".join(text.split())


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder below `folder`, hidden ones included, with size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


@contextlib.contextmanager
def paused_when(process: subprocess.Popen, ready: Callable[[], bool], timeout: float = 180) -> Iterator[None]:
    """Stop `process` once `ready()` holds (it keeps its locks while stopped); let it go on afterwards."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, f"the command ended (exit {process.returncode}) before it could be paused"
        assert time.monotonic() < deadline, "the moment to pause the command did not come"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(process.pid, signal.SIGCONT)


def epochs_logged(run_dir: Path) -> list[int]:
    """Raw log lines (not load_log, which would hide nothing but also check nothing)."""
    return [json.loads(line)["epoch"] for line in (run_dir / "log.jsonl").read_text().splitlines()]


@pytest.mark.trains
def test_only_folds_train_in_parallel_then_resume_runs_the_full_fit(synth_root, tmp_path, capsys):
    runs = tmp_path / "runs"
    with running(cv(synth_root, runs, "--only-folds", "0"), stderr=tmp_path / "a.err") as fold_0:
        with paused_when(fold_0, (runs / "fold_0" / "config.json").exists):
            with running(cv(synth_root, runs, "--only-folds", "1"), stderr=tmp_path / "b.err") as fold_1:
                with paused_when(fold_1, (runs / "fold_1" / "config.json").exists):
                    # both hold their folds now; a third process may take neither, nor the whole folder
                    assert main(["cv", str(synth_root), "--out", str(runs), *OPTIONS, "--only-folds", "0"]) == 2
                    assert f"pid{fold_0.pid}" in _flat(capsys.readouterr().err)
                    assert main(["cv", str(synth_root), "--out", str(runs), *OPTIONS, "--resume"]) == 2
                    refusal = _flat(capsys.readouterr().err)
                    assert f"pid{fold_0.pid}" in refusal and f"pid{fold_1.pid}" in refusal
                assert fold_1.wait(timeout=300) == 0, (tmp_path / "b.err").read_text()[-3000:]
        assert fold_0.wait(timeout=300) == 0, (tmp_path / "a.err").read_text()[-3000:]

    assert not (runs / "full").exists()  # --only-folds leaves the full fit to the resume
    summary = json.loads((runs / "summary.json").read_text())
    assert summary["complete"] and [fold["epochs_done"] for fold in summary["folds"]] == [1, 1]

    assert main(["cv", str(synth_root), "--out", str(runs), *OPTIONS, "--resume"]) == 0
    for name in ("fold_0", "fold_1", "full"):
        assert epochs_logged(runs / name) == [1], name
    assert json.loads((runs / "summary.json").read_text())["full"]["finished"]


@pytest.mark.slow  # a child process, paused
def test_a_second_predict_into_one_folder_is_refused(synth_raw_root, tmp_path, capsys):
    import torch

    from cityseg.training.checkpoint import save_checkpoint
    from cityseg.training.model import build_model

    checkpoint = tmp_path / "best.pt"
    torch.manual_seed(0)
    save_checkpoint(
        checkpoint,
        {
            "model": build_model(encoder_weights=None).state_dict(),
            "epoch": 1,
            "config": {"size": None},
            "num_classes": 19,
        },
    )
    out = tmp_path / "predictions"
    command = ["predict", str(checkpoint), str(synth_raw_root), "--out", str(out), "--device", "cpu"]
    with running(cityseg_command(*command), stderr=tmp_path / "first.err") as first:
        with paused_when(first, (out / ".cityseg-predict.json").exists):
            before = snapshot(out)
            assert main(command) == 2
            assert f"pid{first.pid}" in _flat(capsys.readouterr().err)
            assert snapshot(out) == before
        assert first.wait(timeout=300) == 0, (tmp_path / "first.err").read_text()[-3000:]
    assert main(command) == 0 and "kept 4" in capsys.readouterr().out  # the first one's files are whole and ours
