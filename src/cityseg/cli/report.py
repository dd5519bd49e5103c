"""`cityseg report`: run files + official evaluation JSON -> report.pdf, its figures and its tables."""

from __future__ import annotations

from pathlib import Path

from cityseg.cli.common import add_command


def register(subparsers) -> None:
    """Add the `report` subcommand."""
    parser = add_command(
        subparsers,
        "report",
        help="build report.pdf from a runs folder and the official evaluation JSON",
        description="Write a PDF that reads like a paper's results section (headline, what was trained, folds and "
        "curves, per-class results, confusion matrix, and with --predictions the best and worst val frames) from the "
        "files a run leaves behind; no model or GPU needed. Figures go to <OUT stem>_figures/ (PNG), tables to "
        "<OUT stem>_tables/ (CSV and LaTeX). docs/report.md describes every page.",
    )
    add = parser.add_argument
    add("runs", type=Path, metavar="RUNS", help="runs folder written by `cityseg cv` (holds folds.json, summary.json)")
    add("--eval", dest="eval_json", type=Path, required=True, metavar="EVAL_JSON", help="JSON of `cityseg evaluate`")
    add("--out", type=Path, default=Path("report.pdf"), metavar="PDF", help="PDF to write")
    add = parser.add_argument_group("Qualitative examples (optional)").add_argument
    panels = "val predictions folder written by `cityseg predict`; adds image | truth | prediction | error panels"
    add("--predictions", type=Path, metavar="DIR", help=panels)
    add("--root", type=Path, metavar="ROOT", help="dataset for those panels (default: the data_root in config.json)")
    parser.set_defaults(func=run)


def run(args) -> int:
    """Build the report and say where it, its figures and its tables are."""
    import sys

    from cityseg.report import build_report, figures_dir, load_evaluation, predictions_checkpoint_warning, tables_dir

    # Checked before any drawing: an evaluation of another split is refused, another checkpoint's is flagged.
    warning = predictions_checkpoint_warning(args.runs, load_evaluation(args.eval_json))
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    out = build_report(args.runs, args.eval_json, args.out, pred_dir=args.predictions, root=args.root)
    print(f"report: {out}\nfigures: {figures_dir(out)}\ntables: {tables_dir(out)} (CSV in fractions, LaTeX in percent)")
    print(f"next: open {out}; another run beside this one: cityseg compare {args.runs} OTHER_RUNS")
    return 0
