"""Per-frame scores and qualitative examples read back from prediction PNGs and the ground truth.

Predictions are the official labelIds PNGs that `cityseg predict` writes, so what the report
and the notebook show is exactly what the official evaluation scored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cityseg.errors import UserError, format_paths
from cityseg.report.plots import Example
from cityseg.training.metrics import confusion_matrix, mean_iou, pixel_accuracy


@dataclass(frozen=True)
class FrameScore:
    """How well one frame was segmented; mIoU over the classes present in its ground truth or prediction."""

    id: str
    miou: float
    accuracy: float


def frame_id(path: Path) -> str:
    """`<city>_<seq>_<frame>` from any Cityscapes file name (the evaluation's own matching rule)."""
    return "_".join(path.name.split("_")[:3])


def prediction_paths(pred_dir: Path) -> dict[str, Path]:
    """Frame id -> prediction PNG under `pred_dir` (searched recursively, as the official script does)."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise UserError(
            f"prediction folder {pred_dir} does not exist; write it with `cityseg predict CHECKPOINT ROOT "
            f"--split val --out {pred_dir}`."
        )
    found: dict[str, Path] = {}
    for path in sorted(pred_dir.rglob("*.png")):
        found.setdefault(frame_id(path), path)
    return found


def _matched_frames(pred_dir: Path, root: Path, split: str):
    """Frames of `split` that have a prediction, with the prediction path; none at all is a user error."""
    from cityseg.data.frames import list_frames

    predictions = prediction_paths(pred_dir)
    frames = [f for f in list_frames(Path(root), split, label_source="ids") if f.id in predictions]
    if not frames:
        raise UserError(
            f"none of the PNGs in {pred_dir} ({format_paths(list(predictions.values())[:3]) or 'no PNGs'}) matches "
            f"a {split} frame of {root}; predict that split with `cityseg predict` into {pred_dir}."
        )
    return [(frame, predictions[frame.id]) for frame in frames]


def _truth_and_prediction(frame, pred_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) trainIds of the ground truth (from the shipped labelIds, like the evaluation) and the prediction."""
    from cityseg.data.frames import read_train_ids

    truth = read_train_ids(frame.label_ids or frame.label, label_source="ids")
    prediction = read_train_ids(pred_path, label_source="ids")
    if truth.shape != prediction.shape:
        raise UserError(
            f"prediction {pred_path} is {prediction.shape[1]}x{prediction.shape[0]} but its ground truth is "
            f"{truth.shape[1]}x{truth.shape[0]}; predictions must be written at the original size by `cityseg predict`."
        )
    return truth, prediction


def score_frames(pred_dir: Path, root: Path, split: str = "val") -> list[FrameScore]:
    """Score every predicted frame, worst first, to find the frames worth looking at."""
    scores = []
    for frame, pred_path in _matched_frames(pred_dir, root, split):
        truth, prediction = _truth_and_prediction(frame, pred_path)
        conf = confusion_matrix(torch.from_numpy(prediction), torch.from_numpy(truth))
        scores.append(FrameScore(frame.id, mean_iou(conf), pixel_accuracy(conf)))
    return sorted(scores, key=lambda s: (s.miou if math.isfinite(s.miou) else -1.0, s.id))


def load_examples(
    frame_ids: Sequence[str], pred_dir: Path, root: Path, split: str = "val", scores: Sequence[FrameScore] = ()
) -> list[Example]:
    """Image, ground truth and prediction of the given frames, titled with their id (and score when known)."""
    from cityseg.data.frames import read_image

    by_id = {frame.id: (frame, path) for frame, path in _matched_frames(pred_dir, root, split)}
    score_of = {s.id: s for s in scores}
    missing = [i for i in frame_ids if i not in by_id]
    if missing:
        raise UserError(f"no prediction in {pred_dir} for {format_paths(missing)}; predict the {split} split first.")
    examples = []
    for fid in frame_ids:
        frame, pred_path = by_id[fid]
        truth, prediction = _truth_and_prediction(frame, pred_path)
        title = fid if fid not in score_of else f"{fid}\nmIoU {100 * score_of[fid].miou:.1f}%"
        examples.append(Example(title, read_image(frame.image), truth, prediction))
    return examples


def spread(ids: Sequence[str], count: int) -> list[str]:
    """`count` ids evenly spaced through a sorted list: a few frames that cover several cities without scoring all."""
    ids = sorted(ids)
    if len(ids) <= count:
        return list(ids)
    return [ids[round(i * (len(ids) - 1) / (count - 1))] for i in range(count)] if count > 1 else [ids[0]]


def best_and_worst(scores: Sequence[FrameScore], count: int = 2) -> list[FrameScore]:
    """The `count` best and `count` worst frames (scores sorted worst first), best first, no duplicates."""
    finite = [s for s in scores if math.isfinite(s.miou)]
    best = list(reversed(finite[-count:]))
    worst = [s for s in finite[:count] if s not in best]
    return best + worst
