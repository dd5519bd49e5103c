"""`cityseg evaluate`: official Cityscapes scores for a folder of labelIds predictions."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from cityseg.cli.common import add_command, positive_int
from cityseg.system import default_workers


def register(subparsers) -> None:
    """Add the `evaluate` subcommand."""
    parser = add_command(
        subparsers,
        "evaluate",
        help="score labelIds predictions with the official Cityscapes metrics (IoU, iIoU)",
        description="Score one labelIds PNG per frame of a split with the official Cityscapes pixel-level metrics: "
        "by default with a fast twin of cityscapesscripts computed from confusion counts (identical numbers), "
        "with --engine official by the script itself (run in-process: no CITYSCAPES_* variables, no sys.exit), "
        "or with --engine both, which runs both and fails unless they agree. Every input problem (missing, extra or "
        "duplicate PNGs, wrong size, channels or ids) is listed before anything is scored. Prints a table and "
        "writes the official-format JSON (plus a 'cityseg' section) and a per-class CSV beside it.",
    )
    parser.add_argument(
        "pred_dir", type=Path, metavar="PRED_DIR", help="folder of prediction PNGs (searched recursively)"
    )
    parser.add_argument("root", type=Path, metavar="ROOT", help="Cityscapes folder holding gtFine/ and leftImg8bit/")
    parser.add_argument(
        "--split", choices=("val", "test", "train"), default="val", help="which ground truth to score against"
    )
    parser.add_argument(
        "--engine",
        choices=("both", "official", "fast"),
        default="fast",
        help="fast: the confusion-count twin of the official metrics (the same numbers, checked against "
        "cityscapesscripts by the test suite, ~5x faster on a first run); official: cityscapesscripts itself; "
        "both: run both, fail if they differ by 1e-9 or more, report both timings",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="OUT",
        help="where to write the JSON (and OUT with .csv: class, IoU, iIoU); None means PRED_DIR-eval/SPLIT.json, "
        "in a folder beside PRED_DIR, never inside it. An existing file is replaced only if cityseg wrote it",
    )
    parser.add_argument(
        "--workers", type=positive_int, default=default_workers(), help="threads decoding PNGs (all cores)"
    )
    cache = parser.add_argument_group(
        "Ground-truth cache (fast engine only; the official script always reads the PNGs)"
    )
    where = cache.add_mutually_exclusive_group()
    where.add_argument(
        "--gt-cache",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder keeping each split's decoded labelIds and instanceIds (in DIR/SPLIT, a memmap of 2 bytes per "
        "pixel) so later evaluations decode only the predictions; written by the scoring pass itself (~25%% more "
        "for that run): of the first evaluation when DIR is given, of the second one of the split in the default "
        "folder (a cache pays only when a split is scored again). Rebuilt when any gtFine file of the split "
        "changes, refused if DIR holds files cityseg did not write. None means ROOT/../cityseg-cache/eval-gt, "
        "beside the training cache (skipped with a note if not writable or short of space)",
    )
    where.add_argument(
        "--no-gt-cache", action="store_true", help="decode the ground-truth PNGs every time; write no cache"
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    """Evaluate, print the table and timings, and write the JSON and CSV."""
    from cityseg.evaluation import (
        EngineMismatchError,
        TrainIdsWarning,
        default_json_path,
        evaluate,
        format_table,
    )

    json_out = args.json if args.json is not None else default_json_path(args.pred_dir, args.split)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TrainIdsWarning)
        try:
            gt_cache = False if args.no_gt_cache else (args.gt_cache or True)
            result = evaluate(args.pred_dir, args.root, args.split, args.engine, json_out, args.workers, gt_cache)
        except EngineMismatchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    info = result["cityseg"]
    print(format_table(result, bold=sys.stdout.isatty()))
    timings = info["timings"]
    line = (
        f"{info['n_frames']} frames of {info['split']}, engine {info['engine']}: checks {timings['validate_s']:.2f} s"
    )
    if "official_s" in timings:
        line += f", official {timings['official_s']:.2f} s"
    if "fast_s" in timings:
        line += f", fast {timings['fast_s']:.2f} s ({info['workers']} workers)"
    cache = info.get("gt_cache")
    if cache and cache["status"] == "next run":
        line += (
            f"; ground truth from gtFine (first evaluation of this split: the next one caches it in {cache['path']})"
        )
    elif cache:
        line += f" with ground-truth cache {cache['status']} ({cache['path']}"
        line += f", written while scoring: {cache['build_s']:.2f} s of it)" if cache["status"] != "fresh" else ")"
    if info["engine"] == "both":
        line += f"; fast is {info['speedup']:.1f}x faster, max |difference| {info['max_abs_diff']:.1e}"
    print(line)
    print(f"wrote {json_out} and {Path(json_out).with_suffix('.csv')}")
    return 0
