"""The engines together: `evaluate` checks predictions before the official script, scores them with either engine or
both (which must agree) and writes the result; `PredictionScorer` scores label maps while `predict --score` writes."""

import json
import math
import re
import time
import warnings
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from cityseg import __version__
from cityseg.data.frames import Frame, list_frames
from cityseg.data.labelpng import UnreadablePngError, png_header
from cityseg.errors import UserError, format_paths
from cityseg.evaluation.checks import (
    EvaluationWarning,
    PredictionProblem,
    Problems,
    check_headers,
    find_pngs,
    match_to_frames,
    scan_values,
    single_matches,
    warn_if_train_ids,
)
from cityseg.evaluation.fast import FrameCounts, Pair, accumulate, count_prediction, export_dict, run_fast
from cityseg.evaluation.official import average_class_sizes, run_official
from cityseg.evaluation.output import UNITS, check_output_paths, plain, summary, write_outputs
from cityseg.fileio import file_sha256
from cityseg.system import default_workers, package_versions

ENGINES = ("both", "official", "fast")
TOLERANCE = 1e-9  # largest |official - fast| accepted for any score
PREDICT_MANIFEST = ".cityseg-predict.json"  # written by `cityseg predict` (prediction/ledger.py)
_SCORE_DICTS = ("priors", "classScores", "classInstScores", "categoryScores", "categoryInstScores")
_SCORE_VALUES = tuple(f"averageScore{kind}" for kind in ("Classes", "InstClasses", "Categories", "InstCategories"))
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class EngineMismatchError(RuntimeError):
    """The fast engine disagrees with the official script: a bug in cityseg, never the user's input."""


def ground_truth_frames(root: Path, split: str) -> list[Frame]:
    """The split's frames with their shipped labelIds and instanceIds, which the official metrics need."""
    frames = list_frames(root, split, label_source="ids")
    without = [f.id for f in frames if f.instance_ids is None]
    if without:
        raise UserError(
            f"{len(without)} frame(s) of split '{split}' in {root} have no *_gtFine_instanceIds.png, which the "
            f"official iIoU needs: {format_paths(without)}. Unzip gtFine_trainvaltest.zip again into {root}."
        )
    return frames


def _label_size(path: Path) -> tuple[int, int]:
    try:
        return png_header(path)[1]
    except UnreadablePngError as exc:
        raise UserError(f"cannot read ground truth {path} ({exc.detail}); restore it from gtFine.") from None


def prediction_pairs(pred_dir: Path, frames: Sequence[Frame]) -> list[Pair]:
    """Match one prediction to every frame (the official rule) and check names, counts, formats and sizes."""
    problems = Problems()
    matches, extra = match_to_frames(find_pngs(pred_dir), [f.id for f in frames])
    for path in extra:
        problems.add("extra", str(path))
    chosen = single_matches(matches, problems)
    by_id = {f.id: f for f in frames}
    check_headers(chosen, lambda frame_id: _label_size(by_id[frame_id].label_ids), problems)
    split = frames[0].split if frames else "?"
    problems.raise_if_any(f"the predictions in {pred_dir} cannot be evaluated against the {len(frames)} {split} frames")
    return [Pair(f.id, chosen[f.id], f.label_ids, f.instance_ids) for f in frames]


def compare_exports(
    official: Mapping[str, Any], fast: Mapping[str, Any], tol: float = TOLERANCE
) -> tuple[list[str], float]:
    """Differences between two export dicts (exact counts; scores within `tol`, NaN in the same places)."""
    diffs: list[str] = []
    worst = 0.0
    if not np.array_equal(np.asarray(official["confMatrix"]), np.asarray(fast["confMatrix"])):
        diffs.append("confMatrix counts differ")
    if dict(official["labels"]) != dict(fast["labels"]):
        diffs.append("labels differ")
    diffs += [f"{key} has different names" for key in _SCORE_DICTS if set(official[key]) != set(fast[key])]
    pairs = [
        (f"{key}[{name}]", official[key][name], fast[key].get(name)) for key in _SCORE_DICTS for name in official[key]
    ]
    pairs += [(key, official[key], fast[key]) for key in _SCORE_VALUES]
    for where, a, b in pairs:
        if b is None:
            continue
        a, b = float(a), float(b)
        if math.isnan(a) != math.isnan(b):
            diffs.append(f"{where}: official {a}, fast {b} (NaN in one only)")
        elif not math.isnan(a):
            worst = max(worst, abs(a - b))
            diffs += [f"{where}: official {a!r}, fast {b!r}"] if abs(a - b) >= tol else []
    return diffs, worst


