"""The official scores from the fast engine's per-frame counts (fast.FrameCounts): the confusion matrix and
the instance-weighted tallies summed over frames in the script's order, then IoU, iIoU and their averages
with the script's NaN rules, returned in its export format. See fast.py's docstring for the definitions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from cityscapesscripts.helpers.labels import category2labels, id2label

from cityseg.evaluation.checks import PredictionProblem
from cityseg.evaluation.fast import (
    _SCORED,
    EVAL_IDS,
    INSTANCE_CATEGORIES,
    INSTANCE_CLASSES,
    N_IDS,
    FrameCounts,
    Pair,
    SegmentReader,
    count_frames,
)


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
        iiou[name] = (
            _ratio(totals.class_tp[name], fp, totals.class_fn[name]) if name in totals.class_tp else float("nan")
        )
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
    pairs: Sequence[Pair],
    workers: int,
    avg_class_size: dict[str, float],
    read_segments: SegmentReader | None = None,
) -> tuple[dict[str, Any] | None, list[PredictionProblem]]:
    """Score all pairs; returns (export dict, []) or (None, problems) when some predictions are unusable.

    Ground truth is decoded from the PNGs, or with `read_segments` (gt_cache) read already encoded:
    the same integer counts either way, so the same numbers.
    """
    outcomes = count_frames(pairs, workers, read_segments)
    problems = [o for o in outcomes if isinstance(o, PredictionProblem)]
    if problems:
        return None, problems
    return export_dict(accumulate(outcomes, avg_class_size)), []
