"""The result commands: `cityseg evaluate` (official scores of labelIds predictions), `submit` (test predictions
checked and zipped for the server), `report` (report.pdf, figures, tables) and `compare` (runs side by side)."""

import sys
import warnings
from argparse import SUPPRESS
from pathlib import Path

from cityseg.cli.common import add_command, add_workers, positive_int, size_type
from cityseg.errors import UserError


def register_evaluate(subparsers) -> None:
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
    parser.set_defaults(func=run_evaluate)


def run_evaluate(args) -> int:
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


def register_submit(subparsers) -> None:
    parser = add_command(
        subparsers,
        "submit",
        help="check test predictions and zip them for the Cityscapes benchmark server",
        description="Check a folder of test-split labelIds PNGs the way the benchmark server (pixel-level semantic "
        "labeling) would: one PNG per test image named <city>_<seq>_<frame>*.png, single channel, official "
        "labelIds 0..33, full size. Then write them flat at the top level of a zip, atomically. Upload the zip "
        "on the Cityscapes website.",
    )
    add = parser.add_argument
    add("pred_dir", type=Path, metavar="PRED_DIR", help="folder of test prediction PNGs (searched recursively)")
    add("--out", type=Path, default=Path("submission.zip"), metavar="FILE", help="zip file to write")
    add("--overwrite", action="store_true", help="replace an existing zip with other contents")
    add_workers(add, "threads decoding PNGs")
    add = parser.add_argument_group(
        "What to expect (default: the real test split, 1525 images of 2048x1024)"
    ).add_argument
    add(
        "--expect", type=positive_int, metavar="N", help="frames expected (default: 1525, or the test frames of --root)"
    )
    add("--root", type=Path, metavar="ROOT", help="expect exactly the test frames and image sizes of this dataset")
    add("--size", type=size_type, metavar="WxH", help="prediction size without --root (default: 2048x1024)")
    parser.set_defaults(func=run_submit)


def run_submit(args) -> int:
    """Check, zip, and say where the zip is."""
    from cityseg.evaluation import TrainIdsWarning
    from cityseg.prediction.submit import make_submission

    if args.root is not None and args.size is not None:
        raise UserError(
            "--size and --root both set the expected size; with --root the test images' sizes are used, so drop --size."
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TrainIdsWarning)
        options = {"root": args.root, "size": args.size, "overwrite": args.overwrite, "workers": args.workers}
        out = make_submission(args.pred_dir, args.out, args.expect, **options)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    print(f"next: upload {out} at https://www.cityscapes-dataset.com/submit/")
    return 0


def register_report(subparsers) -> None:
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
    parser.set_defaults(func=run_report)


def run_report(args) -> int:
    """Build the report and say where it, its figures and its tables are."""
    from cityseg.report import build_report, figures_dir, load_evaluation, predictions_checkpoint_warning, tables_dir

    # Checked before any drawing: an evaluation of another split is refused, another checkpoint's is flagged.
    warning = predictions_checkpoint_warning(args.runs, load_evaluation(args.eval_json))
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    out = build_report(args.runs, args.eval_json, args.out, pred_dir=args.predictions, root=args.root)
    print(f"report: {out}\nfigures: {figures_dir(out)}\ntables: {tables_dir(out)} (CSV in fractions, LaTeX in percent)")
    print(f"next: open {out}; another run beside this one: cityseg compare {args.runs} OTHER_RUNS")
    return 0


def register_compare(subparsers) -> None:
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
    parser.set_defaults(func=run_compare)


def run_compare(args) -> int:
    """Check the runs, write the PDF and its tables, print the headline and where they are."""
    from cityseg.report import Score, build_comparison, tables_dir

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
