"""Shared fixtures: one tiny synthetic Cityscapes tree per test session, built by the project itself.

Session fixtures are read-only; a test that changes files copies them first (`mutable_root`).
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

# Tests run on CPU with few threads: two cores in CI, and helpers may run suites side by side.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The suite's files are throwaway and no test cuts the power: skip fsync (cityseg.fileio.sync_to_disk), here and in
# every child process, which inherit this environment. tests/test_fileio.py checks that a user's run does fsync.
os.environ.setdefault("CITYSEG_FSYNC", "0")

TINY_SIZE = (128, 64)  # width x height; U-Net needs sides divisible by 32

# Seconds the longest files take on one worker of a 2-core machine (pytest --durations, summed per file). Only the
# order in which files are handed out depends on them: the longest first, so that the workers end together on
# short files, not one of them on a long file the other waits for. Files not listed come after, most slow tests first.
LONG_FILES_S = {
    "training/test_cv_faults.py": 180,
    "training/test_reproducible.py": 150,
    "training/test_concurrent_runs.py": 125,
    "report/test_report.py": 90,  # with the shared `one_epoch_cv`, which it trains: before export and compare
    "training/test_trainer.py": 80,
    "report/test_compare.py": 75,
    "cli/test_notebooks.py": 70,
    "prediction/test_export.py": 65,
    "training/test_dist.py": 50,
    "prediction/test_image_predict.py": 45,
    "prediction/test_predict.py": 40,
    "test_bad_inputs.py": 40,
}


def pytest_collection_modifyitems(config, items) -> None:
    """The longest files first (`LONG_FILES_S`, then the count of slow tests), so parallel workers end together.

    pytest-xdist hands out whole files in this order (`--dist loadfile --no-loadscope-reorder`, pyproject.toml);
    the sort is stable, so each file keeps its own order.
    """
    tests = Path(__file__).parent
    slow = Counter(item.path for item in items if item.get_closest_marker("slow"))

    def cost(item) -> tuple[int, int]:
        try:
            name = item.path.relative_to(tests).as_posix()
        except ValueError:  # a test file outside tests/, named on the command line
            name = ""
        return -LONG_FILES_S.get(name, 0), -slow[item.path]

    items.sort(key=cost)


@pytest.fixture(scope="session")
def synth_raw_root(tmp_path_factory) -> Path:
    """A synthetic dataset as shipped: JSON polygons, labelIds, instanceIds, colour; no trainIds yet."""
    from cityseg.synthetic import write_dataset

    root = tmp_path_factory.mktemp("synth") / "cityscapes"
    write_dataset(root, size=TINY_SIZE, train_cities=10, val_cities=2, test_cities=2, per_city=2, seed=0)
    return root


@pytest.fixture(scope="session")
def synth_root(synth_raw_root, tmp_path_factory) -> Path:
    """The same dataset after `cityseg prepare`: labelTrainIds PNGs beside every JSON."""
    from cityseg.data.prepare import prepare_dataset

    root = tmp_path_factory.mktemp("prepared") / "cityscapes"
    shutil.copytree(synth_raw_root, root)
    prepare_dataset(root, workers=1, progress=False)
    return root


@pytest.fixture
def mutable_root(synth_root, tmp_path) -> Path:
    """A private copy of the prepared dataset for tests that damage or change files."""
    root = tmp_path / "cityscapes"
    shutil.copytree(synth_root, root)
    return root


# The training settings of the tiny runs: 64x32 inputs, random init, no worker processes, two epochs.
TINY_TRAINING = {"size": (64, 32), "encoder_weights": None, "workers": 0, "device": "cpu", "epochs": 2}


@pytest.fixture(scope="session")
def tiny_config():
    """Make a training config fast enough for a 2-core CI machine (`TINY_TRAINING`); keywords override fields."""
    from cityseg.training.config import resolve_config

    def make(**overrides):
        return resolve_config("seed", **(TINY_TRAINING | overrides))

    return make


@pytest.fixture(scope="session")
def fold0(synth_root):
    """Fold 0 of a 5-fold city split of the tiny train set: 16 train images (8 cities), 4 val (2 cities)."""
    from cityseg.data.frames import list_frames
    from cityseg.training.folds import fold_ids, make_folds

    return fold_ids(make_folds(list_frames(synth_root, "train"), k=5, seed=0), 0)


@pytest.fixture(scope="session")
def one_epoch_cv(synth_root, tmp_path_factory) -> SimpleNamespace:
    """A finished tiny `cityseg cv` (seed recipe, 2 city folds x 1 epoch at 128x64, lr 1e-3, and the full fit),
    the full model's val predictions and their evaluation (both engines), on its own copy of the dataset.

    The report, compare and export tests all read such a run and none changes it, so it is trained once per
    session (`built_once`), not once per file: its own copy of the dataset keeps the paths it records valid
    whichever worker built it. Read-only: copy what a test changes.
    """
    from helpers_shared import built_once

    def build(folder: Path) -> None:
        import torch

        from cityseg.evaluation import evaluate
        from cityseg.prediction.predict import predict_split
        from cityseg.report import training_config
        from cityseg.training.cv import run_cv

        torch.set_num_threads(1)
        root = folder / "cityscapes"
        shutil.copytree(synth_root, root)
        config = training_config(
            "seed", epochs=1, size="128x64", workers=0, device="cpu", encoder_weights="none", overrides={"lr": 1e-3}
        )
        run_cv(root, folder / "runs", config, k=2, split="city", progress=False)
        predict_split(
            folder / "runs" / "full" / "best.pt", root, "val", out_dir=folder / "pred", device="cpu", progress=False
        )
        evaluate(folder / "pred", root, "val", engine="both", json_out=folder / "eval" / "val.json", workers=1)

    folder = built_once(tmp_path_factory, "one-epoch-cv", build)
    return SimpleNamespace(
        root=folder / "cityscapes", runs=folder / "runs", pred=folder / "pred", eval_json=folder / "eval" / "val.json"
    )
