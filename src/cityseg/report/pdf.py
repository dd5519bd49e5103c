"""The PDF report, written like a paper's results section and built only from run files.

Pages: 1 results (headline table and the per-class figure), 2 what was trained, 3 cross-validation
(per fold, full fit, curves), 4 per-class and per-category results, 5 confusion matrix, 6 the best and
worst val frames (with --predictions). A demo report (synthetic data) says SYNTHETIC on every page and
prints nothing that depends on the machine, the time or the commit, so rebuilding it from the same run
files gives the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from matplotlib.patches import Patch

from cityseg.errors import UserError
from cityseg.labels import CATEGORY_NAMES, CLASS_NAMES, NUM_CLASSES
from cityseg.report.frames import best_and_worst, load_examples, score_frames
from cityseg.report.layout import (
    CellStyle,
    Page,
    check_output,
    figures_dir,
    typesetting,
    write_pdf,
    write_readable,
)
from cityseg.report.overview import folds_table, is_synthetic
from cityseg.report.plots import (
    EXAMPLE_HEADERS,
    Example,
    class_colour,
    class_iou_bars,
    confusion_figure,
    draw_class_iou,
    draw_confusion,
    draw_example,
    draw_training_curves,
    figure_png,
    qualitative_panel,
    training_curves,
)
from cityseg.report.results import (
    REFERENCE_MIOU,
    REFERENCE_TEXT,
    CvResult,
    config_value,
    cv_result,
    finite,
    machine_table,
    recipe_differences,
    setup_table,
    val_class_iou,
    val_confusion,
)
from cityseg.report.runfiles import RunFiles, load_evaluation, load_runs
from cityseg.report.tables import Table, mean_std_text, percent

CREATOR = "cityseg report"
FIGURES = ("class_iou", "curves", "confusion", "examples")
EXAMPLE_COUNT = 2  # best and worst each
DASH = "–"


def data_source(synthetic: bool) -> str:
    """The phrase the PDF title carries, so no synthetic number is mistaken for a Cityscapes result."""
    return "SYNTHETIC data (cityseg synth), not Cityscapes" if synthetic else "Cityscapes data"


# ----------------------------------------------------------------------------------------------------------
# Tables and text (also used by the notebooks and `make demo`)
# ----------------------------------------------------------------------------------------------------------


def headline_table(cv: CvResult, evaluation: Mapping[str, Any]) -> Table:
    """CV mIoU under its protocol, the official val mIoU and iIoU, the reference beside them (percent)."""
    selected = cv.selected is not None
    rows = [
        [
            f"cross-validation mIoU, {cv.k} folds (mean ± std)",
            mean_std_text(cv.miou_mean, cv.miou_std),
            mean_std_text(cv.selected.miou_mean, cv.selected.miou_std) if selected else None,
            DASH,
        ],
        [
            "val mIoU, official Cityscapes metric",
            percent(evaluation["averageScoreClasses"]),
            DASH,
            f"{REFERENCE_MIOU:.2f}",
        ],
        ["val iIoU, official Cityscapes metric", percent(evaluation["averageScoreInstClasses"]), DASH, DASH],
        ["val mIoU over the 7 categories", percent(evaluation["averageScoreCategories"]), DASH, DASH],
    ]
    columns = ["", "this run (%)", "CV at each fold's best epoch (%)", "reference (%)"]
    if not selected:
        columns.pop(2)
        rows = [[cell for i, cell in enumerate(row) if i != 2] for row in rows]
    return Table.build(columns, rows)


def headline_text(runs: RunFiles, evaluation: dict[str, Any], synthetic: bool) -> str:
    """The headline in plain text (notebook and `make demo` output): the CV numbers as `cityseg cv` prints
    them (no selection, protocol, selected), the official val mIoU and the reference."""
    from cityseg.report.results import summary_text

    val = float(evaluation["averageScoreClasses"])
    lines = [
        summary_text(runs.summary),
        f"Validation mIoU (official cityscapesscripts): {percent(val)} %  "
        f"(iIoU {percent(evaluation['averageScoreInstClasses'])} %, "
        f"categories {percent(evaluation['averageScoreCategories'])} %)",
        f"Reference, {REFERENCE_TEXT}: {REFERENCE_MIOU:.2f} %",
        _reference_sentence(val, synthetic),
    ]
    return "\n".join(lines)


def engine_sentence(evaluation: Mapping[str, Any]) -> str:
    """Which engine computed the val numbers of an evaluation JSON (they are the official metrics either way)."""
    engine = (evaluation.get("cityseg") or {}).get("engine")
    return {
        "official": "Val: computed by cityscapesscripts' own evaluation script.",
        "both": "Val: computed by cityscapesscripts' script and by cityseg's fast engine, checked to agree.",
        "fast": "Val: computed by cityseg's fast engine, identical to cityscapesscripts' script on frames in sorted "
        "order (checked by the test suite).",
    }.get(engine, "Val: the official Cityscapes metrics from the evaluation JSON.")


def _reference_sentence(val: float, synthetic: bool) -> str:
    if synthetic:
        return (
            "The data are SYNTHETIC, so the comparison with the 66.79 reference is NOT meaningful: these numbers "
            "only show that the pipeline runs end to end."
        )
    return f"Difference to the reference: {100 * val - REFERENCE_MIOU:+.2f} points." if math.isfinite(val) else ""


def cv_table(runs: RunFiles) -> Table:
    """Per fold: the epoch the headline scores and its val loss and mIoU (and the best epoch's, when they differ)."""
    cv = cv_result(runs.summary)
    cities = {row[0]: row[1] for row in folds_table(runs.folds).rows}
    rows = []
    for f in cv.folds:
        row = [str(f.fold), cities.get(str(f.fold), ""), f.epoch, _loss(f.val_loss), percent(f.val_miou)]
        rows.append(row + ([f.best_epoch, percent(f.best_val_miou)] if cv.selected is not None else []))
    losses = [f.val_loss for f in cv.folds if finite(f.val_loss)]
    mean = [
        "mean ± std",
        "",
        "",
        _loss(sum(losses) / len(losses)) if losses else "n/a",
        mean_std_text(cv.miou_mean, cv.miou_std),
    ]
    columns = ["fold", "validation cities", "epoch", "val loss", "mIoU (%)"]
    if cv.selected is not None:
        mean += ["", mean_std_text(cv.selected.miou_mean, cv.selected.miou_std)]
        columns += ["best epoch", "best mIoU (%)"]
    else:
        columns[2] = "best epoch"
    return Table.build(columns, [*rows, mean], title="cross-validation per fold")


def full_fit_text(runs: RunFiles) -> str:
    """How the final model was trained: all train images, for the epoch count the folds chose."""
    summary = runs.summary
    full = summary.get("full")
    if not full:
        return "No full-data fit yet: `cityseg cv ... --resume` trains it once every fold is finished."
    n_train = runs.configs.get("full", {}).get("n_train", "all")
    state = "finished" if full.get("finished") else f"{full.get('epochs_done')} of {full.get('epochs')} epochs done"
    rule = (
        "the folds' epochs (fixed budget)"
        if summary["folds"] and all(f.get("select") == "last" for f in summary["folds"])
        else "the median of the folds' best epochs"
    )
    horizon = full.get("schedule_epochs", full["epochs"])
    return (
        f"{n_train} train images, {full['epochs']} epochs = {rule} (chosen: {summary['chosen_epochs']}), on the "
        f"folds' {horizon}-epoch lr schedule stopped there; {state}. Its best.pt made the validation predictions."
    )


def sentence(text: str) -> str:
    """`text` ending in exactly one full stop."""
    return text if text.endswith((".", "!", "?")) else text + "."


def _loss(value: float | None) -> str:
    return "n/a" if not finite(value) else f"{value:.4f}"


def official_tables(evaluation: dict[str, Any]) -> tuple[Table, Table]:
    """The official per-class and per-category IoU / iIoU tables in percent, means as the last rows."""
    classes = [
        (name, percent(evaluation["classScores"][name]), percent(evaluation["classInstScores"][name]))
        for name in CLASS_NAMES
    ]
    classes.append(
        (
            "mean (mIoU / iIoU)",
            percent(evaluation["averageScoreClasses"]),
            percent(evaluation["averageScoreInstClasses"]),
        )
    )
    categories = [
        (name, percent(evaluation["categoryScores"][name]), percent(evaluation["categoryInstScores"][name]))
        for name in CATEGORY_NAMES
    ]
    categories.append(
        ("mean", percent(evaluation["averageScoreCategories"]), percent(evaluation["averageScoreInstCategories"]))
    )
    return (
        Table.build(("class", "IoU (%)", "iIoU (%)"), classes),
        Table.build(("category", "IoU (%)", "iIoU (%)"), categories),
    )


def class_results_table(cv: CvResult, evaluation: Mapping[str, Any]) -> Table:
    """Per class: CV IoU mean ± std (headline protocol; selected too when known), official val IoU and iIoU."""
    rows = []
    for i, name in enumerate(CLASS_NAMES):
        row = [name, mean_std_text(cv.class_iou_mean[i], cv.class_iou_std[i])]
        if cv.selected is not None and cv.selected.class_iou_mean is not None:
            row.append(mean_std_text(cv.selected.class_iou_mean[i], (cv.selected.class_iou_std or [None] * 19)[i]))
        rows.append(row + [percent(evaluation["classScores"][name]), percent(evaluation["classInstScores"][name])])
    mean = ["mean", mean_std_text(cv.miou_mean, cv.miou_std)]
    columns = ["class", "CV IoU (%)"]
    if len(rows[0]) == 5:
        mean.append(mean_std_text(cv.selected.miou_mean, cv.selected.miou_std))
        columns.append("CV at best epoch (%)")
    rows.append(mean + [percent(evaluation["averageScoreClasses"]), percent(evaluation["averageScoreInstClasses"])])
    return Table.build([*columns, "val IoU (%)", "val iIoU (%)"], rows)


# ----------------------------------------------------------------------------------------------------------
# Pages
# ----------------------------------------------------------------------------------------------------------


def _results_page(runs: RunFiles, evaluation: dict[str, Any], cv: CvResult, synthetic: bool) -> Page:
    page = Page("results", synthetic)
    page.title("U-Net / ResNet-34 semantic segmentation: results")
    recipe = config_value(runs, "recipe")
    if synthetic:
        line = f"Demo run on synthetic street scenes  ·  recipe {recipe}  ·  {cv.k}-fold cross-validation by {cv.split}"
        page.paragraph(line, color="0.3")
        page.banner(
            "SYNTHETIC DATA. These numbers come from synthetic street scenes (cityseg synth); they only show "
            "that the pipeline trains and measures end to end and are NOT comparable with the 66.79 "
            "reference. The comparison with the reference is not meaningful."
        )
    else:
        git = runs.config.get("git") or {}
        sha = (git.get("sha") or "unknown")[:12] + (" (uncommitted changes)" if git.get("dirty") else "")
        page.paragraph(
            f"Cityscapes  ·  recipe {recipe}  ·  {cv.k}-fold cross-validation by {cv.split}  ·  git {sha}", color="0.3"
        )
    page.heading("Headline")
    page.table(
        headline_table(cv, evaluation), styles={(0, 1): CellStyle(weight="bold"), (1, 1): CellStyle(weight="bold")}
    )
    notes = [sentence(f"Cross-validation protocol: {cv.protocol}")]
    if cv.selected is not None:
        notes.append(
            sentence(
                "The best-epoch column is selected on each fold's own held-out cities, so it is "
                f"optimistic: {cv.selected.note}"
            )
        )
    notes.append(engine_sentence(evaluation))
    notes.append(f"Reference: {REFERENCE_TEXT}, val mIoU {REFERENCE_MIOU:.2f}.")
    if not synthetic:  # the banner above says it for synthetic data
        notes.append(_reference_sentence(float(evaluation["averageScoreClasses"]), synthetic))
    for note in notes:
        page.paragraph(note, size=8, color="0.25", after=0.03)
    page.heading("IoU per class: cross-validation against val")
    ax = page.plot(page.remaining, left=1.05, bottom=0.45, top=0.05)
    draw_class_iou(
        ax,
        cv.class_iou_mean,
        cv.class_iou_std,
        val_class_iou(evaluation),
        cv_label=f"cross-validation, {cv.k} folds: mean ± std",
        val_label="val, official metric",
    )
    return page


def _setup_page(runs: RunFiles, synthetic: bool) -> Page:
    page = Page("what was trained", synthetic)
    page.title("What was trained")
    page.table(setup_table(runs, synthetic))
    page.heading("Changes from the recipe")
    differences = recipe_differences(runs)
    if differences is None:
        page.paragraph(
            "Cannot be listed: config.json was not written by this version of cityseg; it holds every "
            "setting the run used."
        )
    elif not differences:
        page.paragraph(f"None: the run used the {config_value(runs, 'recipe')} recipe as defined.")
    else:
        page.table(Table.build(("field", "recipe", "this run"), differences))
    page.heading("Folds")
    page.table(folds_table(runs.folds))
    page.heading("Machine, time and code")
    if synthetic:
        page.paragraph(
            "Left out of a demo report: training time, throughput, hardware, library versions and the git "
            "sha depend on the machine and the commit, and the committed demo report must stay byte-identical "
            "when it is rebuilt. Each run folder's config.json and log.jsonl hold them."
        )
    else:
        page.table(machine_table(runs))
    return page


def _cv_page(runs: RunFiles, cv: CvResult, synthetic: bool) -> Page:
    page = Page("cross-validation", synthetic)
    page.title("Cross-validation")
    table = cv_table(runs)
    page.table(table, rules_before=[len(table.rows) - 1])
    page.paragraph(sentence(f"Protocol: {cv.protocol}"), size=8, color="0.25")
    page.heading("Full-data fit")
    page.paragraph(full_fit_text(runs))
    page.heading("Training curves")
    ax_loss, ax_miou = page.axes_row(min(4.4, page.remaining), 2, gap=0.35, left=0.55, bottom=0.5, top=0.3)
    draw_training_curves(ax_loss, ax_miou, runs.histories)
    return page


def _class_page(cv: CvResult, evaluation: dict[str, Any], synthetic: bool) -> Page:
    page = Page("per-class results", synthetic)
    page.title("Per-class results")
    page.paragraph(
        "IoU per class in percent. Cross-validation: mean ± sample std over the folds (a class absent "
        "from a fold is left out of its statistics). Val: the official Cityscapes evaluation; iIoU "
        "weighs each instance by its size, for the classes with instances.",
        size=8,
        color="0.25",
    )
    table = class_results_table(cv, evaluation)
    page.table(table, swatches=[class_colour(i) for i in range(NUM_CLASSES)] + [None], rules_before=[NUM_CLASSES])
    page.heading("Categories (official)")
    _, categories = official_tables(evaluation)
    page.table(categories, rules_before=[len(categories.rows) - 1])
    return page


def _confusion_page(evaluation: dict[str, Any], synthetic: bool) -> Page:
    page = Page("confusion matrix", synthetic)
    page.title("Confusion matrix on val")
    page.paragraph(
        "Each row is a ground-truth class, normalised to 100: where that class's pixels went. Cells of "
        "at least 1 % are written in, the diagonal (per-class recall) in bold.",
        size=8,
        color="0.25",
    )
    side = min(page.text_width, page.remaining)
    ax = page.plot(side, left=1.25, bottom=1.25, top=0.05, right=0.3)
    draw_confusion(ax, val_confusion(evaluation))
    return page


def best_and_worst_examples(
    pred_dir: Path, root: Path | None, evaluation: dict[str, Any] | None = None
) -> tuple[list[Example], int]:
    """The best and the worst val frames by their own mIoU, titled "best"/"worst", and how many were scored."""
    if root is None or not root.is_dir():
        raise UserError(
            f"the dataset folder for the qualitative examples ({root or 'unknown'}) does not exist; pass --root "
            "with the Cityscapes folder the predictions were made from, or leave out --predictions."
        )
    scores = score_frames(pred_dir, root, "val", evaluation)  # the evaluation's own per-frame scores
    picked = best_and_worst(scores, count=EXAMPLE_COUNT)  # the best ones first
    examples = load_examples([s.id for s in picked], pred_dir, root, "val", scores=picked)
    return [
        replace(e, title=f"{'best' if n < EXAMPLE_COUNT else 'worst'}\n{e.title}") for n, e in enumerate(examples)
    ], len(scores)


def _examples_page(examples: list[Example], scored: int, pred_dir: Path, synthetic: bool) -> Page:
    page = Page("qualitative results", synthetic, landscape=True)
    page.title("Best and worst val frames")
    page.paragraph(
        f"Each of the {scored} val frames in {pred_dir.name}/ scored on its own (mIoU over the classes in "
        "its ground truth or prediction); shown are the best and the worst. Error map: red wrong, black "
        "right, white ignored in the ground truth.",
        size=8,
        color="0.25",
    )
    page.space(0.2)  # the column headers sit above the first row
    aspect = examples[0].image.shape[0] / examples[0].image.shape[1]
    label_width = 1.5  # frame id and score, level with each row
    panel_width = (page.text_width - label_width - 3 * 0.08) / 4
    row_height = min(panel_width * aspect + 0.08, (page.remaining - 0.8) / len(examples))
    for n, example in enumerate(examples):
        axes = [
            page.axes(
                row_height,
                x=label_width + i * (panel_width + 0.08),
                width=panel_width,
                left=0,
                right=0,
                top=0.04,
                bottom=0.04,
            )
            for i in range(4)
        ]
        draw_example(axes, example, title_beside=True)
        if n == 0:
            for ax, header in zip(axes, EXAMPLE_HEADERS, strict=True):
                ax.set_title(header, fontsize=8)
        page.space(row_height)
    page.space(0.1)
    handles = [
        Patch(facecolor=class_colour(i), edgecolor="0.3", linewidth=0.3, label=name)
        for i, name in enumerate(CLASS_NAMES)
    ]
    page.figure.legend(
        handles=handles,
        loc="upper center",
        ncols=10,
        fontsize=7,
        frameon=False,
        bbox_to_anchor=(0.5, 1 - page.cursor / page.height),
        title="Cityscapes palette",
        title_fontsize=7,
    )
    return page


def _figures(runs: RunFiles, evaluation: dict[str, Any], examples: list[Example]) -> dict:
    """The report's plots as stand-alone figures, written as PNGs beside the PDF for READMEs and slides."""
    cv = cv_result(runs.summary)
    figures = {
        "class_iou": class_iou_bars(
            cv.class_iou_mean,
            cv.class_iou_std,
            val_class_iou(evaluation),
            title="IoU per class: cross-validation mean ± std (solid) and val (hatched)",
        ),
        "curves": training_curves(runs.histories),
        "confusion": confusion_figure(val_confusion(evaluation)),
    }
    if examples:
        figures["examples"] = qualitative_panel(examples)
    return figures


def is_synthetic_run(runs: RunFiles, evaluation: dict[str, Any], root: Path | None) -> bool:
    """Synthetic if the training config, the evaluation or the dataset folder says so (any one is enough)."""
    return runs.synthetic or bool(evaluation.get("cityseg", {}).get("synthetic")) or is_synthetic(root)


def _resolve_root(root: Path | None, runs: RunFiles) -> Path | None:
    if root is not None:
        return Path(root)
    recorded = runs.config.get("data_root")
    return Path(recorded) if recorded else None


def build_report(
    runs_dir: Path, eval_json: Path, out_pdf: Path, pred_dir: Path | None = None, root: Path | None = None
) -> Path:
    """Write the PDF report and its figures (PNGs in `<out stem>_figures/`); returns the PDF path."""
    out_pdf = Path(out_pdf)
    runs = load_runs(Path(runs_dir))
    evaluation = load_evaluation(Path(eval_json))
    root = _resolve_root(root, runs)
    check_output(out_pdf, CREATOR, "cityseg report", FIGURES)
    synthetic = is_synthetic_run(runs, evaluation, root)
    cv = cv_result(runs.summary)
    examples: list[Example] = []
    with typesetting():
        pages = [
            _results_page(runs, evaluation, cv, synthetic),
            _setup_page(runs, synthetic),
            _cv_page(runs, cv, synthetic),
            _class_page(cv, evaluation, synthetic),
            _confusion_page(evaluation, synthetic),
        ]
        if pred_dir is not None:
            examples, scored = best_and_worst_examples(Path(pred_dir), root, evaluation)
            pages.append(_examples_page(examples, scored, Path(pred_dir), synthetic))
        write_pdf(
            pages,
            out_pdf,
            title=f"cityseg report - {data_source(synthetic)}",
            creator=CREATOR,
            subject="U-Net/ResNet-34 semantic segmentation on Cityscapes",
            footer_note="built from config.json, log.jsonl, folds.json, summary.json and the evaluation JSON",
        )
    folder = figures_dir(out_pdf)
    for name, figure in _figures(runs, evaluation, examples).items():
        write_readable(folder / f"{name}.png", figure_png(figure))
    return out_pdf
