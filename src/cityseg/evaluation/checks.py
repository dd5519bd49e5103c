"""Checks on prediction PNGs before any scoring, every problem in one UserError (not the script's `sys.exit`): single
channel labelIds (0..33), the image's size, named `<city>_<seq>_<frame>*.png`, searched recursively as officially."""

import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cityseg.data.labelpng import UnreadablePngError, png_header, read_png
from cityseg.errors import UserError, format_paths
from cityseg.labels import NUM_CLASSES, VALID_LABEL_IDS

# PIL modes whose pixels are one integer each; "1" (bilevel) and "F" (float) cannot hold labelIds.
LABEL_MODES = frozenset({"L", "P", "I", "I;16", "I;16L", "I;16B"})

# Problem kinds in the order an error message lists them (most fundamental first).
PROBLEM_KINDS = {
    "missing": "frame(s) without a prediction",
    "extra": "PNG(s) matching no frame of the split",
    "badly named": "PNG(s) not named <city>_<seq:6 digits>_<frame:6 digits>*.png",
    "duplicate": "frame(s) with more than one prediction",
    "count": "wrong number of predictions",
    "unreadable": "unreadable PNG(s)",
    "multi-channel": "PNG(s) that are not single-channel labelIds images",
    "wrong size": "PNG(s) of the wrong size",
    "invalid ids": "PNG(s) holding values that are not Cityscapes labelIds (0..33)",
}

FIX = (
    "Write exactly one single-channel PNG of official labelIds (0..33, not trainIds; see "
    "cityseg.labels.train_ids_to_ids) per frame, the size of its image, named <city>_<seq>_<frame>*.png; "
    "`cityseg predict` writes exactly that."
)

_INVALID_ID = np.ones(256, dtype=bool)
_INVALID_ID[sorted(VALID_LABEL_IDS)] = False

# A frame id, as `cityscapesscripts` parses file names: city (no underscore), 6-digit sequence and frame.
_FRAME_ID = re.compile(r"^(?P<id>[^_]+_\d{6}_\d{6})(?!\d)")


class EvaluationWarning(UserWarning):
    """Something the user should know about an evaluation that still ran (the CLI prints it)."""


class TrainIdsWarning(EvaluationWarning):
    """Predictions hold only values 0..18: probably trainIds where labelIds were expected."""


class PredictionProblem(Exception):
    """One prediction file is unusable; `kind` (a PROBLEM_KINDS key) groups it in the final error."""

    def __init__(self, kind: str, path: Path, detail: str) -> None:
        super().__init__(f"{path} ({detail})")
        self.kind = kind


@dataclass
class Problems:
    """Everything wrong with a set of predictions, grouped by kind, for one combined error."""

    items: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, text: str) -> None:
        self.items.setdefault(kind, []).append(text)

    def raise_if_any(self, context: str) -> None:
        """Raise one UserError naming every kind of problem, its count and the first few files."""
        if not self.items:
            return
        parts = [
            f"{PROBLEM_KINDS[kind]}: {'; '.join(self.items[kind])}"
            if kind == "count"  # a statement about the whole set, not a list of files
            else f"{len(self.items[kind])} {PROBLEM_KINDS[kind]}: {format_paths(self.items[kind], 5)}"
            for kind in PROBLEM_KINDS
            if kind in self.items
        ]
        raise UserError(f"{context}: " + "; ".join(parts) + ". " + FIX)


