"""Shared fixtures: one tiny synthetic Cityscapes tree per test session, built by the project itself.

Session fixtures are read-only; a test that changes files copies them first (`mutable_root`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers_shared import built_once

# Tests run on CPU with few threads: two cores in CI, and helpers may run suites side by side.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The suite's files are throwaway and no test cuts the power: skip fsync (cityseg.fileio.sync_to_disk), here and in
# every child process, which inherit this environment. tests/test_fileio.py checks that a user's run does fsync.
os.environ.setdefault("CITYSEG_FSYNC", "0")

TINY_SIZE = (128, 64)  # width x height; U-Net needs sides divisible by 32

# ------------------------------------------------------------------------------------------- the two tiers
# `make check` runs `-m "not trains and not slow"`: every test that trains nothing, for the edit loop.
# A test trains if it runs cityseg's training (train_run, in this process or as a `cityseg train|cv` child) or
# reads a trained run; it carries the `trains` marker, set by hand on the test or its module, and automatically on
# every test that uses one of the shared trained runs below. The guard makes a missing marker an error: outside
# `trains` tests, train_run and training commands fail the test (so `make check` can never train by accident).

TRAINING_FIXTURES = {"one_epoch_cv", "learned_run"}
TRAINING_COMMANDS = {"train", "cv"}
UNMARKED = "this test trains (or runs a notebook, which does) but is not marked: add @pytest.mark.trains"


# ------------------------------------------------------------------------------------------- the file order
# pytest-xdist hands out whole files in collection order (`--dist loadfile --no-loadscope-reorder`, pyproject.toml).
# The longest files go first, so that the workers end together on short files rather than one waiting for the other's
# long file. A file's length is its seconds in the last run that timed it (kept in pytest's cache, .pytest_cache/),
# else its count of `trains` and `slow` tests: nothing to keep up by hand. The second worker starts on the longest
# file that does not need the session's trained run (`one_epoch_cv`), so it works while the first worker builds it
# instead of waiting on the build's lock.
SHARED_BUILD = "one_epoch_cv"
SECONDS_KEY = "cityseg/file_seconds"


def file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(config, items) -> None:
    """Mark `trains` every test that uses a shared trained run; then order the files, longest first (above)."""
    for item in items:
        if TRAINING_FIXTURES.intersection(item.fixturenames):
            item.add_marker(pytest.mark.trains)
    cache = getattr(config, "cache", None)  # None under -p no:cacheprovider
    seconds = cache.get(SECONDS_KEY, {}) if cache else {}
    heavy = Counter(
        file_of(item.nodeid) for item in items for mark in ("trains", "slow") if item.get_closest_marker(mark)
    )
    # files timed before by their seconds, then the others by their heavy tests; the sort is stable within a file
    items.sort(key=lambda item: (-seconds.get(file_of(item.nodeid), 0.0), -heavy[file_of(item.nodeid)]))
    files = list(dict.fromkeys(file_of(item.nodeid) for item in items))
    waits = {file_of(item.nodeid) for item in items if SHARED_BUILD in item.fixturenames}
    if files and files[0] in waits and (free := [name for name in files if name not in waits]):
        position = {name: index for index, name in enumerate(files)} | {free[0]: 0.5}  # just after the first file
        items.sort(key=lambda item: position[file_of(item.nodeid)])


FILE_SECONDS: Counter[str] = Counter()


def pytest_runtest_logreport(report) -> None:
    """Sum each file's seconds (setup, call and teardown) in the process that reports the run (xdist's controller)."""
    FILE_SECONDS[file_of(report.nodeid)] += report.duration


def pytest_sessionfinish(session) -> None:
    """Keep this run's file seconds for the next run's order (files this run did not time keep their old ones)."""
    cache = getattr(session.config, "cache", None)
    if cache is None or hasattr(session.config, "workerinput"):  # xdist workers leave it to the controller
        return
    cache.set(SECONDS_KEY, cache.get(SECONDS_KEY, {}) | {name: round(s, 1) for name, s in FILE_SECONDS.items()})


def trains_a_model(argv) -> bool:
    """Whether a child process's argv runs a training command (also under torchrun) or a notebook kernel."""
    words = [os.fspath(word) for word in argv] if isinstance(argv, (list, tuple)) else str(argv).split()
    for i, word in enumerate(words):
        after = words[i + 1] if i + 1 < len(words) else ""
        if (word == "cityseg" and words[i - 1 : i] == ["-m"] or Path(word).name == "cityseg") and after in (
            TRAINING_COMMANDS
        ):
            return True
        if word == "ipykernel_launcher":
            return True
    return False


