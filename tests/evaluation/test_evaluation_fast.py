"""The fast engine's per-frame counting against the script's own per-instance definition, and per-frame scores
against theirs, on hand-made arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from cityscapesscripts.helpers.labels import id2label

from cityseg.errors import UserError
from cityseg.evaluation import fast
from cityseg.evaluation.fast import INSTANCE_CATEGORIES, _instance_counts, _joint_counts, frame_score, pair_histogram
from cityseg.labels import ids_to_train_ids
from cityseg.training.metrics import confusion_matrix, mean_iou, pixel_accuracy

PERSON, RIDER, CAR, TRUCK, CARAVAN, ROAD = 24, 25, 26, 27, 29, 7
WHERE = Path("frame_gtFine_instanceIds.png")


def per_instance_reference(instances: np.ndarray, pred: np.ndarray) -> list[tuple[int, int, int, int]]:
    """What evalPixelLevelSemanticLabeling does: one mask per instance id, in np.unique order."""
    rows = []
    for inst_id in np.unique(instances[instances > 1000]):
        label = id2label[int(inst_id) // 1000]
        if label.ignoreInEval:
            continue
        mask = instances == inst_id
        category_ids = INSTANCE_CATEGORIES[label.category]
        rows.append(
            (
                label.id,
                int(mask.sum()),
                int(np.count_nonzero(pred[mask] == label.id)),
                int(np.count_nonzero(np.isin(pred[mask], category_ids))),
            )
        )
    return rows


def test_instance_counts_match_the_scripts_per_instance_loop():
    rng = np.random.default_rng(0)
    # stuff ids, id 1000 exactly (not an instance), scored instances in shuffled order, an ignored caravan
    values = [ROAD, 11, 1000, PERSON * 1000 + 3, PERSON * 1000, RIDER * 1000 + 1, CAR * 1000 + 7, TRUCK * 1000 + 2]
    values += [CARAVAN * 1000 + 1, CAR * 1000 + 12]
    instances = rng.choice(np.array(values, dtype=np.uint16), size=(48, 64))
    # predictions hit the class, the category only (person <-> rider, car <-> caravan), or miss
    pred = rng.choice(np.array([PERSON, RIDER, CAR, TRUCK, CARAVAN, ROAD, 0], dtype=np.uint8), size=(48, 64))
    got = [tuple(row) for row in _instance_counts(instances, pred, WHERE).tolist()]
    expected = per_instance_reference(instances, pred)
    assert got == expected
    assert any(category_tp > tp for _, _, tp, category_tp in got)  # category-only hits were exercised


def test_more_instances_than_a_byte_can_number_are_counted_each():
    # > 256 instances in one frame: the instances are numbered in 16 bits, not 8
    rng = np.random.default_rng(1)
    ids = np.array(
        [PERSON * 1000 + k for k in range(1, 200)] + [CAR * 1000 + k for k in range(1, 150)], dtype=np.uint16
    )
    instances = rng.choice(np.concatenate([ids, np.array([ROAD, 11], np.uint16)]), size=(96, 128))
    pred = rng.choice(np.array([PERSON, RIDER, CAR, CARAVAN, ROAD], dtype=np.uint8), size=(96, 128))
    got = [tuple(row) for row in _instance_counts(instances, pred, WHERE).tolist()]
    assert len(got) > 256
    assert got == per_instance_reference(instances, pred)


def test_no_instances_give_an_empty_table():
    instances = np.full((4, 6), ROAD, dtype=np.uint16)
    assert _instance_counts(instances, np.zeros((4, 6), np.uint8), WHERE).shape == (0, 4)


def test_instance_ids_of_a_class_without_instances_are_a_user_error():
    instances = np.full((4, 6), ROAD * 1000 + 1, dtype=np.uint16)  # "road instance": not Cityscapes
    with pytest.raises(UserError, match=r"label ids \[7\]"):
        _instance_counts(instances, np.zeros((4, 6), np.uint8), WHERE)


def test_joint_counts_are_the_pixel_pairs():
    gt = np.array([[7, 7, 26], [0, 33, 7]], dtype=np.uint8)
    pred = np.array([[7, 8, 26], [7, 33, 7]], dtype=np.uint8)
    joint = _joint_counts(gt, pred, WHERE)
    assert joint.shape == (34, 256) and joint.sum() == gt.size
    assert joint[7, 7] == 2 and joint[7, 8] == 1 and joint[26, 26] == 1 and joint[0, 7] == 1 and joint[33, 33] == 1


def test_ground_truth_values_beyond_the_label_ids_name_the_file():
    gt = np.array([[7, 40], [200, 7]], dtype=np.uint8)
    with pytest.raises(UserError, match=r"frame_gtFine_instanceIds.png holds values \[40, 200\]"):
        _joint_counts(gt, np.zeros_like(gt), WHERE)


def _reference_pair_counts(rows: np.ndarray, values: np.ndarray, n_rows: int) -> np.ndarray:
    """(n_rows, 256) counts by a plain loop over pixels: the definition pair_histogram must meet."""
    counts = np.zeros((n_rows, 256), dtype=np.int64)
    for row, value in zip(rows.ravel().tolist(), values.ravel().tolist(), strict=True):
        counts[row, value] += 1
    return counts


@pytest.mark.parametrize(
    "dtype, n_rows", [(np.uint8, 34), (np.uint8, 256), (np.uint16, 34), (np.uint16, 300), (np.uint16, 65536)]
)
def test_pair_histogram_counts_every_pair_up_to_the_last_row_and_value(dtype, n_rows):
    rng = np.random.default_rng(n_rows)
    rows = rng.integers(0, n_rows, (37, 53)).astype(dtype)
    values = rng.integers(0, 256, (37, 53)).astype(np.uint8)
    rows[0, :3] = [0, n_rows - 1, n_rows - 1]  # the range's two ends, where a histogram's bin edges could slip
    values[0, :3] = [0, 255, 0]
    counts = pair_histogram(rows, values, n_rows)
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts, _reference_pair_counts(rows, values, n_rows))


def test_pair_histogram_counts_exactly_beyond_float32s_integers(monkeypatch):
    # calcHist counts in float32; above its limit the numpy path must give the same exact counts
    monkeypatch.setattr(fast, "_CALCHIST_MAX_PIXELS", 10)
    rows = np.array([[3, 3, 1], [0, 3, 2], [1, 1, 3], [3, 0, 0]], dtype=np.uint16)
    values = np.array([[9, 9, 0], [255, 9, 2], [1, 0, 9], [9, 255, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(pair_histogram(rows, values, 4), _reference_pair_counts(rows, values, 4))


def test_pair_histogram_refuses_inputs_it_would_miscount():
    with pytest.raises(TypeError, match="int32"):
        pair_histogram(np.zeros((2, 2), np.int32), np.zeros((2, 2), np.uint8), 34)
    with pytest.raises(TypeError, match="uint16"):
        pair_histogram(np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint16), 34)


def _frame_score_reference(gt_ids: np.ndarray, pred_ids: np.ndarray) -> tuple[float, float]:
    """By the definition: trainIds, labelled ground truth only, IoU per class present, a prediction of an
    ignored id a miss of the ground truth's class."""
    gt, pred = ids_to_train_ids(gt_ids), ids_to_train_ids(pred_ids)
    labelled = gt != 255
    ious = []
    for c in range(19):
        tp = np.sum(labelled & (gt == c) & (pred == c))
        union = np.sum(labelled & ((gt == c) | (pred == c)))
        if union:
            ious.append(tp / union)
    return (float(np.mean(ious)) if ious else float("nan")), float(np.sum(labelled & (gt == pred)) / labelled.sum())


