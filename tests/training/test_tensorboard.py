"""TensorBoard events of a run, read back with TensorBoard's own EventAccumulator.

The scalars must be the numbers log.jsonl holds (per epoch) and every iteration's loss and lr, once
each: also after a crash between the events and last.pt, and after a real SIGKILL + `--resume`.
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_training import CLI_ENV, cityseg_command, running, signal_when
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

import cityseg.training.engine
import cityseg.training.trainer
from cityseg.data.frames import list_frames, read_train_ids
from cityseg.labels import CLASS_NAMES, TRAIN_ID_COLORS, colorize_train_ids
from cityseg.training.folds import fold_ids, make_folds
from cityseg.training.optim import lr_factor
from cityseg.training.runfolder import load_log
from cityseg.training.trainer import train_run

EPOCH_KEYS = ("train_loss", "val_loss", "val_miou", "lr", "images_per_s", "data_wait_share")
EPOCHS, STEPS = 2, 8  # 8 train images at batch 1


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
        present = [(row["epoch"] * steps, pytest.approx(row["class_iou"][index], rel=1e-6))
                   for row in rows if row["class_iou"] and row["class_iou"][index] is not None]
        if present:
            assert scalars(board, f"val_class_iou/{name}") == present, name
    return board


# cosine with warm-up, so the logged lr changes every step
COSINE = {"epochs": EPOCHS, "batch_size": 1, "lr": 1e-3, "schedule": "cosine", "warmup_epochs": 0.5}


@pytest.fixture(scope="module")
def fold(synth_root):
    train_ids, val_ids = fold_ids(make_folds(list_frames(synth_root, "train"), k=5, seed=0), 0)
    return train_ids[:STEPS], val_ids[:2]


@pytest.fixture(scope="module")
def straight_run(tiny_config, synth_root, fold, tmp_path_factory):
    """One uninterrupted run, host reads every 3 steps (so an epoch has two mid-epoch reads and a remainder)."""
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cityseg.training.engine, "PROGRESS_EVERY", 3)
        run_dir = tmp_path_factory.mktemp("board") / "fold_0"
        train_run(synth_root, run_dir, tiny_config(**COSINE), *fold, progress=False)
    return run_dir


def test_every_iteration_and_every_log_row_reach_tensorboard(tiny_config, straight_run):
    board = assert_matches_log(straight_run, EPOCHS, STEPS)
    config = tiny_config(**COSINE)
    lrs = [value for _, value in scalars(board, "train/lr")]
    expected = [config.lr * lr_factor(s, EPOCHS * STEPS, STEPS // 2, "cosine", config.min_lr / config.lr)
                for s in range(EPOCHS * STEPS)]
    assert lrs == pytest.approx(expected, rel=1e-6)  # the lr each step used, stored as float32
    assert len(list(straight_run.glob("events.out.tfevents.*"))) == 1


def test_val_frames_show_image_truth_and_prediction_in_the_palette(straight_run, synth_root, fold):
    board = events(straight_run)
    frames = {f.id: f for f in list_frames(synth_root, "train")}
    tags = board.Tags()["images"]
    assert sorted(tags) == sorted(f"val_frames/{frame_id}" for frame_id in fold[1])
    for tag in tags:
        shown = board.Images(tag)
        assert [image.step for image in shown] == [STEPS, EPOCHS * STEPS]  # the first and the last epoch
        strip = np.asarray(Image.open(io.BytesIO(shown[-1].encoded_image_string)).convert("RGB"))
        truth = read_train_ids(frames[tag.split("/", 1)[1]].label)  # (64, 128): validation's full resolution
        height, width = truth.shape
        assert strip.shape == (height, 3 * width + 8, 3)
        assert np.array_equal(strip[:, width + 4:2 * width + 4], colorize_train_ids(truth))
        prediction = strip[:, 2 * width + 8:].reshape(-1, 3)
        palette = {tuple(colour) for colour in TRAIN_ID_COLORS}
        assert {tuple(pixel) for pixel in np.unique(prediction, axis=0)} <= palette


def test_crash_between_events_and_checkpoint_then_resume_keeps_one_stream(tiny_config, synth_root, fold, straight_run, tmp_path,
                                                                            monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setattr(cityseg.training.engine, "PROGRESS_EVERY", 3)
    real_save = cityseg.training.trainer.save_checkpoint

    def save_then_die_in_epoch_2(path, state):
        if state["epoch"] == 2:
            raise RuntimeError("killed after the epoch's events, before last.pt")
        real_save(path, state)

    run_dir = tmp_path / "fold_0"
    monkeypatch.setattr(cityseg.training.trainer, "save_checkpoint", save_then_die_in_epoch_2)
    with pytest.raises(RuntimeError, match="killed"):
        train_run(synth_root, run_dir, tiny_config(**COSINE), *fold, progress=False)
    monkeypatch.setattr(cityseg.training.trainer, "save_checkpoint", real_save)
    train_run(synth_root, run_dir, tiny_config(**COSINE), *fold, resume=True, progress=False)

    assert raw_loss_events(run_dir) == 3 * STEPS  # epoch 2 was written twice on disk ...
    board = assert_matches_log(run_dir, EPOCHS, STEPS)  # ... and TensorBoard shows it once
    resumed = [value for _, value in scalars(board, "train/loss")]
    straight = [value for _, value in scalars(events(straight_run), "train/loss")]
    assert resumed == pytest.approx(straight, rel=1e-5)  # the resumed epoch is the uninterrupted one


@pytest.mark.slow
def test_sigkill_then_resume_gives_every_run_one_complete_stream(synth_root, tmp_path):
    runs = tmp_path / "runs"
    command = cityseg_command("cv", synth_root, "--out", runs, "--folds", "2", "--epochs", "2", "--size", "64x32",
                              "--batch-size", "4", "--workers", "0", "--encoder-weights", "none", "--device", "cpu",
                              "--lr", "1e-3")
    with running(command) as process:
        signal_when(process, lambda: load_log(runs / "fold_0"))  # during fold 0's second epoch, or its save
        process.wait()
    done = subprocess.run(command + ["--resume"], env=CLI_ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("fold_0", "fold_1", "full"):
        info = json.loads((runs / name / "config.json").read_text())
        assert_matches_log(runs / name, info["config"]["epochs"], info["n_train"] // 4)  # batch 4, last dropped
