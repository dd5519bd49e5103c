"""`cityseg compare`: two or more runs folders side by side in one PDF (cityseg.report.compare)."""

from __future__ import annotations

from pathlib import Path

from cityseg.cli.common import add_command
from cityseg.errors import UserError


def register(subparsers) -> None:
    """Add the `compare` subcommand."""
    parser = add_command(
        subparsers,
        "compare",
        help="compare runs folders side by side (compare.pdf)",
        description="Write a PDF comparing runs folders written by `cityseg cv`: one table with each run's "
        "changes from its recipe, CV mIoU mean ± std, val mIoU and iIoU (from --eval), training time and images/s; "
        "the settings that differ; for runs on the same folds a paired per-fold comparison that says whether the "
        "gain is larger than the fold-to-fold noise; per-class IoU side by side with the differences highlighted; "
        "training curves overlaid. Runs trained on different datasets or fold splits are refused unless "
        "--allow-mismatch is given.",
    )
    parser.add_argument(
        "runs",
        type=Path,
        nargs="+",
        metavar="RUNS",
        help="runs folders written by `cityseg cv` (each holds folds.json, summary.json); the "
        "first is the baseline the differences are taken against",
    )
    parser.add_argument(
        "--labels", default=None, help="comma-separated names for the runs, in order (default: the folders' names)"
    )
    parser.add_argument(
        "--eval",
        dest="evals",
        type=str,
        action="append",
        default=None,
        metavar="EVAL_JSON",
        help="evaluation JSON of one run (`cityseg evaluate --json`), once per run in the order of "
        "RUNS; `none` for a run without one. Without --eval no val numbers are shown. A runs folder "
        "does not record where its predictions were evaluated, so there is no default.",
    )
    parser.add_argument("--out", type=Path, default=Path("compare.pdf"), help="PDF to write")
    parser.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="compare runs trained on different datasets or fold splits anyway (their CV numbers "
        "measure different things; no paired comparison for them)",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    """Check the runs, write the PDF and say where it is."""
    from cityseg.report.compare_pdf import build_comparison

    if len(args.runs) < 2:
        raise UserError("cityseg compare needs at least two runs folders (RUNS_A RUNS_B ...).")
    out = build_comparison(
        args.runs, args.out, labels=args.labels, evaluations=args.evals, allow_mismatch=args.allow_mismatch
    )
    print(f"comparison: {out}")
    return 0
