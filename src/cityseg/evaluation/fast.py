"""The official pixel-level metrics, recomputed from counts: one joint histogram per image instead of
the script's per-label and per-instance passes over every pixel, with frames decoded and counted in
parallel threads.

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

Where the time goes (one synthetic 2048x1024 frame, one core of the development machine): decoding its
three PNGs (cityseg.data.pngdecode: zlib-ng + cityseg's C row unfilter) ~8.5 ms: the 16-bit instanceIds
~5, the labelIds ~2.8, a prediction as `cityseg predict` writes it ~0.8 (libpng takes ~26 ms for the three,
PIL, the official script's reader, ~37 ms; bench/png_decode.py, bench/label_png.py); counting ~12 ms: ~4 the (labelId,
prediction) pairs, ~7 the instance tallies. Frames run in threads: the decoders and OpenCV release the GIL. The full-frame pair counts use OpenCV's calcHist (~5 ms, in parallel threads) rather than
numpy's bincount (~10 ms, holding the GIL while it counts) or torch's (as fast, but importing torch costs
a first evaluation ~3 s); cv2 is already a requirement of the training augmentations. torchvision's
libpng decoder segfaults on some damaged PNGs (flipped IDAT bytes, torchvision 0.29.1), and predictions
are user files, so it is not used.
The two ground-truth PNGs are the larger share and never change between evaluations, so gt_cache
keeps them decoded, as segments (see encode_segments), and `run_fast(..., read_segments=cache.read)`
then decodes only predictions and counts each frame with a single histogram.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np

# Per-id fields the official script reads (ignoreInEval, hasInstances, category) are not in
# cityseg.labels, so the table comes from the same source it is derived from.
from cityscapesscripts.helpers.labels import category2labels, id2label, labels

from cityseg.data.pngdecode import UnreadablePngError, decode_png
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

# Instance ids are 16-bit (PNG), so their class (id // 1000) is below _N_ID_CLASSES.
_MAX_ID = 0xFFFF
_N_ID_CLASSES = _MAX_ID // INSTANCE_THRESHOLD + 1
# Role of each instance class: 0 = skipped (class ignored in evaluation), 1 = scored, -1 = impossible.
_CLASS_ROLE = np.full(_N_ID_CLASSES, -1, dtype=np.int8)
for _cls in EVAL_IDS:
    _CLASS_ROLE[_cls] = 0 if id2label[_cls].ignoreInEval else (1 if id2label[_cls].name in INSTANCE_CLASSES else -1)
# What an instance pixel of class c predicted as value v scores, as two bits: _CLASS_HIT when v == c
# (class tp), _CATEGORY_HIT when v is an id of c's instance category (category tp).
_CATEGORY_HIT, _CLASS_HIT, _N_HIT_CODES = 1, 2, 4
_HIT_CODE = np.zeros((_N_ID_CLASSES, 256), dtype=np.uint8)  # (classes, predicted value)
for _cls in EVAL_IDS:
    _HIT_CODE[_cls, _cls] |= _CLASS_HIT
    _members = INSTANCE_CATEGORIES.get(id2label[_cls].category, ())
    _HIT_CODE[_cls, list(_members)] |= _CATEGORY_HIT
_CODES = np.arange(_N_HIT_CODES)

T = TypeVar("T")


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


# ------------------------------------------------------------------------------------------------------
# Per frame (runs in worker threads)
# ------------------------------------------------------------------------------------------------------


def _read_ground_truth(path: Path, what: str) -> np.ndarray:
    """(H, W) integer array of a shipped gtFine PNG; a damaged one is the user's to restore."""
    try:
        array, _mode = decode_png(path)
    except UnreadablePngError as exc:
        raise UserError(
            f"cannot read ground-truth {what} {path} ({exc.detail}); restore it from "
            "gtFine_trainvaltest.zip (or regenerate the synthetic dataset)."
        ) from None
    if array.ndim != 2 or array.dtype.kind not in "ui":
        raise UserError(f"ground-truth {what} {path} is not a single-channel integer image; restore it from gtFine.")
    return array


