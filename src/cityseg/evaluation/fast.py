"""The fast engine: the official pixel-level metrics from per-frame counts, decoded and counted in threads: a
(labelId, prediction) histogram for the confusion matrix and per instance its class, size and hits (iIoU); sums and
formulas are the script's, in its order (docs/evaluation.md). Also each frame's own mIoU and accuracy."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

# The per-id fields the script reads (ignoreInEval, hasInstances, category) are not in cityseg.labels.
from cityscapesscripts.helpers.labels import category2labels, id2label, labels

from cityseg.data.labelpng import UnreadablePngError, read_png
from cityseg.errors import UserError
from cityseg.evaluation.checks import PredictionProblem, Problems, check_values, map_checked, read_prediction
from cityseg.labels import ID_TO_TRAIN_ID, NUM_CLASSES

INSTANCE_THRESHOLD = 1000  # instanceIds above this are instances (labelId * 1000 + k)

# The script's evaluation label list: every id >= 0, in table order (0..33).
EVAL_IDS: tuple[int, ...] = tuple(lab.id for lab in labels if lab.id >= 0)
N_IDS = max(EVAL_IDS) + 1
_SCORED = np.array([not id2label[i].ignoreInEval for i in range(N_IDS)])  # (34,) rows counted as fp

# Classes and categories with instance-level scores, derived from the table as the script does.
INSTANCE_CLASSES: tuple[str, ...] = tuple(lab.name for lab in labels if lab.hasInstances and not lab.ignoreInEval)
INSTANCE_CATEGORIES: dict[str, tuple[int, ...]] = {
    category: tuple(lab.id for lab in members if lab.id >= 0)
    for category, members in category2labels.items()
    if all(lab.hasInstances for lab in members if lab.id >= 0)
}

# Instance ids are 16-bit (PNG), so their class (id // 1000) is below _N_ID_CLASSES.
_MAX_ID = 0xFFFF
_N_ID_CLASSES = _MAX_ID // INSTANCE_THRESHOLD + 1
# Role of each instance class: 0 = skipped (class ignored in evaluation), 1 = scored, -1 = impossible.
_CLASS_ROLE = np.full(_N_ID_CLASSES, -1, dtype=np.int8)
# Predicted values that count as the instance's category (tp of category iIoU), per instance class.
_IN_CATEGORY = np.zeros((_N_ID_CLASSES, 256), dtype=bool)
for _cls in EVAL_IDS:
    _CLASS_ROLE[_cls] = 0 if id2label[_cls].ignoreInEval else (1 if id2label[_cls].name in INSTANCE_CLASSES else -1)
    _IN_CATEGORY[_cls, list(INSTANCE_CATEGORIES.get(id2label[_cls].category, ()))] = True


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

    joint: np.ndarray  # (34, 256) int64 pixel counts, rows = ground-truth labelId, cols = predicted value
    instances: np.ndarray  # (K, 4) int64 per instance, by ascending instance id: class id, size, tp, category tp


def _joint_counts(gt: np.ndarray, pred: np.ndarray, gt_path: Path) -> np.ndarray:
    """(34, 256) counts of (labelId, prediction) pairs; ground truth past 33 is refused."""
    if gt.size and (gt.max() >= N_IDS or gt.min() < 0):
        bad = np.unique(gt[(gt >= N_IDS) | (gt < 0)])
        raise UserError(
            f"ground truth {gt_path} holds values {bad.tolist()[:10]} that are not Cityscapes labelIds (0..33); "
            "use the shipped *_gtFine_labelIds.png files."
        )
    return pair_histogram(gt if gt.dtype == np.uint8 else gt.astype(np.uint8), pred, N_IDS)


# calcHist counts in float32, exact up to 2**24 per bin; larger images are counted by numpy.
_CALCHIST_MAX_PIXELS = 1 << 24


def pair_histogram(rows: np.ndarray, values: np.ndarray, n_rows: int) -> np.ndarray:
    """(n_rows, 256) int64 counts of (rows[i], values[i]) in one OpenCV calcHist pass (GIL released)."""
    if values.dtype != np.uint8 or rows.dtype not in (np.uint8, np.uint16) or rows.shape != values.shape:
        raise TypeError(
            f"pair_histogram needs uint8/uint16 rows and uint8 values of one shape, got "
            f"{rows.dtype} {rows.shape} and {values.dtype} {values.shape}"
        )
    if rows.size > _CALCHIST_MAX_PIXELS:
        index = rows.astype(np.int64) * 256 + values  # (H, W)
        return np.bincount(index.ravel(), minlength=n_rows * 256).reshape(n_rows, 256)
    if rows.dtype == np.uint16 and n_rows <= 256:
        rows = rows.astype(np.uint8)  # calcHist's 8-bit path (lookup tables) is ~4x its 16-bit one
    if rows.dtype != values.dtype:  # calcHist takes images of one depth
        values = values.astype(rows.dtype)
    counts = cv2.calcHist([rows, values], [0, 1], None, [n_rows, 256], [0, n_rows, 0, 256])  # (n_rows, 256) float32
    return counts.astype(np.int64)


def _instance_counts(instances: np.ndarray, pred: np.ndarray, inst_path: Path) -> np.ndarray:
    """(K, 4) per instance: class id, size, pixels predicted as its class and its category."""
    if instances.dtype != np.uint16:  # PIL may give int32
        if instances.size and (instances.min() < 0 or instances.max() > _MAX_ID):
            _raise_bad_instances(instances[(instances < 0) | (instances > _MAX_ID)], inst_path)
        instances = instances.astype(np.uint16)
    inside = instances > INSTANCE_THRESHOLD  # (H, W) instance pixels
    ids = instances[inside]  # (N,) uint16
    if ids.size == 0:
        return np.zeros((0, 4), dtype=np.int64)
    present = np.flatnonzero(np.bincount(ids, minlength=_MAX_ID + 1))  # (K,) ascending instance ids
    number = np.zeros(_MAX_ID + 1, dtype=np.uint8 if present.size <= 256 else np.uint16)  # instance id -> 0..K-1
    number[present] = np.arange(present.size)
    per_instance = pair_histogram(number[ids], pred[inside], present.size)  # (K, 256)
    roles = _CLASS_ROLE[present // INSTANCE_THRESHOLD]
    if (roles < 0).any():
        _raise_bad_instances(present[roles < 0], inst_path)
    per_instance, classes = per_instance[roles == 1], present[roles == 1] // INSTANCE_THRESHOLD  # ignored dropped
    class_tp = per_instance[np.arange(classes.size), classes]  # pixels predicted as the instance's class id
    category_tp = (per_instance * _IN_CATEGORY[classes]).sum(axis=1)  # ... as any id of its category
    return np.stack([classes, per_instance.sum(axis=1), class_tp, category_tp], axis=1).astype(np.int64)


def _raise_bad_instances(ids: np.ndarray, inst_path: Path) -> None:
    bad = sorted({int(i) // INSTANCE_THRESHOLD for i in np.unique(ids)})
    raise UserError(
        f"ground-truth instances {inst_path} hold instance ids of label ids {bad[:10]}, which have no "
        "instances in Cityscapes; restore the file from gtFine."
    )


def count_prediction(pair: Pair, pred: np.ndarray | None = None) -> FrameCounts:
    """Counts of one frame (`pred`, else its PNG); PredictionProblem for a bad prediction, UserError for bad truth."""
    pred = read_prediction(pair.prediction) if pred is None else pred  # before the truth, whose errors are UserErrors
    gt, instances = read_ground_truth_pair(pair)  # (H, W) each
    if pred.shape != gt.shape:
        raise PredictionProblem(
            "wrong size", pair.prediction, f"{pred.shape[1]}x{pred.shape[0]}, expected {gt.shape[1]}x{gt.shape[0]}"
        )
    joint = _joint_counts(gt, pred, pair.label_ids)  # (34, 256)
    check_values(pair.prediction, joint.sum(axis=0))  # before the instance counts, which need valid ids
    return FrameCounts(joint=joint, instances=_instance_counts(instances, pred, pair.instance_ids))


def read_ground_truth_pair(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    """(labelIds, instanceIds) decoded from the pair's gtFine PNGs, each (H, W), one size; damage is a UserError."""
    arrays = []
    for path, what in ((pair.label_ids, "labelIds"), (pair.instance_ids, "instanceIds")):
        try:
            array, _mode = read_png(path)
        except UnreadablePngError as exc:
            raise UserError(f"cannot read ground-truth {what} {path} ({exc.detail}); restore it from gtFine.") from None
        if array.ndim != 2 or array.dtype.kind not in "ui":
            raise UserError(
                f"ground-truth {what} {path} is not a single-channel integer image; restore it from gtFine."
            )
        arrays.append(array)
    if arrays[0].shape != arrays[1].shape:
        raise UserError(
            f"ground truth {pair.label_ids} and {pair.instance_ids} differ in size; restore both from gtFine."
        )
    return arrays[0], arrays[1]


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
    joint = np.zeros((N_IDS, 256), dtype=np.int64)
    totals = Totals(joint, *(dict.fromkeys(keys, 0.0) for keys in [INSTANCE_CLASSES] * 2 + [INSTANCE_CATEGORIES] * 2))
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
    # predicted values >= 34 never get here (check_values), and ground truth >= 34 raised per frame
    totals.confusion = joint[:, :N_IDS].copy()
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
        in_totals = name in totals.class_tp
        iiou[name] = _ratio(totals.class_tp[name], fp, totals.class_fn[name]) if in_totals else float("nan")
    return iou, iiou


