"""Per-frame scores and qualitative examples of a split's predictions, for the report and the notebook. Scores come
from the evaluation JSON's per-frame section when it describes the very files now in the folder (same sha256),
else the fast engine scores it again; predictions match frames by the official rule.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cityseg.errors import UserError, format_paths
from cityseg.evaluation.checks import Problems, find_pngs, match_to_frames, single_matches
from cityseg.fileio import file_sha256
from cityseg.report.plots import Example
from cityseg.report.tables import percent


@dataclass(frozen=True)
class FrameScore:
    """How well one frame was segmented; mIoU over the classes present in its ground truth or prediction."""

    id: str
    miou: float
    accuracy: float


def _matched_frames(pred_dir: Path, root: Path, split: str) -> list[tuple[Any, Path]]:
    """(frame, its one prediction) for the frames of `split` that have one; none at all is a user error."""
    from cityseg.data.frames import list_frames

    frames = list_frames(Path(root), split, label_source="ids")
    matches, _extra = match_to_frames(find_pngs(pred_dir), [f.id for f in frames])
    problems = Problems()
    chosen = single_matches({i: paths for i, paths in matches.items() if paths}, problems)
    problems.raise_if_any(f"the predictions in {pred_dir} cannot be shown")
    if not chosen:
        raise UserError(
            f"none of the PNGs in {pred_dir} matches a {split} frame of {root}; predict that split with "
            f"`cityseg predict CHECKPOINT {root} --split {split} --out {pred_dir}`."
        )
    return [(frame, chosen[frame.id]) for frame in frames if frame.id in chosen]


def prediction_paths(pred_dir: Path, root: Path, split: str = "val") -> dict[str, Path]:
    """Frame id -> its prediction PNG under `pred_dir` (searched recursively, matched by the official rule)."""
    return {frame.id: path for frame, path in _matched_frames(Path(pred_dir), root, split)}


def _recorded_scores(pred_dir: Path, root: Path, split: str, evaluation: Mapping | Path | None) -> list | None:
    """The evaluation's per-frame rows when they describe exactly the PNGs now in `pred_dir`, else None."""
    if not isinstance(evaluation, Mapping):
        from cityseg.evaluation import default_json_path

        try:
            evaluation = json.loads(Path(evaluation or default_json_path(pred_dir, split)).read_text())
        except (OSError, ValueError, RecursionError):
            return None
    try:
        section = evaluation["cityseg"]
        rows = section["frames"]
        if section["split"] != split or Path(section["root"]) != Path(root).resolve() or not rows:
            return None
        matches, extra = match_to_frames(find_pngs(pred_dir), [row["id"] for row in rows])
        current = {i: file_sha256(paths[0]) if len(paths) == 1 else None for i, paths in matches.items()}
        if extra or any(current[row["id"]] != row["sha256"] for row in rows):
            return None
        return [FrameScore(row["id"], float(row["miou"]), float(row["pixel_accuracy"])) for row in rows]
    except (KeyError, TypeError, ValueError, OSError):  # an older or foreign JSON: score again
        return None


def score_frames(
    pred_dir: Path, root: Path, split: str = "val", evaluation: Mapping | Path | None = None
) -> list[FrameScore]:
    """Every frame's own score, worst first: from `evaluation` (result dict or JSON path; None: PRED_DIR-eval/
    SPLIT.json) when it scored these very files, else from the fast engine run again."""
    from cityseg.evaluation import evaluate

    scores = _recorded_scores(Path(pred_dir), root, split, evaluation) or [
        FrameScore(row["id"], row["miou"], row["pixel_accuracy"])
        for row in evaluate(pred_dir, root, split, engine="fast")["cityseg"]["frames"]
    ]
    return sorted(scores, key=lambda s: (s.miou if math.isfinite(s.miou) else -1.0, s.id))


def load_examples(
    frame_ids: Sequence[str], pred_dir: Path, root: Path, split: str = "val", scores: Sequence[FrameScore] = ()
) -> list[Example]:
    """Image, ground truth and prediction (trainIds) of the given frames, titled with their id (and score)."""
    from cityseg.data.frames import check_same_size, read_image, read_train_ids

    by_id = {frame.id: (frame, path) for frame, path in _matched_frames(Path(pred_dir), root, split)}
    score_of = {s.id: s for s in scores}
    missing = [i for i in frame_ids if i not in by_id]
    if missing:
        raise UserError(f"no prediction in {pred_dir} for {format_paths(missing)}; predict the {split} split first.")
    examples = []
    for fid in frame_ids:
        frame, pred_path = by_id[fid]
        image, truth = read_image(frame.image), read_train_ids(frame.label_ids, label_source="ids")
        prediction = read_train_ids(pred_path, label_source="ids")
        check_same_size(image, prediction, frame.image, pred_path)  # the evaluation refuses other sizes too
        title = fid if fid not in score_of else f"{fid}\nmIoU {percent(score_of[fid].miou)} %"
        examples.append(Example(title, image, truth, prediction))
    return examples


def best_and_worst(scores: Sequence[FrameScore], count: int = 2) -> list[FrameScore]:
    """The `count` best and `count` worst frames (scores sorted worst first), best first, no duplicates."""
    finite = [s for s in scores if math.isfinite(s.miou)]
    best = list(reversed(finite[-count:]))
    worst = [s for s in finite[:count] if s not in best]
    return best + worst