def check_label_ids(gt: np.ndarray, gt_path: Path) -> None:
    """Refuse ground truth outside labelIds 0..33 (the script would crash or miscount on it)."""
    if gt.size and (gt.max() >= N_IDS or gt.min() < 0):
        bad = np.unique(gt[(gt >= N_IDS) | (gt < 0)])
        raise UserError(
            f"ground truth {gt_path} holds values {bad.tolist()[:10]} that are not Cityscapes labelIds (0..33); "
            "use the shipped *_gtFine_labelIds.png files."
        )


def _joint_counts(gt: np.ndarray, pred: np.ndarray, gt_path: Path) -> np.ndarray:
    """(34, 256) counts of (ground-truth labelId, predicted value) pairs in one pass."""
    check_label_ids(gt, gt_path)
    return pair_histogram(gt if gt.dtype == np.uint8 else gt.astype(np.uint8), pred, N_IDS)


# calcHist counts in float32, exact up to 2**24 per bin; larger images are counted by numpy.
_CALCHIST_MAX_PIXELS = 1 << 24


def pair_histogram(rows: np.ndarray, values: np.ndarray, n_rows: int) -> np.ndarray:
    """(n_rows, 256) int64 counts of (rows[i], values[i]) over two (H, W) arrays.

    `rows`: uint8 or uint16, every value < n_rows (checked by the caller: calcHist drops values outside
    its range silently); `values`: uint8 predictions. One OpenCV calcHist pass, which releases the GIL.
    """
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
    """(K, 4) per ground-truth instance: class id, size, pixels predicted as its class, as its category.

    The instance pixels' ids are renumbered 0..K-1 (ascending, like the script's np.unique), then one
    histogram of (instance, predicted value) holds all three counts; `pred` must hold valid labelIds only
    (checked before).
    """
    instances = to_instance_ids(instances, inst_path)
    inside = instances > INSTANCE_THRESHOLD  # (H, W) instance pixels
    ids = instances[inside]  # (N,) uint16
    if ids.size == 0:
        return np.zeros((0, 4), dtype=np.int64)
    present = np.flatnonzero(np.bincount(ids, minlength=_MAX_ID + 1))  # (K,) ascending instance ids
    number = np.zeros(_MAX_ID + 1, dtype=np.uint8 if present.size <= 256 else np.uint16)  # instance id -> 0..K-1
    number[present] = np.arange(present.size)
    per_instance = pair_histogram(number[ids], pred[inside], present.size)  # (K, 256)
    return _instance_table(present, per_instance, inst_path)


