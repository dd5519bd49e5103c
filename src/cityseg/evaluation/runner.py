"""`evaluate`: check predictions against a split, score them with the official script and/or the fast
engine, make sure both agree, and return (and optionally write) the official-format result.

Order matters: every check that can fail on user input runs before the official script, so its
`sys.exit` is never reached in practice; in "both" mode the fast engine runs first because it
decodes every prediction anyway and so doubles as the full content check.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from cityseg import __version__
from cityseg.data.frames import Frame, list_frames
from cityseg.data.pngdecode import UnreadablePngError, image_size
from cityseg.errors import UserError, format_paths
from cityseg.evaluation.checks import (
    Problems,
    check_headers,
    find_pngs,
    match_to_frames,
    scan_values,
    single_matches,
    warn_if_train_ids,
)
from cityseg.evaluation.fast import N_IDS, Pair
from cityseg.evaluation.gt_cache import UncachableGroundTruth, gt_cache_or_none, warn_uncachable
from cityseg.evaluation.official import average_class_sizes, run_official
from cityseg.evaluation.output import check_output_paths, plain, summary, write_outputs
from cityseg.evaluation.scores import run_fast
from cityseg.system import default_workers

ENGINES = ("both", "official", "fast")
TOLERANCE = 1e-9  # largest |official - fast| accepted for any score
_SCORE_DICTS = ("priors", "classScores", "classInstScores", "categoryScores", "categoryInstScores")
_SCORE_VALUES = (
    "averageScoreClasses",
    "averageScoreInstClasses",
    "averageScoreCategories",
    "averageScoreInstCategories",
)


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


def _image_size(path: Path) -> tuple[int, int]:
    try:
        return image_size(path)
    except UnreadablePngError as exc:
        raise UserError(
            f"cannot read the size of ground truth {path} ({exc.detail}); restore it from gtFine."
        ) from None


def prediction_pairs(pred_dir: Path, frames: Sequence[Frame]) -> list[Pair]:
    """Match one prediction to every frame and check names, counts, formats and sizes (headers only)."""
    problems = Problems()
    matches, extra = match_to_frames(find_pngs(pred_dir), [f.id for f in frames])
    for path in extra:
        problems.add("extra", str(path))
    chosen = single_matches(matches, problems)
    by_id = {f.id: f for f in frames}
    check_headers(chosen, lambda frame_id: _image_size(by_id[frame_id].label_ids), problems)
    split = frames[0].split if frames else "?"
    problems.raise_if_any(f"the predictions in {pred_dir} cannot be evaluated against the {len(frames)} {split} frames")
    return [Pair(f.id, chosen[f.id], f.label_ids, f.instance_ids) for f in frames]


def _scan_predictions(pairs: Sequence[Pair], workers: int, pred_dir: Path) -> np.ndarray:
    """Decode every prediction and check its ids; (256,) value counts over the whole set."""
    problems = Problems()
    counts = scan_values([p.prediction for p in pairs], workers, problems)
    problems.raise_if_any(f"the predictions in {pred_dir} cannot be evaluated")
    return counts


def check_predictions(pred_dir: Path, root: Path, split: str = "val", workers: int | None = None) -> dict[str, Path]:
    """Fully check a prediction folder against a split (names, sizes, channels, every pixel's id); frame id -> PNG.

    Raises one UserError listing every problem; warns (TrainIdsWarning) when values look like trainIds.
    """
    pairs = prediction_pairs(Path(pred_dir), ground_truth_frames(Path(root), split))
    warn_if_train_ids(_scan_predictions(pairs, workers or default_workers(), Path(pred_dir)), Path(pred_dir))
    return {p.frame_id: p.prediction for p in pairs}


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
    pairs = [
        (f"{key}[{name}]", official[key][name], fast[key].get(name)) for key in _SCORE_DICTS for name in official[key]
    ]
    pairs += [(key, official[key], fast[key]) for key in _SCORE_VALUES]
    for key in _SCORE_DICTS:
        if set(official[key]) != set(fast[key]):
            diffs.append(f"{key} has different names")
    for where, a, b in pairs:
        if b is None:
            continue
        a, b = float(a), float(b)
        if math.isnan(a) or math.isnan(b):
            if math.isnan(a) != math.isnan(b):
                diffs.append(f"{where}: official {a}, fast {b} (NaN in one only)")
            continue
        worst = max(worst, abs(a - b))
        if abs(a - b) >= tol:
            diffs.append(f"{where}: official {a!r}, fast {b!r}")
    return diffs, worst


def _package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _fast(
    pairs: Sequence[Pair], workers: int, pred_dir: Path, gt_cache: Path | bool, root: Path, split: str
) -> tuple[dict[str, Any], np.ndarray, dict[str, Any] | None]:
    """The fast engine, which decodes every prediction anyway and so is also the full content check.

    With a gt_cache folder it reads the split's ground truth from there, or builds the entry in this same
    pass (the ground truth is decoded to be scored anyway; encoding and storing it adds ~5%), so the first
    evaluation is not slowed by a separate build and later ones decode only the predictions.
    """
    try:
        with gt_cache_or_none(gt_cache, root, split, pairs, workers) as gt:
            read_segments = gt.read if gt is not None else None
            export, problems = run_fast(pairs, workers, average_class_sizes(), read_segments=read_segments)
    except UncachableGroundTruth as exc:
        warn_uncachable(exc)
        gt = None
        export, problems = run_fast(pairs, workers, average_class_sizes())
    if problems:  # after the block: a cache built in this pass is kept, whatever the predictions hold
        collected = Problems()
        for problem in problems:
            collected.add_problem(problem)
        collected.raise_if_any(f"the predictions in {pred_dir} cannot be evaluated")
    counts = np.zeros(256, dtype=np.int64)
    counts[:N_IDS] = np.asarray(export["confMatrix"], dtype=np.int64).sum(axis=0)  # predicted ids, all valid
    return plain(export), counts, gt.info() if gt is not None else None


def _check_agreement(official: Mapping[str, Any], fast: Mapping[str, Any]) -> float:
    """Raise EngineMismatchError unless the two exports agree; return the largest score difference."""
    diffs, worst = compare_exports(official, fast)
    if diffs:
        raise EngineMismatchError(
            f"the fast engine disagrees with the official script on {len(diffs)} value(s) (tolerance {TOLERANCE}): "
            + "; ".join(diffs[:10])
            + ". This is a bug in cityseg.evaluation.fast; use --engine official meanwhile."
        )
    return worst


def evaluate(
    pred_dir: Path,
    root: Path,
    split: str = "val",
    engine: str = "both",
    json_out: Path | None = None,
    workers: int | None = None,
    gt_cache: Path | bool = True,
) -> dict[str, Any]:
    """Score labelIds predictions on a split with the official Cityscapes metrics (and/or our fast twin).

    Returns the official export dict plus a "cityseg" section (engine, timings, n_frames, trainId-order
    scores, warnings); with `json_out`, also writes it and a per-class CSV beside it. Bad input raises
    UserError (never SystemExit); engines that disagree raise EngineMismatchError.
    `gt_cache`: where the fast engine keeps the split's decoded ground truth (True: ROOT/../cityseg-cache/
    eval-gt, a Path: that folder, False: decode the PNGs every time); the official engine never uses it.
    """
    if engine not in ENGINES:
        raise UserError(f"unknown evaluation engine {engine!r}; use one of {', '.join(ENGINES)}.")
    pred_dir, root = Path(pred_dir), Path(root)
    workers = workers or default_workers()
    if json_out is not None:
        check_output_paths(Path(json_out))  # fail before minutes of work, not after
    timings: dict[str, float] = {}
    started = time.perf_counter()
    pairs = prediction_pairs(pred_dir, ground_truth_frames(root, split))
    exports: dict[str, dict[str, Any]] = {}
    cache_info: dict[str, Any] | None = None
    if engine == "official":
        counts = _scan_predictions(pairs, workers, pred_dir)
        timings["validate_s"] = time.perf_counter() - started
    else:
        timings["validate_s"] = time.perf_counter() - started
        started = time.perf_counter()
        exports["fast"], counts, cache_info = _fast(pairs, workers, pred_dir, gt_cache, root, split)
        timings["fast_s"] = time.perf_counter() - started  # includes building the gt cache when it was built
    train_ids_warning = warn_if_train_ids(counts, pred_dir)
    if engine != "fast":  # every input check has passed: the script's sys.exit paths are out of reach
        started = time.perf_counter()
        official, _printed = run_official([p.prediction for p in pairs], [p.label_ids for p in pairs])
        timings["official_s"] = time.perf_counter() - started
        exports["official"] = plain(official)

    section: dict[str, Any] = {
        "engine": engine,
        "n_frames": len(pairs),
        "pred_dir": str(pred_dir.resolve()),
        "root": str(root.resolve()),
        "split": split,
        "workers": workers,
        "synthetic": (root / "SYNTHETIC.json").is_file(),
        "timings": timings,
        "gt_cache": cache_info,
        "warnings": [train_ids_warning] if train_ids_warning else [],
        "versions": {
            "cityseg": __version__,
            "cityscapesscripts": _package_version("cityscapesscripts"),
            "numpy": np.__version__,
        },
    }
    if engine == "both":
        section["max_abs_diff"] = _check_agreement(exports["official"], exports["fast"])
        section["speedup"] = timings["official_s"] / max(timings["fast_s"], 1e-9)
    export = exports.get("official") or exports["fast"]
    section["scores"] = summary(export)
    if "fast" in exports:
        section["fast"] = exports["fast"]
    result = {**export, "cityseg": section}
    if json_out is not None:
        write_outputs(result, Path(json_out))
    return result
