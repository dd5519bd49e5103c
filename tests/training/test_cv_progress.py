"""The overall cross-validation bar and its ETA (cityseg.training.cv_progress): counted from the run folders, estimated
from the logged epochs, and right across the training notebook's two calls of run_cv."""

from __future__ import annotations

import re

import pytest
import torch

from cityseg.training.config import resolve_config
from cityseg.training.cv import run_cv
from cityseg.training.cv_progress import CVProgress, duration_text, planned_runs
from cityseg.training.runfolder import append_log_row


def row(epoch, seconds, images_per_s, validated=True):
    return {"epoch": epoch, "seconds": seconds, "images_per_s": images_per_s, "val_loss": 1.0 if validated else None}


def test_counts_what_the_run_folders_hold_and_estimates_from_later_epochs(tmp_path):
    fold0, fold1, full = tmp_path / "fold_0", tmp_path / "fold_1", tmp_path / "full"
    for folder in (fold0, fold1):
        folder.mkdir()
    # epoch 1 is slow (start-up, compile): left out of the estimate once a later epoch exists
    append_log_row(fold0, row(1, 60.0, 2.0))
    append_log_row(fold0, row(2, 12.0, 10.0))  # 100 images at 10 img/s = 10 s training + 2 s validation
    append_log_row(fold1, row(1, 50.0, 2.5))
    runs = planned_runs([("fold_0", fold0, 100), ("fold_1", fold1, 100)], 3, (full, 125))
    progress = CVProgress(runs, enabled=False)
    assert (progress.done(), progress.total()) == (3, 9)
    assert progress.elapsed_seconds() == 122.0
    # fold epochs: 100 / 10 + 2 = 12 s; full-fit epochs: 125 / 10 = 12.5 s, no validation
    assert progress.remaining_seconds() == pytest.approx(1 * 12 + 2 * 12 + 3 * 12.5)
    progress.set_epochs("full", 2)  # the folds chose 2 epochs for the full fit
    assert progress.total() == 8 and progress.remaining_seconds() == pytest.approx(1 * 12 + 2 * 12 + 2 * 12.5)
    progress.record("fold_1", row(2, 12.0, 10.0))
    assert progress.done() == 4 and progress.remaining_seconds() == pytest.approx(12 + 12 + 2 * 12.5)


def test_no_estimate_before_any_epoch(tmp_path):
    progress = CVProgress(planned_runs([("fold_0", tmp_path / "fold_0", 10)], 2, None), enabled=False)
    assert (progress.done(), progress.total(), progress.remaining_seconds()) == (0, 2, None)


@pytest.mark.parametrize(("seconds", "text"), [(40, "40 s"), (719, "12 min"), (3 * 3600 + 5 * 60, "3 h 05 min")])
def test_duration_text(seconds, text):
    assert duration_text(seconds) == text


def bar_counts(err: str) -> list[tuple[int, int]]:
    """(done, total) of every state the cv bar was drawn in."""
    return [(int(a), int(b)) for a, b in re.findall(r"cv:\s+\d+%\|[^|]*\| (\d+)/(\d+) epochs", err)]


def test_the_notebooks_two_calls_each_get_one_bar_and_one_projection(synth_root, tmp_path, capsys):
    torch.set_num_threads(1)
    config = resolve_config(
        "seed", size=(64, 32), encoder_weights=None, workers=0, device="cpu", epochs=1, lr=1e-3, batch_size=5
    )
    runs = tmp_path / "runs"
    run_cv(synth_root, runs, config, k=2, resume=True, full=False)  # the notebook's cross-validation cell
    first = capsys.readouterr()
    counts = bar_counts(first.err)
    assert counts[0] == (0, 2) and counts[-1] == (2, 2)  # folds only: 2 folds x 1 epoch
    assert first.out.count("projected: the whole cross-validation (2 fold(s) x 1 epochs)") == 1
    assert first.out.count("runtime: device cpu") == 1  # printed once, not once per fold

    run_cv(synth_root, runs, config, k=2, resume=True, full=True)  # the notebook's full-fit cell
    second = capsys.readouterr()
    counts = bar_counts(second.err)
    assert counts[0] == (2, 3) and counts[-1] == (3, 3)  # the folds' epochs counted from their folders
    assert second.out.count("projected: the whole cross-validation (2 fold(s) x 1 epochs + full fit 1 epochs)") == 1
