"""Shared fixtures: one tiny synthetic Cityscapes tree per test session, built by the project itself.

Session fixtures are read-only; a test that changes files copies them first (`mutable_root`).
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

# Tests run on CPU with few threads: two cores in CI, and helpers may run suites side by side.
os.environ.setdefault("OMP_NUM_THREADS", "1")

TINY_SIZE = (128, 64)


def pytest_collection_modifyitems(config, items) -> None:
    """Files with the most slow tests first, so that parallel workers end on short files, not on one long one.

    pytest-xdist hands out whole files in this order (`--dist loadfile --no-loadscope-reorder`, pyproject.toml);
    the sort is stable, so each file keeps its own order.
    """
    slow = Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.path])  # width x height; U-Net needs sides divisible by 32


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