def _category_scores(conf: np.ndarray, totals: Totals) -> tuple[dict[str, float], dict[str, float]]:
    iou: dict[str, float] = {}
    iiou: dict[str, float] = {}
    for category, members in category2labels.items():
        iou[category] = iiou[category] = float("nan")
        fp_rows = [i for i in EVAL_IDS if _SCORED[i] and id2label[i].category != category]
        ids = [lab.id for lab in members if not lab.ignoreInEval and lab.id in EVAL_IDS]
        if ids:
            tp = int(conf[np.ix_(ids, ids)].sum())
            fn = int(conf[ids].sum()) - tp
            fp = int(conf[np.ix_(fp_rows, ids)].sum())
            iou[category] = _ratio(tp, fp, fn)
        if category in INSTANCE_CATEGORIES:
            inst_ids = list(INSTANCE_CATEGORIES[category])  # includes ignored members, as the script does
            fp = int(conf[np.ix_(fp_rows, inst_ids)].sum())
            iiou[category] = _ratio(totals.category_tp[category], fp, totals.category_fn[category])
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


# trainId of each labelId (rows) and predicted value (columns); NUM_CLASSES stands for "no class" (ignored ids)
_TRAIN_ROW = np.minimum(ID_TO_TRAIN_ID[:N_IDS], NUM_CLASSES)[:, None]  # (34, 1)
_TRAIN_COLUMN = np.minimum(ID_TO_TRAIN_ID, NUM_CLASSES)[None, :]  # (1, 256)


