"""The official pixel-level metrics, recomputed from counts: one joint histogram per image instead of
the script's per-label and per-instance passes over every pixel, with PNG decoding in parallel.

What the official script computes, and what we replicate exactly (same formulas, same order of
floating-point accumulation, so the numbers agree to the last bit in practice):

- A confusion matrix over all labelIds 0..33 (rows ground truth, columns prediction), every pixel
  counted, including ground-truth pixels of ignored classes.
- Class IoU = tp / (tp + fp + fn) for each of the 19 evaluated classes; fn = rest of the class's
  row; fp = the class's column over rows of *evaluated* classes only (predicting a class on an
  ignored ground-truth pixel costs nothing). NaN when tp + fp + fn = 0, and for ignored ids.
- Category IoU: the same with sets of ids (evaluated members of the category); fp rows exclude
  ignored ids and the category's own ids.
- iIoU: every ground-truth instance (instanceIds value > 1000, class = value // 1000, classes with
  ignoreInEval skipped) adds tp and fn weighted by avgClassSize[class] / instance size, so a small
  pedestrian counts as much as a large one; fp is the unweighted pixel fp from the matrix. For the
  two instance categories (human, vehicle) tp counts instance pixels predicted as any id of the
  category, including the ignored caravan and trailer ids.
- Averages: plain mean over the non-NaN entries, accumulated in label-id order.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Per-id fields the official script reads (ignoreInEval, hasInstances, category) are not in
# cityseg.labels, so the table comes from the same source it is derived from.
from cityscapesscripts.helpers.labels import category2labels, id2label, labels
from PIL import Image

from cityseg.errors import UserError
from cityseg.evaluation.checks import PredictionProblem, check_values, read_prediction

INSTANCE_THRESHOLD = 1000  # instanceIds above this are instances (labelId * 1000 + k)

# The script's evaluation label list: every id >= 0, in table order (0..33).
EVAL_IDS: tuple[int, ...] = tuple(lab.id for lab in labels if lab.id >= 0)
N_IDS = max(EVAL_IDS) + 1
_IDS = np.arange(N_IDS)
_SCORED = np.array([not id2label[i].ignoreInEval for i in range(N_IDS)])  # (34,) rows counted as fp

# Classes and categories with instance-level scores, derived from the table as the script does.
INSTANCE_CLASSES: tuple[str, ...] = tuple(lab.name for lab in labels if lab.hasInstances and not lab.ignoreInEval)
INSTANCE_CATEGORIES: dict[str, tuple[int, ...]] = {
    category: tuple(lab.id for lab in members if lab.id >= 0)
    for category, members in category2labels.items()
    if all(lab.hasInstances for lab in members if lab.id >= 0)
}

# (34, 256): is prediction value v inside the instance category of class c (for category tp)?
_CATEGORY_HIT = np.zeros((N_IDS, 256), dtype=bool)
for _cls in EVAL_IDS:
    _ids = INSTANCE_CATEGORIES.get(id2label[_cls].category)
    if _ids:
        _CATEGORY_HIT[_cls, list(_ids)] = True
# Lookup tables over every 16-bit instance id (Cityscapes' are labelId * 1000 + k < 34000):
# its class, and its role: 0 = skipped (class ignored in evaluation), 1 = scored, -1 = impossible.
_MAX_ID = 0xFFFF
_ID_CLASS = (np.arange(_MAX_ID + 1) // INSTANCE_THRESHOLD).astype(np.uint8)
_ID_ROLE = np.full(_MAX_ID + 1, -1, dtype=np.int8)
for _cls in EVAL_IDS:
    _role = 0 if id2label[_cls].ignoreInEval else (1 if id2label[_cls].name in INSTANCE_CLASSES else -1)
    _ID_ROLE[_ID_CLASS == _cls] = _role


@dataclass(frozen=True)
class Pair:
    """One frame to score: its prediction and the shipped ground truth."""

    frame_id: str
    prediction: Path
    label_ids: Path
    instance_ids: Path


@dataclass(frozen=True)
class FrameCounts:
    """Everything the metrics need from one frame."""

    joint: np.ndarray  # (256, 256) int64 pixel counts, rows = ground-truth labelId, cols = predicted value
    instances: np.ndarray  # (K, 4) int64 per instance, by ascending instance id: class id, size, tp, category tp


# ------------------------------------------------------------------------------------------------------
# Per frame (runs in worker threads)
# ------------------------------------------------------------------------------------------------------


def _read_ground_truth(path: Path, what: str) -> np.ndarray:
    """(H, W) integer array of a shipped gtFine PNG; a damaged one is the user's to restore."""
    try:
        with Image.open(path) as image:
            image.load()
            array = np.asarray(image)
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for corrupt files
        raise UserError(
            f"cannot read ground-truth {what} {path} ({exc.__class__.__name__}); restore it from "
            "gtFine_trainvaltest.zip (or regenerate the synthetic dataset)."
        ) from None
    if array.ndim != 2 or array.dtype.kind not in "ui":
        raise UserError(f"ground-truth {what} {path} is not a single-channel integer image; restore it from gtFine.")
    return array


