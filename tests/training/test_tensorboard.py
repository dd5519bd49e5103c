"""TensorBoard events of a run, read back with TensorBoard's own EventAccumulator.

The scalars must be the numbers log.jsonl holds (per epoch) and every iteration's loss and lr, once
each: also after a crash between the events and last.pt. After real SIGKILLs + `--resume`:
tests/training/test_cv_faults.py::test_kills_a_ctrl_c_and_a_second_cv_then_resume_equal_an_uninterrupted_run.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from helpers_tensorboard import assert_matches_log, events, raw_loss_events, scalars
from PIL import Image

import cityseg.training.engine
import cityseg.training.trainer
from cityseg.data.frames import list_frames, read_train_ids
from cityseg.labels import TRAIN_ID_COLORS, colorize_train_ids
from cityseg.training.folds import fold_ids, make_folds
from cityseg.training.optim import lr_factor
from cityseg.training.trainer import train_run

pytestmark = pytest.mark.trains
EPOCHS, STEPS = 2, 5  # 5 train images at batch 1
PROGRESS_EVERY = 2  # the host reads the losses every 2 steps: two mid-epoch reads and a remainder


# cosine with warm-up, so the logged lr changes every step
COSINE = {"epochs": EPOCHS, "batch_size": 1, "lr": 1e-3, "schedule": "cosine", "warmup_epochs": 0.5}


@pytest.fixture(scope="module")
def fold(synth_root):
    train_ids, val_ids = fold_ids(make_folds(list_frames(synth_root, "train"), k=5, seed=0), 0)
    return train_ids[:STEPS], val_ids[:2]


@pytest.fixture(scope="module")
def straight_run(tiny_config, synth_root, fold, tmp_path_factory):
    """One uninterrupted run."""
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cityseg.training.engine, "PROGRESS_EVERY", PROGRESS_EVERY)
        run_dir = tmp_path_factory.mktemp("board") / "fold_0"
        train_run(synth_root, run_dir, tiny_config(**COSINE), *fold, progress=False)
    return run_dir


def test_every_iteration_and_every_log_row_reach_tensorboard(tiny_config, straight_run):
    board = assert_matches_log(straight_run, EPOCHS, STEPS)
    config = tiny_config(**COSINE)
    lrs = [value for _, value in scalars(board, "train/lr")]
    expected = [
        config.lr * lr_factor(s, EPOCHS * STEPS, round(0.5 * STEPS), "cosine", config.min_lr / config.lr)
        for s in range(EPOCHS * STEPS)
    ]
    assert lrs == pytest.approx(expected, rel=1e-6)  # the lr each step used, stored as float32
    assert len(list(straight_run.glob("events.out.tfevents.*"))) == 1
    (title,) = board.Tensors("run/text_summary")  # the run's name and the model that ran, as TensorBoard lists it
    assert title.tensor_proto.string_val[0].decode() == "fold_0: U-Net / resnet34"


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
        assert np.array_equal(strip[:, width + 4 : 2 * width + 4], colorize_train_ids(truth))
        prediction = strip[:, 2 * width + 8 :].reshape(-1, 3)
        palette = {tuple(colour) for colour in TRAIN_ID_COLORS}
        assert {tuple(pixel) for pixel in np.unique(prediction, axis=0)} <= palette


def test_crash_between_events_and_checkpoint_then_resume_keeps_one_stream(
    tiny_config, synth_root, fold, straight_run, tmp_path, monkeypatch
):
    torch.set_num_threads(1)
    monkeypatch.setattr(cityseg.training.engine, "PROGRESS_EVERY", PROGRESS_EVERY)
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
