"""The official script in-process: explicit arguments, no stray files, no sys.exit, numpy 2.4 fixed and
restored, and labelIds PNGs written from trainIds count exactly like a confusion matrix on trainIds."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_noisy import PREDICTION_SUFFIX, noisy_labels
from PIL import Image

from cityseg.data.frames import list_frames
from cityseg.errors import UserError
from cityseg.evaluation import evaluate
from cityseg.evaluation.official import numpy_in1d_for, official_args, official_module, run_official
from cityseg.labels import CLASS_NAMES, NUM_CLASSES, TRAIN_ID_TO_ID, ids_to_train_ids, train_ids_to_ids
from cityseg.training.metrics import confusion_matrix, iou_per_class


def test_our_args_object_sets_every_attribute_the_script_reads():
    source = Path(official_module().__file__).read_text()
    read = set(re.findall(r"\bargs\.(\w+)", source))
    args = official_args()
    assert read, "the script's source changed shape"
    assert read <= set(vars(args)), sorted(read - set(vars(args)))
    assert args.JSONOutput is False and args.quiet is True and args.evalInstLevelScore is True


def test_runs_without_environment_and_writes_no_files(synth_raw_root, tmp_path, monkeypatch):
    frames = list_frames(synth_raw_root, "val", label_source="ids")
    pred = tmp_path / "pred"
    pred.mkdir()
    for frame in frames:
        Image.open(frame.label_ids).save(pred / f"{frame.id}{PREDICTION_SUFFIX}")
    decoys = {name: tmp_path / name for name in ("dataset", "results", "export")}
    for name, folder in decoys.items():
        folder.mkdir()
        monkeypatch.setenv(f"CITYSCAPES_{name.upper()}", str(folder))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    package_results = Path(official_module().__file__).resolve().parents[1] / "evaluationResults"
    existed = package_results.exists()

    result = evaluate(pred, synth_raw_root, engine="official", workers=1)

    assert result["averageScoreClasses"] == 1.0
    assert all(not any(folder.iterdir()) for folder in decoys.values())
    assert not any(cwd.iterdir())
    assert package_results.exists() == existed


def test_a_bad_export_dir_variable_does_not_break_the_import(tmp_path, monkeypatch):
    name = official_module().__name__
    monkeypatch.delitem(sys.modules, name)  # restored afterwards
    monkeypatch.setenv("CITYSCAPES_EXPORT_DIR", str(tmp_path / "not-a-folder"))
    fresh = official_module()  # the script itself raises ValueError at import with this variable
    assert fresh.__name__ == name and hasattr(fresh, "evaluateImgLists")
    assert os.environ["CITYSCAPES_EXPORT_DIR"] == str(tmp_path / "not-a-folder")  # put back


def test_numpy_in1d_is_given_only_to_the_script_and_taken_back():
    module = official_module()
    original = module.np
    with numpy_in1d_for(module):
        values = np.array([[24, 7], [26, 33]], dtype=np.uint8)
        assert module.np.in1d(values, [26, 33]).tolist() == [False, False, True, True]
        assert module.np.zeros is np.zeros  # everything else is numpy's own
    assert module.np is original
    assert not hasattr(np, "in1d")  # numpy itself was never touched (2.4 removed it)


def test_system_exit_becomes_a_user_error_naming_the_file(synth_raw_root, tmp_path):
    frame = list_frames(synth_raw_root, "val", label_source="ids")[0]
    missing = tmp_path / "nowhere.png"
    with pytest.raises(UserError, match=re.escape(str(missing))):
        run_official([missing], [frame.label_ids])


def test_unknown_ground_truth_id_is_a_user_error_not_an_exit(synth_raw_root, tmp_path):
    frame = list_frames(synth_raw_root, "val", label_source="ids")[0]
    gt_dir = tmp_path / "gtFine" / "val" / frame.city
    gt_dir.mkdir(parents=True)
    gt = np.array(Image.open(frame.label_ids))
    gt[0, 0] = 40
    bad_gt = gt_dir / frame.label_ids.name
    Image.fromarray(gt).save(bad_gt)
    Image.open(frame.instance_ids).save(gt_dir / frame.instance_ids.name)
    with pytest.raises(UserError, match="Unknown label with id 40"):
        run_official([frame.label_ids], [bad_gt])


def test_trainids_written_as_labelids_count_like_a_trainids_confusion(synth_raw_root, tmp_path):
    frames = list_frames(synth_raw_root, "val", label_source="ids")
    rng = np.random.default_rng(7)
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    expected = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.int64)
    for frame in frames:
        gt_train = ids_to_train_ids(np.asarray(Image.open(frame.label_ids)))  # (H, W), 255 = ignore
        # a model's output: trainIds 0..18 everywhere, right on about 70% of the blocks
        guess = noisy_labels(np.where(gt_train == 255, 0, gt_train).astype(np.uint8), rng, 0.3, 4, range(NUM_CLASSES))
        Image.fromarray(train_ids_to_ids(guess)).save(pred_dir / f"{frame.id}{PREDICTION_SUFFIX}")
        expected += confusion_matrix(torch.from_numpy(guess), torch.from_numpy(gt_train))

    result = evaluate(pred_dir, synth_raw_root, engine="official", workers=1)

    label_ids = TRAIN_ID_TO_ID[:NUM_CLASSES].astype(int)  # trainId order
    official = np.asarray(result["confMatrix"])[np.ix_(label_ids, label_ids)]
    assert np.array_equal(official, expected.numpy())
    assert [result["labels"][name] for name in CLASS_NAMES] == label_ids.tolist()
    ours = iou_per_class(expected)
    for train_id, name in enumerate(CLASS_NAMES):
        assert result["classScores"][name] == pytest.approx(ours[train_id], abs=1e-12, nan_ok=True)