def _plain_setting(value: Any) -> bool:
    """A JSON scalar, or a short list of them (e.g. a size): what a manifest's settings may hold."""
    items = value if isinstance(value, list) and len(value) <= 8 else [value]
    return all(v is None or isinstance(v, (bool, int, float)) or (isinstance(v, str) and len(v) <= 4096) for v in items)


def prediction_provenance(pred_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(checkpoint sha256 and settings from PRED_DIR's manifest or None, a note if unreadable)."""
    path = Path(pred_dir) / PREDICT_MANIFEST
    if not path.is_file():
        return None, None
    try:
        settings = json.loads(path.read_text())["settings"]
        sha256 = settings["checkpoint_sha256"]
        if not isinstance(sha256, str) or not _SHA256.match(sha256):
            raise TypeError("checkpoint_sha256 is not a sha256")
        kept = {key: value for key, value in settings.items() if _plain_setting(value)}
    except (OSError, ValueError, RecursionError, KeyError, TypeError, AttributeError) as exc:
        return None, (
            f"{path} is not a readable `cityseg predict` manifest ({exc.__class__.__name__}), so the evaluation "
            "does not record how the predictions were made; predict into a fresh folder to get it back."
        )
    return {"manifest": str(path.resolve()), "checkpoint_sha256": sha256, "settings": kept}, None


def evaluate(
    pred_dir: Path,
    root: Path,
    split: str = "val",
    engine: str = "both",
    json_out: Path | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """The official export dict of labelIds predictions plus a "cityseg" section, written to `json_out`. Bad input
    raises UserError (never SystemExit); engines that disagree raise EngineMismatchError."""
    if engine not in ENGINES:
        raise UserError(f"unknown evaluation engine {engine!r}; use one of {', '.join(ENGINES)}.")
    pred_dir, root = Path(pred_dir), Path(root)
    workers = workers or default_workers()
    if json_out is not None:
        check_output_paths(Path(json_out))  # fail before minutes of work, not after
    timings: dict[str, float] = {}
    started = time.perf_counter()
    pairs = prediction_pairs(pred_dir, ground_truth_frames(root, split))
    provenance, note = prediction_provenance(pred_dir)
    if note:
        warnings.warn(note, EvaluationWarning, stacklevel=2)
    exports: dict[str, dict[str, Any]] = {}
    frames = None
    if engine == "official":  # every prediction decoded and its ids checked, without the ground truth
        problems = Problems()
        counts = scan_values([p.prediction for p in pairs], workers, problems)
        problems.raise_if_any(f"the predictions in {pred_dir} cannot be evaluated")
        timings["validate_s"] = time.perf_counter() - started
    else:
        timings["validate_s"] = time.perf_counter() - started
        started = time.perf_counter()
        context = f"the predictions in {pred_dir} cannot be evaluated"
        export, frame_scores = run_fast(pairs, workers, average_class_sizes(), context)
        exports["fast"] = plain(export)
        timings["fast_s"] = time.perf_counter() - started
        counts = np.asarray(export["confMatrix"], dtype=np.int64).sum(axis=0)  # (34,) of each predicted labelId
        frames = []
        for pair, (miou, accuracy) in zip(pairs, frame_scores, strict=True):
            row = {"id": pair.frame_id, "prediction": pair.prediction.relative_to(pred_dir).as_posix()}
            frames.append(row | {"sha256": file_sha256(pair.prediction), "miou": miou, "pixel_accuracy": accuracy})
    notes = [text for text in (note, warn_if_train_ids(counts, pred_dir)) if text]
    if engine != "fast":  # every input check has passed: the script's sys.exit paths are out of reach
        started = time.perf_counter()
        official, _printed = run_official([p.prediction for p in pairs], [p.label_ids for p in pairs])
        timings["official_s"] = time.perf_counter() - started
        exports["official"] = plain(official)

    section: dict[str, Any] = {
        "engine": engine,
        "units": UNITS,
        "n_frames": len(pairs),
        "pred_dir": str(pred_dir.resolve()),
        "root": str(root.resolve()),
        "split": split,
        "workers": workers,
        "synthetic": (root / "SYNTHETIC.json").is_file(),
        "predictions": provenance,
        "timings": timings,
        "warnings": notes,
        "versions": {"cityseg": __version__} | package_versions(("cityscapesscripts", "numpy", "pillow")),
    }
    if engine == "both":
        diffs, section["max_abs_diff"] = compare_exports(exports["official"], exports["fast"])
        if diffs:
            raise EngineMismatchError(
                f"the fast engine disagrees with the official script on {len(diffs)} value(s) (tolerance "
                f"{TOLERANCE}): {'; '.join(diffs[:10])}. This is a bug in cityseg.evaluation.fast; use --engine official."
            )
        section["speedup"] = timings["official_s"] / max(timings["fast_s"], 1e-9)
    export = exports.get("official") or exports["fast"]
    section |= {"scores": summary(export), "frames": frames} | ({"fast": exports["fast"]} if "fast" in exports else {})
    result = {**export, "cityseg": section}
    if json_out is not None:
        write_outputs(result, Path(json_out))
    return result


class PredictionScorer:
    """Counts frames as they are predicted (in worker threads, so the model never waits), then the export dict."""

    def __init__(self, root: Path, split: str, frame_ids: list[str], workers: int = 2) -> None:
        if split == "test":
            raise UserError(
                "the test split's ground truth is withheld, so test predictions cannot be scored; drop "
                "--score, or score --split val."
            )
        frames = {f.id: f for f in ground_truth_frames(Path(root), split)}
        missing = [i for i in frame_ids if i not in frames]
        if missing:
            raise UserError(
                f"{len(missing)} frame(s) of split '{split}' have no labelIds/instanceIds ground truth in "
                f"{root} ({format_paths(missing)}), so they cannot be scored; drop --score."
            )
        self.pairs = {i: Pair(i, Path(i), frames[i].label_ids, frames[i].instance_ids) for i in frame_ids}
        self.workers = max(1, workers)
        self.pool = ThreadPoolExecutor(max_workers=self.workers)
        self.counts: dict[str, Future] = {}
        self.in_flight: deque[Future] = deque()
        self.started = time.perf_counter()

    def add(self, frame_id: str, label_ids: np.ndarray | None, path: Path) -> None:
        """Count one frame's labelIds (None: read back from `path`); waits when too many are queued."""
        while len(self.in_flight) >= 2 * self.workers:  # bound the label maps held in memory
            self.in_flight.popleft().result()
        future = self.pool.submit(self._count, replace(self.pairs[frame_id], prediction=Path(path)), label_ids)
        self.counts[frame_id] = future
        self.in_flight.append(future)

    def _count(self, pair: Pair, label_ids: np.ndarray | None) -> FrameCounts:
        try:
            return count_prediction(pair, label_ids)
        except PredictionProblem as problem:
            raise UserError(f"cannot score prediction {problem}; rerun `cityseg predict` with --overwrite.") from None

    def result(self) -> dict[str, Any]:
        """The official export dict (same keys and numbers as `evaluate`) plus a small "cityseg" section."""
        try:
            frames = [self.counts[i].result() for i in self.pairs]
        finally:
            self.pool.shutdown(wait=True)
        export = plain(export_dict(accumulate(frames, average_class_sizes())))
        export["cityseg"] = {
            "engine": "fast (in memory, cityseg predict --score)",
            "units": UNITS,
            "n_frames": len(frames),
            "timings": {"predict_and_score_s": time.perf_counter() - self.started},
        }
        return export

    def close(self) -> None:
        """Stop the workers after an error (results are dropped)."""
        self.pool.shutdown(wait=True, cancel_futures=True)
