"""The same numbers whatever the loader's worker count, and after a SIGKILL at any moment + `--resume`.

Real `cityseg cv` child processes with random crops, flips and photometric distortion in the loader
workers (the default path): shuffles follow (seed, epoch) and each sample's draws (seed, epoch, index),
so nothing depends on which worker loaded what, or on worker state a kill destroys. Equality is exact:
log rows, summary.json and every checkpoint tensor (timings excluded).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from helpers_training import CLI_ENV, cityseg_command, running, signal_when

from cityseg.training.checkpoint import load_checkpoint
from cityseg.training.runfolder import load_log

pytestmark = pytest.mark.slow  # ~8 short trainings in child processes: about 2 minutes of CPU

# 2 folds x 2 epochs of 3 steps and a full fit of 6, with the strong recipe's augmentations on 64x32 crops.
# Batch 3: with 2 loader workers, one worker loads two of each epoch's three batches (and the full fit's six are
# shared 3 + 3), so a draw that depended on a worker's own history would show; fewer steps than batch 2 (10).
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
    "3",
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


def cv(root: Path, runs: Path, workers: int, *extra: str) -> list[str]:
    return cityseg_command("cv", root, "--out", runs, *OPTIONS, "--workers", str(workers), *extra)


def run_to_the_end(command: list[str]) -> None:
    done = subprocess.run(command, env=CLI_ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


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
    """Same log rows and bit-identical last.pt and best.pt state."""
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


@pytest.fixture(scope="module")
def reference(synth_root, tmp_path_factory) -> Path:
    """An uninterrupted `cityseg cv` with 2 loader workers."""
    runs = tmp_path_factory.mktemp("reference") / "runs"
    run_to_the_end(cv(synth_root, runs, 2))
    return runs


def test_no_workers_gives_the_numbers_of_two_workers(synth_root, reference, tmp_path):
    runs = tmp_path / "runs"
    run_to_the_end(cv(synth_root, runs, 0, "--only-folds", "0"))
    assert (runs / "folds.json").read_bytes() == (reference / "folds.json").read_bytes()
    assert_same_run(runs / "fold_0", reference / "fold_0")


def test_sigkill_mid_epoch_with_workers_then_resume_equals_an_uninterrupted_run(synth_root, reference, tmp_path):
    runs = tmp_path / "runs"
    fold_0 = runs / "fold_0"
    with running(cv(synth_root, runs, 2)) as process:
        signal_when(process, lambda: len(load_log(fold_0)) == 1)  # epoch 2 of fold 0 under way
        process.wait()
    assert len(load_log(fold_0)) == 1 and not (runs / "summary.json").exists()

    run_to_the_end(cv(synth_root, runs, 2, "--resume"))
    for name in RUNS:
        assert_same_run(runs / name, reference / name)
    summary = json.loads((runs / "summary.json").read_text())
    assert summary["complete"]
    assert without_timings(summary) == without_timings(json.loads((reference / "summary.json").read_text()))