def _joint_counts(gt: np.ndarray, pred: np.ndarray, gt_path: Path) -> np.ndarray:
    """(256, 256) counts of (ground truth, prediction) value pairs in one bincount pass."""
    if gt.dtype != np.uint8 and gt.size and gt.max() > 255:
        raise UserError(f"ground truth {gt_path} holds values above 255, which are not Cityscapes labelIds.")
    index = (gt.astype(np.uint16) << 8) | pred  # (H, W) uint16
    return np.bincount(index.ravel(), minlength=256 * 256).reshape(256, 256)


def _instance_counts(instances: np.ndarray, pred: np.ndarray, inst_path: Path) -> np.ndarray:
    """(K, 4) per ground-truth instance: class id, size, pixels predicted as its class, as its category."""
    flat = instances.ravel()
    where = np.flatnonzero(flat > INSTANCE_THRESHOLD)  # (N,) instance pixels
    ids = flat[where]
    if ids.size and ids.max() > _MAX_ID:
        _raise_bad_instances(ids[ids > _MAX_ID], inst_path)
    roles = _ID_ROLE[ids]
    if (roles < 0).any():
        _raise_bad_instances(ids[roles < 0], inst_path)
    scored = roles == 1
    ids, predicted = ids[scored], pred.ravel()[where[scored]]
    if ids.size == 0:
        return np.zeros((0, 4), dtype=np.int64)
    classes = _ID_CLASS[ids]
    # Instance ids are below 34000, so counting by id beats sorting the pixels.
    sizes = np.bincount(ids)
    present = np.flatnonzero(sizes)
    tp = np.bincount(ids[predicted == classes], minlength=sizes.size)[present]
    category_tp = np.bincount(ids[_CATEGORY_HIT[classes, predicted]], minlength=sizes.size)[present]
    return np.stack([present // INSTANCE_THRESHOLD, sizes[present], tp, category_tp], axis=1).astype(np.int64)


def _raise_bad_instances(ids: np.ndarray, inst_path: Path) -> None:
    bad = sorted({int(i) // INSTANCE_THRESHOLD for i in np.unique(ids)})
    raise UserError(
        f"ground-truth instances {inst_path} hold instance ids of label ids {bad[:10]}, which have no "
        "instances in Cityscapes; restore the file from gtFine."
    )


def count_frame(pair: Pair) -> FrameCounts | PredictionProblem:
    """Decode one frame's three PNGs and count; a bad prediction comes back as a problem, not an exception."""
    try:
        pred = read_prediction(pair.prediction)  # (H, W) uint8
    except PredictionProblem as problem:
        return problem
    gt = _read_ground_truth(pair.label_ids, "labelIds")  # (H, W)
    instances = _read_ground_truth(pair.instance_ids, "instanceIds")  # (H, W)
    if instances.shape != gt.shape:
        raise UserError(
            f"ground truth {pair.label_ids} and {pair.instance_ids} differ in size; restore both from gtFine."
        )
    if pred.shape != gt.shape:
        return PredictionProblem(
            "wrong size", pair.prediction, f"{pred.shape[1]}x{pred.shape[0]}, expected {gt.shape[1]}x{gt.shape[0]}"
        )
    joint = _joint_counts(gt, pred, pair.label_ids)
    try:
        check_values(pair.prediction, joint.sum(axis=0))
    except PredictionProblem as problem:
        return problem
    return FrameCounts(joint=joint, instances=_instance_counts(instances, pred, pair.instance_ids))


def count_frames(pairs: Sequence[Pair], workers: int) -> list[FrameCounts | PredictionProblem]:
    """Count every frame, decoding in parallel threads (PIL and zlib release the GIL); order is kept."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(count_frame, pairs))


# ------------------------------------------------------------------------------------------------------
# Whole set
# ------------------------------------------------------------------------------------------------------


@dataclass
class Totals:
    """Counts summed over frames: the confusion matrix and the weighted instance tallies."""

    confusion: np.ndarray  # (34, 34) int64, rows = ground truth
    class_tp: dict[str, float]
    class_fn: dict[str, float]
    category_tp: dict[str, float]
    category_fn: dict[str, float]


def accumulate(frames: Sequence[FrameCounts], avg_class_size: dict[str, float]) -> Totals:
    """Sum frames in order; instance weights are added one by one, in the script's order, so float sums agree."""
    joint = np.zeros((256, 256), dtype=np.int64)
    totals = Totals(
        confusion=np.zeros((N_IDS, N_IDS), dtype=np.int64),
        class_tp=dict.fromkeys(INSTANCE_CLASSES, 0.0),
        class_fn=dict.fromkeys(INSTANCE_CLASSES, 0.0),
        category_tp=dict.fromkeys(INSTANCE_CATEGORIES, 0.0),
        category_fn=dict.fromkeys(INSTANCE_CATEGORIES, 0.0),
    )
    for frame in frames:
        joint += frame.joint
        for class_id, size, tp, category_tp in frame.instances.tolist():
            label = id2label[class_id]
            weight = avg_class_size[label.name] / float(size)
            totals.class_tp[label.name] += float(tp) * weight
            totals.class_fn[label.name] += float(size - tp) * weight
            if label.category in totals.category_tp:
                totals.category_tp[label.category] += float(category_tp) * weight
                totals.category_fn[label.category] += float(size - category_tp) * weight
    unknown_gt = joint[N_IDS:].sum()
    if unknown_gt:
        rows = np.flatnonzero(joint[N_IDS:].sum(axis=1)) + N_IDS
        raise UserError(
            f"the ground truth holds values {rows.tolist()[:10]} that are not Cityscapes labelIds; "
            "use the shipped *_gtFine_labelIds.png files."
        )
    totals.confusion = joint[:N_IDS, :N_IDS].copy()
    return totals


def _ratio(tp: float, fp: int, fn: float) -> float:
    """tp / (tp + fp + fn), summed in the script's order; NaN when nothing was there to find."""
    denom = tp + fp + fn
    return float("nan") if denom == 0 else float(tp) / denom


def _mean_of_valid(scores: dict[str, float]) -> float:
    """Mean over non-NaN scores, added left to right like the script (not pairwise, not compensated)."""
    total, count = 0.0, 0
    for value in scores.values():
        if not np.isnan(value):
            total += value
            count += 1
    return total / count if count else float("nan")


def _class_scores(conf: np.ndarray, totals: Totals) -> tuple[dict[str, float], dict[str, float]]:
    scored_column = conf[_SCORED].sum(axis=0)  # (34,) pixels predicted as each id on evaluated ground truth
    iou: dict[str, float] = {}
    iiou: dict[str, float] = {}
    for label_id in EVAL_IDS:
        name = id2label[label_id].name
        if not _SCORED[label_id]:
            iou[name] = iiou[name] = float("nan")
            continue
        tp = int(conf[label_id, label_id])
        fn = int(conf[label_id].sum()) - tp
        fp = int(scored_column[label_id]) - tp
        iou[name] = _ratio(tp, fp, fn)
        iiou[name] = _ratio(totals.class_tp[name], fp, totals.class_fn[name]) if name in totals.class_tp else float("nan")
    return iou, iiou


def _category_scores(conf: np.ndarray, totals: Totals) -> tuple[dict[str, float], dict[str, float]]:
    iou: dict[str, float] = {}
    iiou: dict[str, float] = {}
    for category, members in category2labels.items():
        fp_rows = [i for i in EVAL_IDS if _SCORED[i] and id2label[i].category != category]
        ids = [lab.id for lab in members if not lab.ignoreInEval and lab.id in EVAL_IDS]
        if ids:
            tp = int(conf[np.ix_(ids, ids)].sum())
            fn = int(conf[ids].sum()) - tp
            fp = int(conf[np.ix_(fp_rows, ids)].sum())
            iou[category] = _ratio(tp, fp, fn)
        else:
            iou[category] = float("nan")
        if category in INSTANCE_CATEGORIES:
            inst_ids = list(INSTANCE_CATEGORIES[category])  # includes ignored members, as the script does
            fp = int(conf[np.ix_(fp_rows, inst_ids)].sum())
            iiou[category] = _ratio(totals.category_tp[category], fp, totals.category_fn[category])
        else:
            iiou[category] = float("nan")
    return iou, iiou


def export_dict(totals: Totals) -> dict[str, Any]:
    """The official export structure (same keys, same label names, same NaN rules) from summed counts."""
    conf = totals.confusion
    total = int(conf.sum())
    class_iou, class_iiou = _class_scores(conf, totals)
    category_iou, category_iiou = _category_scores(conf, totals)
    return {
        "confMatrix": conf.tolist(),
        "priors": {id2label[i].name: float(conf[i].sum()) / total for i in EVAL_IDS},
        "labels": {id2label[i].name: i for i in EVAL_IDS},
        "classScores": class_iou,
        "classInstScores": class_iiou,
        "categoryScores": category_iou,
        "categoryInstScores": category_iiou,
        "averageScoreClasses": _mean_of_valid(class_iou),
        "averageScoreInstClasses": _mean_of_valid(class_iiou),
        "averageScoreCategories": _mean_of_valid(category_iou),
        "averageScoreInstCategories": _mean_of_valid(category_iiou),
    }


def run_fast(
    pairs: Sequence[Pair], workers: int, avg_class_size: dict[str, float]
) -> tuple[dict[str, Any] | None, list[PredictionProblem]]:
    """Score all pairs; returns (export dict, []) or (None, problems) when some predictions are unusable."""
    outcomes = count_frames(pairs, workers)
    problems = [o for o in outcomes if isinstance(o, PredictionProblem)]
    if problems:
        return None, problems
    return export_dict(accumulate(outcomes, avg_class_size)), []