def find_pngs(pred_dir: Path) -> list[Path]:
    """Every *.png under `pred_dir`, recursively (as the official matcher walks), sorted."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        what = "is a file" if pred_dir.exists() else "does not exist"
        raise UserError(
            f"prediction folder {pred_dir} {what}; pass the folder `cityseg predict` wrote its labelIds PNGs into."
        )
    return sorted(
        Path(folder, name) for folder, _, names in os.walk(pred_dir) for name in names if name.endswith(".png")
    )


def match_to_frames(pngs: Iterable[Path], frame_ids: Iterable[str]) -> tuple[dict[str, list[Path]], list[Path]]:
    """Map each frame id to the PNGs named `<id>*.png` (the official rule), and the PNGs matching none."""
    ids = set(frame_ids)
    lengths = sorted({len(i) for i in ids})
    matches: dict[str, list[Path]] = {i: [] for i in sorted(ids)}
    extra: list[Path] = []
    for path in pngs:
        hits = [path.name[:n] for n in lengths if path.name[:n] in ids]
        for hit in hits:
            matches[hit].append(path)
        if not hits:
            extra.append(path)
    return matches, extra


def group_by_name(pngs: Iterable[Path]) -> tuple[dict[str, list[Path]], list[Path]]:
    """Group PNGs by the frame id their name starts with, when no list of frames is known; also return misnamed ones."""
    groups: dict[str, list[Path]] = {}
    misnamed: list[Path] = []
    for path in pngs:
        match = _FRAME_ID.match(path.name)
        if match:
            groups.setdefault(match["id"], []).append(path)
        else:
            misnamed.append(path)
    return dict(sorted(groups.items())), misnamed


def single_matches(matches: Mapping[str, list[Path]], problems: Problems) -> dict[str, Path]:
    """Frame id -> its one prediction; frames with none or several are recorded as problems."""
    chosen: dict[str, Path] = {}
    for frame_id, paths in matches.items():
        if not paths:
            problems.add("missing", frame_id)
        elif len(paths) > 1:
            problems.add("duplicate", f"{frame_id} ({format_paths(paths, 3)})")
        else:
            chosen[frame_id] = paths[0]
    return chosen


def read_prediction(path: Path) -> np.ndarray:
    """(H, W) uint8 labelIds of a prediction PNG, the values the official script reads (np.array of PIL)."""
    try:
        array, mode = read_png(path)
    except UnreadablePngError as exc:
        raise PredictionProblem("unreadable", path, exc.detail) from None
    if mode not in LABEL_MODES or array.ndim != 2 or array.dtype.kind not in "ui":
        raise PredictionProblem("multi-channel", path, f"PIL mode {mode}, array shape {array.shape}")
    if array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise PredictionProblem("invalid ids", path, f"values {invalid_values(np.unique(array))}")
        array = array.astype(np.uint8)
    return array


def invalid_values(values: Iterable[int]) -> list[int]:
    """The values among `values` that are not labelIds, for an error message (at most 10)."""
    bad = [int(v) for v in values if not 0 <= v < 256 or _INVALID_ID[int(v)]]
    return bad[:10]


def check_values(path: Path, counts: np.ndarray) -> None:
    """Raise if a prediction holds any value that is not a labelId (the script would crash or miscount)."""
    if counts[_INVALID_ID].any():
        raise PredictionProblem("invalid ids", path, f"values {invalid_values(np.flatnonzero(counts))}")


def _value_counts(path: Path) -> np.ndarray:
    """(256,) value counts of one prediction, checked."""
    counts = np.bincount(read_prediction(path).ravel(), minlength=256)
    check_values(path, counts)
    return counts


def check_headers(predictions: Mapping[str, Path], sizes: Callable[[str], tuple[int, int]], problems: Problems) -> None:
    """Format and size of every prediction from its header alone; `sizes(id)` gives (W, H)."""
    for frame_id, path in predictions.items():
        try:
            mode, actual = png_header(path)
        except UnreadablePngError as exc:
            problems.add("unreadable", f"{path} ({exc.detail})")
            continue
        size = sizes(frame_id)
        if mode not in LABEL_MODES:
            problems.add("multi-channel", f"{path} (PIL mode {mode})")
        elif tuple(actual) != tuple(size):
            problems.add("wrong size", f"{path} ({actual[0]}x{actual[1]}, expected {size[0]}x{size[1]})")


def map_checked(function: Callable[[Any], Any], items: Iterable[Any], workers: int, problems: Problems) -> list[Any]:
    """`function` over `items` in threads (libpng, PIL, OpenCV release the GIL); PredictionProblems go to `problems`."""

    def attempt(item: Any) -> Any:
        try:
            return function(item)
        except PredictionProblem as problem:  # kept, so that one bad file hides no other
            return problem

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        outcomes = list(pool.map(attempt, items))
    for problem in (o for o in outcomes if isinstance(o, PredictionProblem)):
        problems.add(problem.kind, str(problem))
    return [o for o in outcomes if not isinstance(o, PredictionProblem)]


def scan_values(paths: Sequence[Path], workers: int, problems: Problems) -> np.ndarray:
    """Decode every prediction in parallel; return summed (256,) value counts."""
    return sum(map_checked(_value_counts, paths, workers, problems), np.zeros(256, dtype=np.int64))


def warn_if_train_ids(counts: np.ndarray, where: Path) -> str | None:
    """Warn (not fail) when predictions hold only 0..18: trainIds written for labelIds."""
    present = np.flatnonzero(counts)
    if present.size == 0 or present.max() >= NUM_CLASSES:
        return None
    message = (
        f"the predictions in {where} hold only values {present.min()}..{present.max()}, which look like trainIds "
        "(0..18) rather than official labelIds (0..33); if so, convert them with "
        "cityseg.labels.train_ids_to_ids before evaluating or submitting, or the scores are meaningless."
    )
    warnings.warn(message, TrainIdsWarning, stacklevel=3)
    return message