def test_frame_scores_follow_their_definition_and_the_training_metrics():
    rng = np.random.default_rng(5)
    gt = rng.choice(np.array([0, 7, 8, 11, 21, 23, 24, 26], dtype=np.uint8), size=(48, 64))
    pred = np.where(
        rng.random((48, 64)) < 0.3, rng.choice(np.array([0, 4, 7, 8, 13, 26], dtype=np.uint8), (48, 64)), gt
    )
    miou, accuracy = frame_score(_joint_counts(gt, pred, WHERE))
    assert (miou, accuracy) == pytest.approx(_frame_score_reference(gt, pred), abs=1e-12)
    # predictions of valid classes only (what `cityseg predict` writes): bit-identical to the training metrics
    pred = np.where((pred == 0) | (pred == 4), 7, pred).astype(np.uint8)
    conf = confusion_matrix(torch.from_numpy(ids_to_train_ids(pred)), torch.from_numpy(ids_to_train_ids(gt)))
    assert frame_score(_joint_counts(gt, pred, WHERE)) == (mean_iou(conf), pixel_accuracy(conf))
    ignored = np.zeros((4, 4), np.uint8)  # all ground truth ignored: nothing to score
    assert all(np.isnan(frame_score(_joint_counts(ignored, ignored, WHERE))))