def frame_score(joint: np.ndarray) -> tuple[float, float]:
    """(mIoU over the classes present in truth or prediction, pixel accuracy) of one frame."""
    conf = np.zeros((NUM_CLASSES + 1, NUM_CLASSES + 1), dtype=np.int64)  # (20, 20) rows = ground truth
    np.add.at(conf, (_TRAIN_ROW, _TRAIN_COLUMN), joint)
    conf = conf[:NUM_CLASSES].astype(np.float64)  # (19, 20) labelled ground truth only
    tp = np.diag(conf)
    denom = conf[:, :NUM_CLASSES].sum(axis=0) + conf.sum(axis=1) - tp  # tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(denom > 0, tp / denom, np.nan)
    miou = float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
    total = conf.sum()
    return miou, float(tp.sum() / total) if total else float("nan")


def run_fast(
    pairs: Sequence[Pair], workers: int, avg_class_size: dict[str, float], context: str
) -> tuple[dict[str, Any], list[tuple[float, float]]]:
    """(export dict, each frame's frame_score) in `workers` threads; one UserError lists bad files."""
    problems = Problems()
    frames = map_checked(count_prediction, pairs, workers, problems)
    problems.raise_if_any(context)
    return export_dict(accumulate(frames, avg_class_size)), [frame_score(frame.joint) for frame in frames]