def _instance_table(present: np.ndarray, per_instance: np.ndarray, inst_path: Path) -> np.ndarray:
    """(K, 4) class id, size, tp, category tp of the scored instances among `present` (ascending ids > 1000).

    `per_instance` (len(present), 256): each instance's pixels by predicted value. Instances of ignored
    classes are dropped, of classes without instances refused.
    """
    roles = _CLASS_ROLE[present // INSTANCE_THRESHOLD]
    if (roles < 0).any():
        _raise_bad_instances(present[roles < 0], inst_path)
    present, per_instance = present[roles == 1], per_instance[roles == 1]  # (K,), (K, 256)
    codes = _HIT_CODE[present // INSTANCE_THRESHOLD]  # (K, 256) hit code of each predicted value
    hits = np.stack([(per_instance * (codes == c)).sum(axis=1) for c in _CODES], axis=1)  # (K, 4) pixels per hit code
    return np.stack(
        [
            present // INSTANCE_THRESHOLD,
            hits.sum(axis=1),
            hits[:, (_CODES & _CLASS_HIT) > 0].sum(axis=1),
            hits[:, (_CODES & _CATEGORY_HIT) > 0].sum(axis=1),
        ],
        axis=1,
    ).astype(np.int64)


def to_instance_ids(instances: np.ndarray, inst_path: Path) -> np.ndarray:
    """(H, W) uint16 view or copy of decoded instanceIds (PIL may give int32); out-of-range ids are refused."""
    if instances.dtype == np.uint16:
        return instances
    if instances.size and (instances.min() < 0 or instances.max() > _MAX_ID):
        _raise_bad_instances(instances[(instances < 0) | (instances > _MAX_ID)], inst_path)
    return instances.astype(np.uint16)


def _raise_bad_instances(ids: np.ndarray, inst_path: Path) -> None:
    bad = sorted({int(i) // INSTANCE_THRESHOLD for i in np.unique(ids)})
    raise UserError(
        f"ground-truth instances {inst_path} hold instance ids of label ids {bad[:10]}, which have no "
        "instances in Cityscapes; restore the file from gtFine."
    )


# ------------------------------------------------------------------------------------------------------
# Ground truth as segments (what gt_cache stores)
# ------------------------------------------------------------------------------------------------------
#
# A frame's ground truth, for counting, is a (labelId, instance id) per pixel (instance id 0 where the
# instanceIds value is <= 1000). A frame has few distinct pairs (34 ids + its instances), so the
# cache stores one uint16 segment number per pixel plus a small (S, 2) table of the pairs: counting is
# then ONE histogram of (segment, predicted value), and both the confusion matrix and every instance's
# tallies are sums of its rows. No relation between labelIds and instanceIds is assumed, so frames
# whose two files disagree are counted exactly as from the PNGs.

MAX_SEGMENTS = 1 << 16  # segment numbers are uint16


def encode_segments(
    gt: np.ndarray, instances: np.ndarray, label_path: Path, inst_path: Path
) -> tuple[np.ndarray, np.ndarray]:
    """((H, W) uint16 segment per pixel, (S, 2) int64 table of (labelId, instance id or 0)) of one frame.

    Segments 0..33 are the labelIds of pixels outside instances (rows (id, 0), present or not); the
    (labelId, instance id) pairs found on instance pixels follow, by ascending instance id. Only the
    instance pixels (a fifth of a Cityscapes frame) are keyed, through a compact number per instance, so
    no table over all 34 x 65536 possible pairs is needed. Raises ValueError beyond 65536 segments.
    """
    check_label_ids(gt, label_path)
    instances = to_instance_ids(instances, inst_path)
    inside = instances > INSTANCE_THRESHOLD  # (H, W)
    segments = gt.astype(np.uint16)  # (H, W) outside instances: segment = labelId
    stuff = np.stack([_IDS, np.zeros(N_IDS, dtype=np.int64)], axis=1)  # (34, 2)
    ids = instances[inside]  # (N,) uint16
    if ids.size == 0:
        return segments, stuff
    present_ids = np.flatnonzero(np.bincount(ids, minlength=_MAX_ID + 1))  # (K,) ascending instance ids
    compact = np.zeros(_MAX_ID + 1, dtype=np.int32)
    compact[present_ids] = np.arange(present_ids.size, dtype=np.int32)
    pair_keys = compact[ids]  # (N,) instance number
    pair_keys *= N_IDS
    pair_keys += gt[inside]  # (N,) instance number * 34 + labelId
    present_pairs = np.flatnonzero(np.bincount(pair_keys, minlength=present_ids.size * N_IDS))  # (P,) ascending
    if N_IDS + present_pairs.size > MAX_SEGMENTS:
        raise ValueError(f"{N_IDS + present_pairs.size} distinct (labelId, instance) pairs in {label_path}")
    pair_segment = np.zeros(present_ids.size * N_IDS, dtype=np.uint16)
    pair_segment[present_pairs] = N_IDS + np.arange(present_pairs.size, dtype=np.uint16)
    segments[inside] = pair_segment[pair_keys]
    pairs = np.stack([present_pairs % N_IDS, present_ids[present_pairs // N_IDS]], axis=1)  # (P, 2)
    return segments, np.concatenate([stuff, pairs]).astype(np.int64)


def _segment_counts(segments: np.ndarray, table: np.ndarray, pred: np.ndarray, inst_path: Path) -> FrameCounts:
    """The same FrameCounts as `count_frame` from PNGs, from one histogram of (segment, predicted value)."""
    by_segment = pair_histogram(segments, pred, len(table))  # (S, 256)
    joint = np.zeros((N_IDS, 256), dtype=np.int64)
    np.add.at(joint, table[:, 0], by_segment)  # rows of all segments of a labelId
    is_instance = table[:, 1] > 0
    if not is_instance.any():
        return FrameCounts(joint=joint, instances=np.zeros((0, 4), dtype=np.int64))
    present, which = np.unique(table[is_instance, 1], return_inverse=True)  # (K,) ascending instance ids
    per_instance = np.zeros((len(present), 256), dtype=np.int64)
    np.add.at(per_instance, which, by_segment[is_instance])  # (K, 256) one instance may span labelIds
    return FrameCounts(joint=joint, instances=_instance_table(present, per_instance, inst_path))


# Where a frame's ground truth comes from when cached: (segments (H, W) uint16, table (S, 2)) per pair.
SegmentReader = Callable[[Pair], tuple[np.ndarray, np.ndarray]]


def count_frame_cached(pair: Pair, read_segments: SegmentReader) -> FrameCounts | PredictionProblem:
    """Like count_frame, with the ground truth encoded as segments: read from gt_cache (only the prediction is
    decoded) or decoded and stored by a cache being built in this pass (so it is read first, whatever the
    prediction holds: the entry gets every frame)."""
    try:
        segments, table = read_segments(pair)  # (H, W) uint16, (S, 2)
        return count_prediction(pair, read_prediction(pair.prediction), (segments, table))
    except PredictionProblem as problem:
        return problem


def count_prediction(
    pair: Pair, pred: np.ndarray, segments: tuple[np.ndarray, np.ndarray] | None = None
) -> FrameCounts:
    """Counts of one frame from its decoded (or in-memory) (H, W) uint8 prediction; the ground truth from
    `segments` (gt_cache's (segments, table)) or decoded from the pair's PNGs. PredictionProblem if unusable."""
    if segments is None:
        gt, instances = read_ground_truth_pair(pair)  # (H, W) each
        _check_size(pair, pred, gt.shape)
        counts = FrameCounts(joint=_joint_counts(gt, pred, pair.label_ids), instances=np.zeros((0, 4), np.int64))
        check_values(pair.prediction, counts.joint.sum(axis=0))  # before the instance counts, which need valid ids
        return FrameCounts(joint=counts.joint, instances=_instance_counts(instances, pred, pair.instance_ids))
    _check_size(pair, pred, segments[0].shape)
    counts = _segment_counts(segments[0], segments[1], pred, pair.instance_ids)
    check_values(pair.prediction, counts.joint.sum(axis=0))
    return counts


def _check_size(pair: Pair, pred: np.ndarray, shape: tuple[int, ...]) -> None:
    if pred.shape != shape:
        raise PredictionProblem(
            "wrong size", pair.prediction, f"{pred.shape[1]}x{pred.shape[0]}, expected {shape[1]}x{shape[0]}"
        )


def read_ground_truth_pair(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    """(labelIds, instanceIds) decoded from the pair's gtFine PNGs, each (H, W), one size."""
    gt = _read_ground_truth(pair.label_ids, "labelIds")  # (H, W)
    instances = _read_ground_truth(pair.instance_ids, "instanceIds")  # (H, W)
    if instances.shape != gt.shape:
        raise UserError(
            f"ground truth {pair.label_ids} and {pair.instance_ids} differ in size; restore both from gtFine."
        )
    return gt, instances


def read_frame(pair: Pair) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prediction, labelIds, instanceIds), each (H, W), all one size; PredictionProblem for a bad prediction.

    Ground-truth problems raise UserError: they are the dataset's, not the predictions'.
    """
    pred = read_prediction(pair.prediction)  # (H, W) uint8, read like the official script does
    gt, instances = read_ground_truth_pair(pair)  # (H, W) each
    _check_size(pair, pred, gt.shape)
    return pred, gt, instances


def count_frame(pair: Pair) -> FrameCounts | PredictionProblem:
    """Decode one frame's three PNGs and count; a bad prediction comes back as a problem, not an exception."""
    try:
        return count_prediction(pair, read_prediction(pair.prediction))
    except PredictionProblem as problem:
        return problem


def map_frames(function: Callable[[Any], T], pairs: Sequence[Any], workers: int) -> list[T]:
    """`function` over every pair in parallel threads, results in order (also used to time decoding alone).

    Threads, not processes: libpng, PIL's PNG decoder and calcHist release the GIL, so two threads
    count at ~1.9x one; a fork pool measured 10-15% slower than threads on 2 cores, as it pays to
    start and to feed its workers.
    """
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(function, pairs))


def count_frames(
    pairs: Sequence[Pair], workers: int, read_segments: SegmentReader | None = None
) -> list[FrameCounts | PredictionProblem]:
    """Count every frame (see map_frames for the parallelism), ground truth from PNGs or cached segments; order kept."""
    if read_segments is None:
        return map_frames(count_frame, pairs, workers)
    return map_frames(partial(count_frame_cached, read_segments=read_segments), pairs, workers)
