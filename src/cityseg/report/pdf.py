"""report.pdf, written like a paper's results section and built only from run files.

Pages: results (headline and per-class figure), what was trained, cross-validation (per fold, full
fit, curves), per-class and per-category tables, confusion matrix, and with --predictions the best
and worst val frames. Beside it: the figures as PNGs and the tables as CSV and LaTeX. A report of
synthetic data says so on every page and prints nothing machine, time or commit dependent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from cityseg.errors import UserError
from cityseg.labels import CATEGORY_NAMES, CLASS_NAMES, NUM_CLASSES
from cityseg.report.frames import best_and_worst, load_examples, score_frames
from cityseg.report.layout import (
    BOTTOM,
    HEIGHT,
    CellStyle,
    Page,
    check_output,
    figures_dir,
    tables_dir,
    typesetting,
    write_bytes,
    write_pdf,
    write_tables,
)
from cityseg.report.overview import folds_table, is_synthetic
from cityseg.report.plots import (
    Example,
    class_colour,
    class_iou_bars,
    confusion_figure,
    figure_png,
    qualitative_panel,
    training_curves,
)
from cityseg.report.results import (
    REFERENCE_CAVEAT,
    REFERENCE_MIOU,
    REFERENCE_TEXT,
    CvResult,
    cv_result,
    finite,
    git_text,
    machine_table,
    recipe_differences,
    setup_table,
    summary_text,
    val_class_iou,
    val_confusion,
)
from cityseg.report.runfiles import RunFiles, load_evaluation, load_runs
from cityseg.report.tables import Score, Table
from cityseg.training.model_names import model_title_of

CREATOR = "cityseg report"
FIGURES = ("class_iou", "curves", "confusion", "examples")
FIGURE_FILES = [f"{name}.png" for name in FIGURES]
TABLES = ("headline", "cv_folds", "classes", "categories")
EXAMPLE_COUNT = 2  # best and worst each
DASH = "–"
SYNTHETIC_BANNER = (
    "SYNTHETIC DATA. These numbers come from synthetic street scenes (cityseg synth): they only show that the "
    "pipeline trains and measures end to end and say nothing about Cityscapes, so no reference number is shown."
)


def headline_table(cv: CvResult, evaluation: Mapping[str, Any], synthetic: bool) -> Table:
    """CV mIoU under its protocol (and at each fold's best epoch), the official val scores, and beside real
    Cityscapes val numbers the reference (percent)."""
    best, reference = cv.selected is not None, not synthetic

    def row(label: str, value: Score, at_best: object = DASH, ref: str = DASH) -> list[object]:
        return [label, value, *([at_best] * best), *([ref] * reference)]

    rows = [
        row(
            f"cross-validation mIoU, {cv.k} folds (mean ± std)",
            Score(cv.miou_mean, cv.miou_std),
            Score(cv.selected.get("miou_mean"), cv.selected.get("miou_std")) if best else DASH,
        ),
        row(
            "val mIoU, official Cityscapes metric",
            Score(evaluation["averageScoreClasses"]),
            ref=f"{REFERENCE_MIOU:.2f}",
        ),
        row("val iIoU, official Cityscapes metric", Score(evaluation["averageScoreInstClasses"])),
        row("val mIoU over the 7 categories", Score(evaluation["averageScoreCategories"])),
    ]
    columns = row("", "this run (%)", "CV at each fold's best epoch (%)", "reference (%)")  # type: ignore[arg-type]
    return Table.build(columns, rows, title="headline")


def headline_text(runs: RunFiles, evaluation: Mapping[str, Any], synthetic: bool) -> str:
    """The headline in plain text (notebook, `make demo`): the CV numbers as `cityseg cv` prints them, the
    official val scores, and the reference with its caveat (real Cityscapes only)."""
    val = Score(evaluation["averageScoreClasses"])
    lines = [
        summary_text(runs.summary),
        f"Validation mIoU (official cityscapesscripts): {val} %  (iIoU {Score(evaluation['averageScoreInstClasses'])}"
        f" %, categories {Score(evaluation['averageScoreCategories'])} %)",
    ]
    if synthetic:
        return "\n".join([*lines, "Synthetic data: these numbers only show that the pipeline runs end to end."])
    return "\n".join([*lines, f"Reference, {REFERENCE_TEXT}: {REFERENCE_MIOU:.2f} %. {REFERENCE_CAVEAT}"])


def engine_sentence(evaluation: Mapping[str, Any]) -> str:
    """Which engine computed the val numbers (they are the official metrics either way)."""
    engine = (evaluation.get("cityseg") or {}).get("engine")
    return {
        "official": "Val: computed by cityscapesscripts' own evaluation script.",
        "both": "Val: computed by cityscapesscripts' script and by cityseg's fast engine, checked to agree.",
        "fast": "Val: computed by cityseg's fast engine, identical to cityscapesscripts' script on frames in sorted "
        "order (checked by the test suite).",
    }.get(engine, "Val: the official Cityscapes metrics from the evaluation JSON.")


def cv_table(runs: RunFiles) -> Table:
    """Per fold: the epoch the headline scores, its val loss and mIoU (and the best epoch's, when recorded)."""
    cv = cv_result(runs.summary)
    cities = {row[0]: row[1] for row in folds_table(runs.folds).rows}
    best = cv.selected is not None
    rows = [
        [f["fold"], cities.get(str(f["fold"]), ""), f.get("epoch"), _loss(f.get("val_loss")), Score(f.get("val_miou"))]
        + ([f.get("best_epoch"), Score(f.get("best_val_miou"))] if best else [])
        for f in cv.folds
    ]
    losses = [f["val_loss"] for f in cv.folds if finite(f.get("val_loss"))]
    mean = [
        "mean ± std",
        "",
        "",
        _loss(sum(losses) / len(losses) if losses else None),
        Score(cv.miou_mean, cv.miou_std),
    ]
    mean += ["", Score(cv.selected.get("miou_mean"), cv.selected.get("miou_std"))] if best else []
    columns = ["fold", "validation cities", "epoch", "val loss", "mIoU (%)"]
    columns += ["best epoch", "best mIoU (%)"] if best else []
    return Table.build(columns, [*rows, mean], title="cross-validation per fold")


def _loss(value: float | None) -> str:
    return f"{value:.4f}" if finite(value) else "n/a"


def full_fit_text(runs: RunFiles) -> str:
    """How the final model was trained: all train images, for the epoch count the folds chose."""
    summary, full = runs.summary, runs.summary.get("full")
    if not full:
        return "No full-data fit yet: `cityseg cv ... --resume` trains it once every fold is finished."
    n_train = runs.configs.get("full", {}).get("n_train", "all")
    state = "finished" if full.get("finished") else f"{full.get('epochs_done')} of {full.get('epochs')} epochs done"
    fixed = summary["folds"] and all(f.get("select") == "last" for f in summary["folds"])
    rule = "the folds' epochs (fixed budget)" if fixed else "the median of the folds' best epochs"
    return (
        f"{n_train} train images, {full['epochs']} epochs = {rule} (chosen: {summary['chosen_epochs']}), on the "
        f"folds' {full.get('schedule_epochs', full['epochs'])}-epoch lr schedule stopped there; {state}. Its "
        "best.pt (RUNS/full/best.pt) is the final model, the one to predict and evaluate val with."
    )


def official_tables(evaluation: Mapping[str, Any]) -> tuple[Table, Table]:
    """The official per-class and per-category IoU / iIoU tables in percent, means as the last rows."""
    tables = []
    for names, kind, means in (
        (CLASS_NAMES, "class", ("Classes", "mean (mIoU / iIoU)")),
        (CATEGORY_NAMES, "category", ("Categories", "mean")),
    ):
        rows = [(n, Score(evaluation[f"{kind}Scores"][n]), Score(evaluation[f"{kind}InstScores"][n])) for n in names]
        average = (Score(evaluation[f"averageScore{means[0]}"]), Score(evaluation[f"averageScoreInst{means[0]}"]))
        tables.append(Table.build((kind, "IoU (%)", "iIoU (%)"), [*rows, (means[1], *average)], title=kind))
    return tables[0], tables[1]


def class_results_table(cv: CvResult, evaluation: Mapping[str, Any]) -> Table:
    """Per class: CV IoU mean ± std (headline protocol; at the best epoch too when known), val IoU and iIoU."""
    best = cv.selected is not None and cv.selected.get("class_iou_mean") is not None
    rows = []
    for i, name in enumerate(CLASS_NAMES):
        row = [name, Score(cv.class_iou_mean[i], cv.class_iou_std[i])]
        if best:
            row.append(Score(cv.selected["class_iou_mean"][i], (cv.selected.get("class_iou_std") or [None] * 19)[i]))
        rows.append([*row, Score(evaluation["classScores"][name]), Score(evaluation["classInstScores"][name])])
    mean = ["mean", Score(cv.miou_mean, cv.miou_std)]
    mean += [Score(cv.selected["miou_mean"], cv.selected.get("miou_std"))] if best else []
    rows.append([*mean, Score(evaluation["averageScoreClasses"]), Score(evaluation["averageScoreInstClasses"])])
    columns = ["class", "CV IoU (%)", *(["CV at best epoch (%)"] * best), "val IoU (%)", "val iIoU (%)"]
    return Table.build(columns, rows, title="per class")


def _results_page(runs: RunFiles, evaluation: dict, cv: CvResult, synthetic: bool) -> Page:
    page = Page("results", synthetic)
    page.title(f"{model_title_of(runs.config.get('config') or {})} semantic segmentation: results")
    recipe = (runs.config.get("config") or {}).get("recipe")
    where = "Demo run on synthetic street scenes" if synthetic else "Cityscapes"
    commit = "" if synthetic else f"  ·  {git_text(runs.config)}"
    page.text(f"{where}  ·  recipe {recipe}  ·  {cv.k}-fold cross-validation by {cv.split}{commit}", color="0.3")
    if synthetic:
        page.banner(SYNTHETIC_BANNER)
    page.heading("Headline")
    page.table(headline_table(cv, evaluation, synthetic), styles={(0, 1): CellStyle(weight="bold")})
    page.note(f"Cross-validation protocol: {cv.protocol.rstrip('.')}.")
    if cv.selected is not None:
        page.note("The best-epoch column is optimistic: each fold's best epoch is chosen on the cities it scores.")
    page.note(engine_sentence(evaluation))
    if not synthetic:
        page.note(f"Reference: {REFERENCE_TEXT}. {REFERENCE_CAVEAT}")
    page.heading("IoU per class: cross-validation against val")
    labels = (f"cross-validation, {cv.k} folds: mean ± std", "val, official metric")
    class_iou_bars(
        cv.class_iou_mean,
        cv.class_iou_std,
        val_class_iou(evaluation),
        page.plot_area(margins=(0.9, 0.1, 0.45, 0.05)),
        labels,
    )
    return page


def _setup_page(runs: RunFiles, synthetic: bool) -> Page:
    page = Page("what was trained", synthetic)
    page.title("What was trained")
    page.table(setup_table(runs, synthetic))
    page.heading("Changes from the recipe")
    differences = recipe_differences(runs)
    if differences is None:
        page.text("Cannot be listed: config.json was not written by this version of cityseg; it holds every setting.")
    elif not differences:
        page.text("None: the run used its recipe as defined.")
    else:
        page.table(Table.build(("field", "recipe", "this run"), differences))
    page.heading("Folds")
    page.table(folds_table(runs.folds))
    if not synthetic:
        page.heading("Machine, time and code")
        page.table(machine_table(runs))
    return page


def _cv_page(runs: RunFiles, synthetic: bool) -> Page:
    page = Page("cross-validation", synthetic)
    page.title("Cross-validation")
    table = cv_table(runs)
    page.table(table, rules_before=[len(table.rows) - 1])
    page.note("The epoch each fold is scored at follows the protocol stated under the headline on page 1.")
    page.heading("Full-data fit")
    page.text(full_fit_text(runs))
    page.heading("Training curves")
    training_curves(runs.histories, page.plot_area(min(4.6, HEIGHT - BOTTOM - page.cursor), (0.6, 0.1, 0.1, 0.3), 0.35))
    return page


def _class_page(cv: CvResult, evaluation: dict, synthetic: bool) -> Page:
    page = Page("per-class results", synthetic)
    page.title("Per-class results")
    page.note(
        "IoU per class in percent. Cross-validation: mean ± sample std over the folds (a class absent from a fold "
        "is left out of its statistics). Val: the official Cityscapes evaluation; iIoU weighs each instance by its "
        "size, for the classes with instances."
    )
    swatches = [*map(class_colour, range(NUM_CLASSES)), None]
    page.table(class_results_table(cv, evaluation), swatches=swatches, rules_before=[NUM_CLASSES])
    page.heading("Categories (official)")
    categories = official_tables(evaluation)[1]
    page.table(categories, rules_before=[len(categories.rows) - 1])
    return page


def _confusion_page(evaluation: dict, synthetic: bool) -> Page:
    page = Page("confusion matrix", synthetic)
    page.title("Confusion matrix on val")
    page.note(
        "Each row is a ground-truth class, normalised to 100: where that class's pixels went. Cells of at least "
        "1 % are written in, the diagonal (per-class recall) in bold."
    )
    confusion_figure(val_confusion(evaluation), page.plot_area(6.9, (1.25, 0.75, 1.3, 0.1)))
    return page


def best_and_worst_examples(pred_dir: Path, root: Path | None) -> tuple[list[Example], int]:
    """The best and the worst val frames by their own mIoU, titled "best"/"worst", and how many were scored."""
    if root is None or not root.is_dir():
        raise UserError(
            f"the dataset folder for the qualitative examples ({root or 'unknown'}) does not exist; pass --root "
            "with the Cityscapes folder the predictions were made from, or leave out --predictions."
        )
    scores = score_frames(pred_dir, root, "val")
    picked = best_and_worst(scores, count=EXAMPLE_COUNT)  # the best ones first
    examples = load_examples([s.id for s in picked], pred_dir, root, "val", scores=picked)
    titled = [
        replace(e, title=f"{'best' if n < EXAMPLE_COUNT else 'worst'}\n{s.id}\nmIoU {Score(s.miou)} %")
        for n, (e, s) in enumerate(zip(examples, picked, strict=True))
    ]
    return titled, len(scores)


def _examples_page(examples: list[Example], scored: int, pred_dir: Path, synthetic: bool) -> Page:
    page = Page("qualitative results", synthetic)
    page.title("Best and worst val frames")
    page.note(
        f"Each of the {scored} val frames in {pred_dir.name}/ scored on its own (mIoU over the classes in its ground "
        "truth or prediction); shown are the best and the worst. Error map: red wrong, black right, white ignored."
    )
    aspect = examples[0].image.shape[0] / examples[0].image.shape[1]
    qualitative_panel(examples, page.plot_area(len(examples) * (1.7 * aspect + 0.3) + 1.2, (0.5, 0, 0, 0.3), 0.1))
    return page


def is_synthetic_run(runs: RunFiles, evaluation: Mapping[str, Any], root: Path | None) -> bool:
    """Synthetic if the training config, the evaluation or the dataset folder says so (any one is enough)."""
    return runs.synthetic or bool((evaluation.get("cityseg") or {}).get("synthetic")) or is_synthetic(root)


def build_report(
    runs_dir: Path, eval_json: Path, out_pdf: Path, pred_dir: Path | None = None, root: Path | None = None
) -> Path:
    """Write the PDF report, its figures (`<out stem>_figures/*.png`) and tables (`<out stem>_tables/*.csv,
    .tex`); returns the PDF path."""
    out_pdf = Path(out_pdf)
    runs, evaluation = load_runs(Path(runs_dir)), load_evaluation(Path(eval_json))
    if root is None and runs.config.get("data_root"):
        root = runs.config["data_root"]
    root = Path(root) if root is not None else None
    tables = [f"{name}{ext}" for name in TABLES for ext in (".csv", ".tex")]
    check_output(out_pdf, CREATOR, "cityseg report", {figures_dir(out_pdf): FIGURE_FILES, tables_dir(out_pdf): tables})
    synthetic, cv = is_synthetic_run(runs, evaluation, root), cv_result(runs.summary)
    examples: list[Example] = []
    with typesetting():
        pages = [
            _results_page(runs, evaluation, cv, synthetic),
            _setup_page(runs, synthetic),
            _cv_page(runs, synthetic),
            _class_page(cv, evaluation, synthetic),
            _confusion_page(evaluation, synthetic),
        ]
        if pred_dir is not None:
            examples, scored = best_and_worst_examples(Path(pred_dir), root)
            pages.append(_examples_page(examples, scored, Path(pred_dir), synthetic))
        model = model_title_of(runs.config.get("config") or {})
        data = "SYNTHETIC data (cityseg synth), not Cityscapes" if synthetic else "Cityscapes data"
        footer = "built from config.json, log.jsonl, folds.json, summary.json and the evaluation JSON"
        write_pdf(pages, out_pdf, f"cityseg report - {data}", CREATOR, f"{model} semantic segmentation", footer)
        figures = {
            "class_iou": class_iou_bars(cv.class_iou_mean, cv.class_iou_std, val_class_iou(evaluation)),
            "curves": training_curves(runs.histories),
            "confusion": confusion_figure(val_confusion(evaluation)),
            **({"examples": qualitative_panel(examples)} if examples else {}),
        }
        for name, figure in figures.items():
            write_bytes(figures_dir(out_pdf) / f"{name}.png", figure_png(figure))
    written = [headline_table(cv, evaluation, synthetic), cv_table(runs), class_results_table(cv, evaluation)]
    write_tables(tables_dir(out_pdf), dict(zip(TABLES, [*written, official_tables(evaluation)[1]], strict=True)))
    return out_pdf
