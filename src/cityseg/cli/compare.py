"""`cityseg compare`: two or more runs folders side by side in compare.pdf (cityseg.report.compare)."""

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
        description="Write a PDF comparing finished runs folders of `cityseg cv`: the runs and the settings that "
        "differ, a paired per-fold test of the gain with what it cannot show, per-class IoU and the curves; the "
        "tables also as CSV and LaTeX in <OUT stem>_tables/. Runs on different datasets or fold splits are refused "
        "unless --allow-mismatch. docs/report.md describes the test and its limits.",
    )
    add = parser.add_argument
    runs = "finished runs folders written by `cityseg cv`; the first is the baseline of the differences"
    add("runs", type=Path, nargs="+", metavar="RUNS", help=runs)
    add("--labels", metavar="A,B", help="comma-separated names for the runs, in order (default: the folders' names)")
    evals = (
        "evaluation JSON of one run (`cityseg evaluate`), once per run in the order of RUNS; `none` for a run without "
        "one. Without --eval no val numbers are shown (a runs folder does not record where its predictions were "
        "evaluated)"
    )
    add("--eval", dest="evals", action="append", metavar="EVAL_JSON", help=evals)
    add("--out", type=Path, default=Path("compare.pdf"), metavar="PDF", help="PDF to write")
    mismatch = "compare runs on different datasets or fold splits anyway (no paired comparison for them)"
    add("--allow-mismatch", action="store_true", help=mismatch)
    parser.set_defaults(func=run)


def run(args) -> int:
    """Check the runs, write the PDF and its tables, print the headline and where they are."""
    from cityseg.report.compare_pdf import build_comparison
    from cityseg.report.layout import tables_dir
    from cityseg.report.tables import Score

    if len(args.runs) < 2:
        raise UserError("cityseg compare needs at least two runs folders (RUNS_A RUNS_B ...).")
    comparison = build_comparison(args.runs, args.out, args.labels, args.evals, args.allow_mismatch)
    for run in comparison.runs:
        val = f"val mIoU {Score(run.evaluation['averageScoreClasses'])} %" if run.evaluation else "not evaluated on val"
        print(f"{run.label}: CV mIoU {Score(run.cv.miou_mean, run.cv.miou_std)} %, {val}")
    print(comparison.verdicts())
    print(f"comparison: {args.out}\ntables: {tables_dir(args.out)} (CSV in fractions, LaTeX in percent)")
    print(f"next: open {args.out}; the paragraph under the paired result says what the test cannot show")
    return 0
