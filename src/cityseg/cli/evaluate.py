"""`cityseg evaluate`: official Cityscapes scores for a folder of labelIds predictions."""

from __future__ import annotations

import sys
import warnings
from argparse import SUPPRESS
from pathlib import Path

from cityseg.cli.common import add_command, add_workers


def register(subparsers) -> None:
    """Add the `evaluate` subcommand."""
    parser = add_command(
        subparsers,
        "evaluate",
        help="score labelIds predictions with the official Cityscapes metrics (IoU, iIoU)",
        description="Score one labelIds PNG per frame of a split with the official Cityscapes pixel-level metrics. "
        "Every input problem (missing, extra or duplicate PNGs, wrong size, channels or ids) is listed before "
        "anything is scored. Prints a table in percent; writes the official-format JSON (fractions of 1, plus a "
        "'cityseg' section with per-frame scores and how the predictions were made) and a per-class CSV beside it. "
        "See docs/evaluation.md.",
    )
    add = parser.add_argument
    add("pred_dir", type=Path, metavar="PRED_DIR", help="folder of prediction PNGs (searched recursively)")
    add("root", type=Path, metavar="ROOT", help="Cityscapes folder holding gtFine/ and leftImg8bit/")
    add("--split", choices=("val", "test", "train"), default="val", help="which ground truth to score against")
    engines = (
        "fast: the metrics from confusion counts, identical to the official script on frames in sorted order and "
        "several times faster; official: cityscapesscripts itself (in-process, no CITYSCAPES_* variables); both: run "
        "both, fail if any number differs by 1e-9 or more"
    )
    add("--engine", choices=("both", "official", "fast"), default="fast", help=engines)
    json = (
        "where to write the JSON (and FILE with .csv: class, IoU, iIoU); an existing file is replaced only if cityseg "
        "wrote it (default: PRED_DIR-eval/SPLIT.json, in a folder beside PRED_DIR, never inside it)"
    )
    add("--json", type=Path, default=SUPPRESS, metavar="FILE", help=json)
    add_workers(add, "threads decoding and counting PNGs")
    parser.set_defaults(func=run)


def run(args) -> int:
    """Evaluate, print the table and timings, and write the JSON and CSV."""
    from cityseg.evaluation import EngineMismatchError, EvaluationWarning, default_json_path, evaluate, format_table
    from cityseg.report.notebook import engines_text

    json_out = getattr(args, "json", None) or default_json_path(args.pred_dir, args.split)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EvaluationWarning)
        try:
            result = evaluate(args.pred_dir, args.root, args.split, args.engine, json_out, args.workers)
        except EngineMismatchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    print(format_table(result, bold=sys.stdout.isatty()))
    print(f"{engines_text(result)}\nwrote {json_out} and {Path(json_out).with_suffix('.csv')}")
    print(f"next: cityseg report RUNS --eval {json_out} --predictions {args.pred_dir}   (RUNS: its runs folder)")
    return 0
