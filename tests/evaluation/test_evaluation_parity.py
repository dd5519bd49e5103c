"""The fast engine equals the official script on every exported number, NaNs included, at two sizes."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
from helpers_noisy import PREDICTION_SUFFIX, write_noisy_predictions
from PIL import Image

from cityseg.data.frames import list_frames
from cityseg.evaluation import EngineMismatchError, compare_exports, evaluate
from cityseg.evaluation import runner as runner_module
from cityseg.labels import CLASS_NAMES, EVAL_LABEL_IDS

OFFICIAL_KEYS = (
    "confMatrix", "priors", "labels", "classScores", "classInstScores", "categoryScores", "categoryInstScores",
    "averageScoreClasses", "averageScoreInstClasses", "averageScoreCategories", "averageScoreInstCategories",
)  # fmt: skip
SCORE_DICTS = ("priors", "classScores", "classInstScores", "categoryScores", "categoryInstScores")
AVERAGES = OFFICIAL_KEYS[-4:]


def assert_same(a: float, b: float, where: str) -> None:
    assert math.isnan(a) == math.isnan(b), f"{where}: {a} vs {b} (NaN in one only)"
    if not math.isnan(a):
        assert abs(a - b) < 1e-9, f"{where}: {a} vs {b}"


def assert_same_export(official: dict, fast: dict) -> None:
    """Every official field, checked here independently of the library's own comparison."""
    assert set(OFFICIAL_KEYS) <= set(official) and set(OFFICIAL_KEYS) <= set(fast)
    assert np.array_equal(np.asarray(official["confMatrix"]), np.asarray(fast["confMatrix"]))
    assert official["labels"] == fast["labels"]
    for key in SCORE_DICTS:
        assert set(official[key]) == set(fast[key]), key
        for name, value in official[key].items():
            assert_same(float(value), float(fast[key][name]), f"{key}[{name}]")
    for key in AVERAGES:
        assert_same(float(official[key]), float(fast[key]), key)


def both_engines(pred_dir, root) -> tuple[dict, dict]:
    return evaluate(pred_dir, root, engine="official", workers=1), evaluate(pred_dir, root, engine="fast", workers=2)


@pytest.fixture(scope="module")
def second_root(tmp_path_factory):
    """A second synthetic set at another size, so nothing depends on 128x64."""
    from cityseg.synthetic import write_dataset

    root = tmp_path_factory.mktemp("synth256") / "cityscapes"
    write_dataset(root, size=(256, 128), train_cities=1, val_cities=1, test_cities=1, per_city=2, progress=False)
    return root


@pytest.mark.parametrize("which", ["128x64", "256x128"])
def test_random_predictions_agree_at_two_sizes(which, synth_raw_root, second_root, tmp_path):
    root = synth_raw_root if which == "128x64" else second_root
    frames = list_frames(root, "val", label_source="ids")
    write_noisy_predictions(frames, tmp_path / "pred", seed=3, error_rate=0.35, block=4)
    official, fast = both_engines(tmp_path / "pred", root)
    assert_same_export(official, fast)
    width, height = (int(v) for v in which.split("x"))
    assert int(np.asarray(official["confMatrix"]).sum()) == len(frames) * width * height
    # the set really exercises the metrics: imperfect scores, and instance scores that exist
    assert 0.0 < official["averageScoreClasses"] < 1.0
    assert 0.0 < official["averageScoreInstClasses"] < 1.0
    assert official["cityseg"]["n_frames"] == len(frames)


def test_perfect_predictions_score_one(synth_raw_root, tmp_path):
    pred = tmp_path / "pred"
    pred.mkdir()
    for frame in list_frames(synth_raw_root, "val", label_source="ids"):
        shutil.copy(frame.label_ids, pred / f"{frame.id}{PREDICTION_SUFFIX}")
    official, fast = both_engines(pred, synth_raw_root)
    assert_same_export(official, fast)
    for result in (official, fast):
        assert result["averageScoreClasses"] == 1.0
        assert result["averageScoreCategories"] == 1.0
        assert result["averageScoreInstClasses"] == 1.0
        assert result["cityseg"]["scores"]["class_iou"] == [1.0] * len(CLASS_NAMES)


