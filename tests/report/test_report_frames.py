"""Per-frame scores for the report come from the evaluation's own counts, matched by the official rule; an
evaluation JSON without them (or of other files) is scored again, never a crash."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers_noisy import write_noisy_predictions
from PIL import Image

from cityseg import evaluation
from cityseg.data.frames import list_frames, read_train_ids
from cityseg.errors import UserError
from cityseg.evaluation import default_json_path, evaluate
from cityseg.report import load_examples, score_frames


@pytest.fixture
def evaluated(synth_raw_root, tmp_path):
    """Predictions in a subfolder (the official matcher walks it) and their evaluation at the default JSON path."""
    pred = tmp_path / "pred"
    write_noisy_predictions(list_frames(synth_raw_root, "val", label_source="ids"), pred / "nested", seed=3)
    result = evaluate(pred, synth_raw_root, "val", engine="fast", json_out=default_json_path(pred, "val"))
    return pred, result


def _no_second_evaluation(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the predictions were scored again")

    monkeypatch.setattr(evaluation, "evaluate", fail)


def test_scores_come_from_the_evaluation_without_decoding_again(evaluated, synth_raw_root, monkeypatch):
    pred, result = evaluated
    _no_second_evaluation(monkeypatch)
    rows = {row["id"]: row for row in result["cityseg"]["frames"]}
    for source in (result, default_json_path(pred, "val"), None):  # the dict, its JSON, the default JSON
        scores = score_frames(pred, synth_raw_root, "val", source)
        assert {s.id for s in scores} == set(rows) and [s.miou for s in scores] == sorted(s.miou for s in scores)
        assert all((s.miou, s.accuracy) == (rows[s.id]["miou"], rows[s.id]["pixel_accuracy"]) for s in scores)


def test_an_older_json_or_changed_files_are_scored_again(evaluated, synth_raw_root, tmp_path):
    pred, result = evaluated
    old = json.loads(json.dumps(result, allow_nan=True))
    del old["cityseg"]["frames"]  # an evaluation written before per-frame scores
    recorded = sorted(score_frames(pred, synth_raw_root, "val", result), key=lambda s: s.id)
    assert sorted(score_frames(pred, synth_raw_root, "val", old), key=lambda s: s.id) == recorded
    victim = sorted(pred.rglob("*.png"))[0]
    truth = next(
        f.label_ids for f in list_frames(synth_raw_root, "val", label_source="ids") if victim.name.startswith(f.id)
    )
    shutil.copy(truth, victim)  # a perfect prediction now: the recorded score is stale
    again = {s.id: s for s in score_frames(pred, synth_raw_root, "val", result)}
    assert again[victim.name[: len(recorded[0].id)]].miou == 1.0


def test_predictions_are_matched_by_the_official_rule(evaluated, synth_raw_root):
    pred, _result = evaluated
    frames = list_frames(synth_raw_root, "val", label_source="ids")
    examples = load_examples([f.id for f in frames], pred, synth_raw_root, "val")  # found in the nested folder
    for frame, example in zip(frames, examples, strict=True):
        (path,) = pred.rglob(f"{frame.id}*.png")
        assert np.array_equal(example.prediction, read_train_ids(path, label_source="ids"))
    shutil.copy(path, pred / f"{frame.id}_copy.png")  # a second match: the official script refuses it too
    with pytest.raises(UserError, match="more than one prediction"):
        load_examples([frame.id], pred, synth_raw_root, "val")


def test_examples_show_the_score_in_percent(evaluated, synth_raw_root):
    pred, _result = evaluated
    scores = score_frames(pred, synth_raw_root, "val")
    example = load_examples([scores[0].id], pred, synth_raw_root, "val", scores=scores[:1])[0]
    assert example.title == f"{scores[0].id}\nmIoU {100 * scores[0].miou:.2f} %"
    (path,) = pred.rglob(f"{scores[0].id}*.png")
    assert example.prediction.shape == np.asarray(Image.open(path)).shape
