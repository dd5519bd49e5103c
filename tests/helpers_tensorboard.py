"""What TensorBoard shows for a run folder, read with its own EventAccumulator, checked against log.jsonl."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from cityseg.labels import CLASS_NAMES
from cityseg.training.runfolder import load_log

EPOCH_KEYS = ("train_loss", "val_loss", "val_miou", "lr", "images_per_s", "data_wait_share")


def events(run_dir: Path) -> EventAccumulator:
    """What TensorBoard shows for one run folder (every value kept, interrupted attempts purged)."""
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def scalars(accumulator: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def raw_loss_events(run_dir: Path) -> int:
    """train/loss values written to disk, before TensorBoard hides the ones a restart superseded."""
    count = 0
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            count += sum(value.tag == "train/loss" for value in event.summary.value)
    return count


def assert_matches_log(run_dir: Path, epochs: int, steps: int) -> EventAccumulator:
    """One loss and lr per iteration, and the epoch scalars equal to log.jsonl's rows, each step once."""
    board = events(run_dir)
    rows = load_log(run_dir)
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))
    losses = scalars(board, "train/loss")
    assert [step for step, _ in losses] == list(range(1, epochs * steps + 1))
    assert [step for step, _ in scalars(board, "train/lr")] == list(range(1, epochs * steps + 1))
    for row in rows:
        in_epoch = [value for step, value in losses if (row["epoch"] - 1) * steps < step <= row["epoch"] * steps]
        assert np.mean(in_epoch) == pytest.approx(row["train_loss"], rel=1e-5)  # train_loss: mean of the steps
    for key in EPOCH_KEYS:
        if rows[0][key] is None:
            assert f"epoch/{key}" not in board.Tags()["scalars"], key
            continue
        expected = [(row["epoch"] * steps, pytest.approx(row[key], rel=1e-6)) for row in rows]
        assert scalars(board, f"epoch/{key}") == expected, key
    for index, name in enumerate(CLASS_NAMES):
        present = [
            (row["epoch"] * steps, pytest.approx(row["class_iou"][index], rel=1e-6))
            for row in rows
            if row["class_iou"] and row["class_iou"][index] is not None
        ]
        if present:
            assert scalars(board, f"val_class_iou/{name}") == present, name
    return board