def _paint_out(root, split: str, label_ids: set[int], replacement: int = 7) -> None:
    """Remove classes from the ground truth (labelIds and instanceIds alike) by repainting them as road."""
    for frame in list_frames(root, split, label_source="ids"):
        labels = np.array(Image.open(frame.label_ids))
        instances = np.array(Image.open(frame.instance_ids))
        classes = np.where(instances >= 1000, instances // 1000, instances)
        gone = np.isin(classes, list(label_ids))
        labels[np.isin(labels, list(label_ids))] = replacement
        instances[gone] = replacement
        Image.fromarray(labels).save(frame.label_ids)
        Image.fromarray(instances).save(frame.instance_ids)


def test_missing_classes_give_nan_in_the_same_places(synth_raw_root, tmp_path):
    # A private ground truth set without vegetation (21), person (24) and car (26).
    root = tmp_path / "cityscapes"
    for part in ("leftImg8bit", "gtFine"):
        shutil.copytree(synth_raw_root / part / "val", root / part / "val")
    _paint_out(root, "val", {21, 24, 26})
    # Predictions never say vegetation, person or sky, but do say car (absent from the truth).
    values = sorted(set(EVAL_LABEL_IDS) - {21, 24, 23}) + [0, 29]
    frames = list_frames(root, "val", label_source="ids")
    for path in write_noisy_predictions(frames, tmp_path / "pred", seed=5, error_rate=0.3, block=4, values=values):
        pred = np.array(Image.open(path))
        pred[pred == 23] = 11  # sky, where the truth has it, becomes building
        Image.fromarray(pred).save(path)

    official, fast = both_engines(tmp_path / "pred", root)
    assert_same_export(official, fast)
    for result in (official, fast):
        scores, inst = result["classScores"], result["classInstScores"]
        assert math.isnan(scores["vegetation"])  # neither in truth nor predicted
        assert math.isnan(scores["person"]) and math.isnan(inst["person"])
        assert scores["car"] == 0.0 and inst["car"] == 0.0  # predicted but never there: all false positives
        assert scores["sky"] == 0.0  # there but never predicted
        assert math.isnan(scores["unlabeled"])  # ignored ids are always NaN
        assert math.isnan(inst["road"])  # no instance score for stuff classes
        nineteen = [scores[name] for name in CLASS_NAMES]
        assert result["averageScoreClasses"] == pytest.approx(np.nanmean(nineteen), abs=1e-12)
        assert not math.isnan(result["categoryInstScores"]["human"])  # riders remain


def test_both_engines_mode_fails_loudly_when_they_disagree(synth_raw_root, tmp_path, monkeypatch):
    frames = list_frames(synth_raw_root, "val", label_source="ids")
    write_noisy_predictions(frames, tmp_path / "pred", seed=1)
    real_run_fast = runner_module.run_fast

    def off_by_a_little(*args, **kwargs):
        export, frames = real_run_fast(*args, **kwargs)
        export["classScores"]["road"] += 1e-6
        return export, frames

    monkeypatch.setattr(runner_module, "run_fast", off_by_a_little)
    with pytest.raises(EngineMismatchError, match=r"classScores\[road\]"):
        evaluate(tmp_path / "pred", synth_raw_root, engine="both", workers=1)


def test_compare_exports_flags_nan_in_one_engine_only(synth_raw_root, tmp_path):
    frames = list_frames(synth_raw_root, "val", label_source="ids")
    write_noisy_predictions(frames, tmp_path / "pred", seed=2)
    result = evaluate(tmp_path / "pred", synth_raw_root, engine="both", workers=1)
    assert result["cityseg"]["max_abs_diff"] < 1e-9
    assert set(result["cityseg"]["timings"]) == {"validate_s", "official_s", "fast_s"}
    changed = {**result["cityseg"]["fast"], "classInstScores": dict(result["classInstScores"], person=float("nan"))}
    diffs, _ = compare_exports(result, changed)
    assert any("person" in d and "NaN" in d for d in diffs)