@contextlib.contextmanager
def training_forbidden():
    """train_run fails the test, wherever it was imported to; so does starting a child process that trains."""
    import subprocess

    from cityseg.training import trainer

    real_run, real_popen = trainer.train_run, subprocess.Popen.__init__

    def refused_run(*args, **kwargs):
        pytest.fail(UNMARKED, pytrace=False)

    def checked_popen(self, args, *rest, **kwargs):
        if trains_a_model(args):
            pytest.fail(f"{UNMARKED} (it starts {args})", pytrace=False)
        real_popen(self, args, *rest, **kwargs)

    def replace(old, new) -> None:  # in cityseg and the test modules, also those first imported while it was on
        tests = str(Path(__file__).parent)
        for name, module in list(sys.modules.items()):
            if not (
                name.startswith("cityseg")
                or "." not in name
                and (getattr(module, "__file__", "") or "").startswith(tests)
            ):
                continue
            for name, value in list(vars(module).items()):
                if value is old:
                    setattr(module, name, new)

    replace(real_run, refused_run)
    subprocess.Popen.__init__ = checked_popen
    try:
        yield
    finally:
        subprocess.Popen.__init__ = real_popen
        replace(refused_run, real_run)


def guarded(item):
    """The guard for a test without the `trains` marker; none for one with it."""
    return contextlib.nullcontext() if item.get_closest_marker("trains") else training_forbidden()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    """Fixtures too: a trained fixture first built for an unmarked test fails it."""
    with guarded(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    with guarded(item):
        return (yield)


@pytest.fixture(scope="session")
def synth_raw_root(tmp_path_factory) -> Path:
    """A synthetic dataset as shipped: JSON polygons, labelIds, instanceIds, colour; no trainIds yet."""
    from cityseg.synthetic import write_dataset

    def build(folder: Path) -> None:
        root = folder / "cityscapes"
        write_dataset(root, TINY_SIZE, train_cities=10, val_cities=2, test_cities=2, per_city=2, seed=0, progress=False)

    return built_once(tmp_path_factory, "synth", build) / "cityscapes"


@pytest.fixture(scope="session")
def synth_root(synth_raw_root, tmp_path_factory) -> Path:
    """The same dataset after `cityseg prepare`: labelTrainIds PNGs beside every JSON."""
    from cityseg.data.prepare import prepare_dataset

    def build(folder: Path) -> None:
        shutil.copytree(synth_raw_root, folder / "cityscapes")
        prepare_dataset(folder / "cityscapes", workers=1, progress=False)

    return built_once(tmp_path_factory, "prepared", build) / "cityscapes"


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
    the full model's val predictions and their evaluation (both engines).

    The report, compare, export and bad-input tests all read such a run and none changes it, so it is trained
    once per session (`built_once`), not once per file. Read-only: copy what a test changes. At the frames' own
    size: the export's card must describe predict to 0.999 of the pixels (tests/prediction/test_export.py).
    """

    def build(folder: Path) -> None:
        import torch

        from cityseg.evaluation import evaluate
        from cityseg.prediction.predict import predict_split
        from cityseg.report import training_config
        from cityseg.training.cv import run_cv

        torch.set_num_threads(1)
        config = training_config(
            "seed", epochs=1, size="128x64", workers=0, device="cpu", encoder_weights="none", overrides={"lr": 1e-3}
        )
        run_cv(synth_root, folder / "runs", config, k=2, split="city", progress=False)
        best = folder / "runs" / "full" / "best.pt"
        predict_split(best, synth_root, "val", out_dir=folder / "pred", device="cpu", progress=False)
        evaluate(folder / "pred", synth_root, "val", engine="both", json_out=folder / "eval" / "val.json", workers=1)

    folder = built_once(tmp_path_factory, "one-epoch-cv", build)
    return SimpleNamespace(
        root=synth_root, runs=folder / "runs", pred=folder / "pred", eval_json=folder / "eval" / "val.json"
    )
