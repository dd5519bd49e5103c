"""`cityseg report`: run files + official evaluation JSON -> a multi-page PDF and its figures as PNGs."""

from __future__ import annotations

from pathlib import Path

from cityseg.cli.common import add_command


def register(subparsers) -> None:
    """Add the `report` subcommand."""
    parser = add_command(
        subparsers,
        "report",
        help="build report.pdf from a runs folder and the official evaluation JSON",
        description="Write a PDF that reads like a paper's results section: the headline table (CV mIoU "
        "under its protocol, official val mIoU and iIoU, the 66.79 reference) with per-class IoU, what was "
        "trained, the folds and training curves, per-class and per-category results, the confusion matrix and "
        "(with --predictions) the best and worst val frames, built from the files a run leaves behind: "
        "config.json, log.jsonl, folds.json, summary.json and the evaluation JSON. No model or GPU is needed. "
        "A report of synthetic data says SYNTHETIC on every page and has no dates or machine details, so it "
        "rebuilds to the same bytes. The figures are also written as PNGs to <OUT stem>_figures/ beside the PDF.",
    )
    parser.add_argument(
        "runs", type=Path, metavar="RUNS", help="runs folder written by `cityseg cv` (holds folds.json, summary.json)"
    )
    parser.add_argument(
        "--eval",
        dest="eval_json",
        type=Path,
        required=True,
        metavar="EVAL_JSON",
        help="evaluation JSON written by `cityseg evaluate`",
    )
    parser.add_argument("--out", type=Path, default=Path("report.pdf"), help="PDF to write")
    examples = parser.add_argument_group("Qualitative examples (optional)")
    examples.add_argument(
        "--predictions",
        type=Path,
        default=None,
        metavar="DIR",
        help="val predictions folder written by `cityseg predict`; adds image | truth | prediction | error panels",
    )
    examples.add_argument(
        "--root",
        type=Path,
        default=None,
        help="dataset folder for those panels; None means the data_root recorded in config.json",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    """Build the report and say where it and its figures are."""
    import sys

    from cityseg.report import build_report, figures_dir, load_evaluation, predictions_checkpoint_warning

    # Checked before any drawing: an evaluation of another split is refused, another checkpoint's is flagged.
    warning = predictions_checkpoint_warning(args.runs, load_evaluation(args.eval_json))
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    out = build_report(args.runs, args.eval_json, args.out, pred_dir=args.predictions, root=args.root)
    print(f"report: {out}\nfigures: {figures_dir(out)}")
    return 0
