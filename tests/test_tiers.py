"""The quick tier (`make check`: `-m "not trains and not slow"`) trains nothing: a test without the `trains` marker
that trains, in this process or in a child, fails (tests/conftest.py), so it cannot slip into the quick tier."""

from __future__ import annotations

import subprocess

import pytest
from conftest import TINY_TRAINING, trains_a_model
from helpers_training import cityseg_command

from cityseg.cli import main
from cityseg.training import cv, trainer


def test_an_unmarked_test_that_trains_fails_whichever_way_it_starts_training(synth_root, fold0, tmp_path):
    from cityseg.training.config import resolve_config

    config = resolve_config("seed", **TINY_TRAINING)
    for train in (trainer.train_run, cv.train_run):  # the name cityseg.training.cv calls, too
        with pytest.raises(pytest.fail.Exception, match="add @pytest.mark.trains"):
            train(synth_root, tmp_path / "run", config, *fold0, progress=False)
    argv = ["cv", str(synth_root), "--out", str(tmp_path / "runs"), "--folds", "2", "--epochs", "1"]
    with pytest.raises(pytest.fail.Exception, match="add @pytest.mark.trains"):
        main([*argv, "--size", "64x32", "--encoder-weights", "none", "--workers", "0", "--device", "cpu"])
    with pytest.raises(pytest.fail.Exception, match="add @pytest.mark.trains"):
        subprocess.Popen(cityseg_command(*argv))
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs" / "fold_0" / "last.pt").exists()


@pytest.mark.parametrize(
    ("argv", "trains"),
    [
        (["python", "-m", "cityseg", "cv", "ROOT"], True),
        (["/venv/bin/cityseg", "train", "ROOT"], True),
        (["torchrun", "--nproc_per_node=2", "-m", "cityseg", "cv", "ROOT"], True),
        ("cityseg train ROOT --out RUNS", True),  # a shell command line
        (["python", "-m", "ipykernel_launcher", "-f", "kernel.json"], True),  # a notebook, which trains
        (["python", "-m", "cityseg", "predict", "best.pt", "ROOT"], False),
        (["python", "-m", "cityseg", "evaluate", "train", "ROOT"], False),  # "train" as a value, not the command
        (["git", "cv"], False),
    ],
)
def test_training_commands_are_told_from_the_others(argv, trains):
    assert trains_a_model(argv) == trains


@pytest.mark.trains
def test_a_marked_test_may_train():
    """The guard's other half: with the marker, train_run is the real one."""
    assert trainer.train_run.__module__ == "cityseg.training.trainer" and trainer.train_run.__name__ == "train_run"
    assert cv.train_run is trainer.train_run
