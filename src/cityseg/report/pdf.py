"""report.pdf, written like a paper's results section and built only from run files: results, what was trained,
cross-validation, per-class and per-category tables, confusion matrix, and with --predictions the best and worst
val frames; beside it the figures as PNGs and the tables as CSV and LaTeX. A report of synthetic data says so on
every page and prints nothing machine, time or commit dependent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from cityseg.errors import UserError
from cityseg.labels import CATEGORY_NAMES, CLASS_NAMES, NUM_CLASSES
from cityseg.report import frames, layout, plots, results
from cityseg.report.notebook import folds_table, is_synthetic
from cityseg.report.results import CvResult, cv_result, finite, val_class_iou, val_confusion
from cityseg.report.runfiles import RunFiles, load_evaluation, load_runs
from cityseg.report.tables import CellStyle, Score, Table
from cityseg.training.model_names import model_title_of

CREATOR = "cityseg report"
FIGURES = ("class_iou", "curves", "confusion", "examples")
TABLES = ("headline", "cv_folds", "classes", "categories")
DASH = "–"


def headline_table(cv: CvResult, evaluation: Mapping[str, Any], synthetic: bool) -> Table:
    """CV mIoU under its protocol (and at each fold's best epoch), the official val scores in percent, and the
    reference beside real Cityscapes val numbers only."""
    best, reference = cv.selected is not None, not synthetic

    def row(label: str, value: object, at_best: object = DASH, ref: str = DASH) -> list[object]:
        return [label, value, *[at_best] * best, *[ref] * reference]

    selected = Score(cv.selected.get("miou_mean"), cv.selected.get("miou_std")) if best else DASH
    val_miou, reference_miou = Score(evaluation["averageScoreClasses"]), f"{results.REFERENCE_MIOU:.2f}"
    rows = [
        row(f"cross-validation mIoU, {cv.k} folds (mean ± std)", Score(cv.miou_mean, cv.miou_std), selected),
        row("val mIoU, official Cityscapes metric", val_miou, ref=reference_miou),
        row("val iIoU, official Cityscapes metric", Score(evaluation["averageScoreInstClasses"])),
        row("val mIoU over the 7 categories", Score(evaluation["averageScoreCategories"])),
    ]
    return Table.build(row("", "this run (%)", "CV at each fold's best epoch (%)", "reference (%)"), rows)


def headline_text(runs: RunFiles, evaluation: Mapping[str, Any], synthetic: bool) -> str:
    """The headline as plain text (notebook, `make demo`): CV numbers, official val scores, and on real Cityscapes
    the reference with its caveat."""
    keys = ("averageScoreClasses", "averageScoreInstClasses", "averageScoreCategories")
    miou, iiou, categories = (Score(evaluation[key]) for key in keys)
    official = f"Validation mIoU (official cityscapesscripts): {miou} %  (iIoU {iiou} %, categories {categories} %)"
    reference = f"Reference, {results.REFERENCE_TEXT}: {results.REFERENCE_MIOU:.2f} %. {results.REFERENCE_CAVEAT}"
    if synthetic:
        reference = "Synthetic data: these numbers only show that the pipeline runs end to end."
    return "\n".join([results.summary_text(runs.summary), official, reference])


def engine_sentence(evaluation: Mapping[str, Any]) -> str:
    """Which engine computed the val numbers (they are the official metrics either way)."""
    return {
        "official": "Val: computed by cityscapesscripts' own evaluation script.",
        "both": "Val: computed by cityscapesscripts' script and by cityseg's fast engine, checked to agree.",
        "fast": "Val: computed by cityseg's fast engine, identical to cityscapesscripts' script on frames in sorted "
        "order (checked by the test suite).",
    }.get((evaluation.get("cityseg") or {}).get("engine"), "Val: the official metrics of the evaluation JSON.")


def cv_table(runs: RunFiles) -> Table:
    """Per fold: the epoch the headline scores, its val loss and mIoU (and the best epoch's, when recorded)."""
    cv, cities = cv_result(runs.summary), {row[0]: row[1] for row in folds_table(runs.folds).rows}
    best = [["best epoch", "best mIoU (%)"]] if cv.selected is not None else []
    rows = [
        [f["fold"], cities.get(str(f["fold"]), ""), f.get("epoch"), _loss(f.get("val_loss")), Score(f.get("val_miou"))]
        + [x for _ in best for x in (f.get("best_epoch"), Score(f.get("best_val_miou")))]
        for f in cv.folds
    ]
    losses = [f["val_loss"] for f in cv.folds if finite(f.get("val_loss"))]
    mean = ["mean ± std", "", "", _loss(sum(losses) / len(losses) if losses else None)]
    mean.append(Score(cv.miou_mean, cv.miou_std))
    mean += ["", Score(cv.selected.get("miou_mean"), cv.selected.get("miou_std"))] if best else []
    return Table.build(["fold", "validation cities", "epoch", "val loss", "mIoU (%)", *sum(best, [])], [*rows, mean])


def _loss(value: float | None) -> str:
    return f"{value:.4f}" if finite(value) else "n/a"


def full_fit_text(runs: RunFiles) -> str:
    """How the final model was trained: all train images, for the epoch count the folds chose."""
    summary, full = runs.summary, runs.summary.get("full")
    if not full:
        return "No full-data fit yet: `cityseg cv ... --resume` trains it once every fold is finished."
    state = "finished" if full.get("finished") else f"{full.get('epochs_done')} of {full.get('epochs')} epochs done"
    fixed = summary["folds"] and all(f.get("select") == "last" for f in summary["folds"])
    rule = "the folds' epochs (fixed budget)" if fixed else "the median of the folds' best epochs"
    return (
        f"{runs.configs.get('full', {}).get('n_train', 'all')} train images, {full['epochs']} epochs = {rule} "
        f"(chosen: {summary['chosen_epochs']}), on the folds' {full.get('schedule_epochs', full['epochs'])}-epoch lr "
        f"schedule stopped there; {state}. Its best.pt (RUNS/full/best.pt) is the final model, the one to predict "
        "val with."
    )


def official_tables(evaluation: Mapping[str, Any]) -> tuple[Table, Table]:
    """The official per-class and per-category IoU / iIoU tables in percent, the means as the last rows."""
    tables = []
    for kind, names, plural, mean in (
        ("class", CLASS_NAMES, "Classes", "mean (mIoU / iIoU)"),
        ("category", CATEGORY_NAMES, "Categories", "mean"),
    ):
        rows = [(n, Score(evaluation[f"{kind}Scores"][n]), Score(evaluation[f"{kind}InstScores"][n])) for n in names]
        rows.append((mean, Score(evaluation[f"averageScore{plural}"]), Score(evaluation[f"averageScoreInst{plural}"])))
        tables.append(Table.build((kind, "IoU (%)", "iIoU (%)"), rows))
    return tables[0], tables[1]


def class_results_table(cv: CvResult, evaluation: Mapping[str, Any]) -> Table:
    """Per class: CV IoU mean ± std (headline protocol; at the best epoch too when known), val IoU and iIoU."""
    best = [cv.selected] if cv.selected is not None and cv.selected.get("class_iou_mean") is not None else []
    rows = []
    for i, name in enumerate(CLASS_NAMES):
        at_best = [Score(s["class_iou_mean"][i], (s.get("class_iou_std") or [None] * NUM_CLASSES)[i]) for s in best]
        val = [Score(evaluation["classScores"][name]), Score(evaluation["classInstScores"][name])]
        rows.append([name, Score(cv.class_iou_mean[i], cv.class_iou_std[i]), *at_best, *val])
    at_best = [Score(s["miou_mean"], s.get("miou_std")) for s in best]
    val = [Score(evaluation["averageScoreClasses"]), Score(evaluation["averageScoreInstClasses"])]
    rows.append(["mean", Score(cv.miou_mean, cv.miou_std), *at_best, *val])
    columns = ["class", "CV IoU (%)", *["CV at best epoch (%)"] * len(best), "val IoU (%)", "val iIoU (%)"]
    return Table.build(columns, rows)


def _results_page(runs: RunFiles, evaluation: dict, cv: CvResult, headline: Table, synthetic: bool) -> layout.Page:
    page, config = layout.Page("results", synthetic), runs.config.get("config") or {}
    page.title(f"{model_title_of(config)} semantic segmentation: results")
    where = "Demo run on synthetic street scenes" if synthetic else f"Cityscapes  ·  {results.git_text(runs.config)}"
    page.text(f"{where}  ·  recipe {config.get('recipe')}  ·  {cv.k}-fold cross-validation by {cv.split}", color="0.3")
    if synthetic:
        page.banner(
            "SYNTHETIC DATA. These numbers come from synthetic street scenes (cityseg synth): they only show that "
            "the pipeline trains and measures end to end and say nothing about Cityscapes, so no reference number "
            "is shown."
        )
    page.heading("Headline")
    page.table(headline, styles={(0, 1): CellStyle(weight="bold")})
    page.note(f"Cross-validation protocol: {cv.protocol.rstrip('.')}.")
    if cv.selected is not None:
        page.note("The best-epoch column is optimistic: each fold's best epoch is chosen on the cities it scores.")
    page.note(engine_sentence(evaluation))
    if not synthetic:
        page.note(f"Reference: {results.REFERENCE_TEXT}. {results.REFERENCE_CAVEAT}")
    page.heading("IoU per class: cross-validation against val")
    labels = (f"cross-validation, {cv.k} folds: mean ± std", "val, official metric")
    area = page.plot_area(None, (0.9, 0.1, 0.45, 0.05))
    plots.class_iou_bars(cv.class_iou_mean, cv.class_iou_std, val_class_iou(evaluation), area, labels)
    return page


def _setup_page(runs: RunFiles, synthetic: bool) -> layout.Page:
    page = layout.Page("what was trained", synthetic)
    page.title("What was trained")
    page.table(results.setup_table(runs, synthetic))
    page.heading("Changes from the recipe")
    differences = results.recipe_differences(runs)
    if differences is None:
        page.text("Cannot be listed: config.json was not written by this version of cityseg.")
    elif differences:
        page.table(Table.build(("field", "recipe", "this run"), differences))
    else:
        page.text("None: the run used its recipe as defined.")
    page.heading("Folds")
    page.table(folds_table(runs.folds))
    if not synthetic:
        page.heading("Machine, time and code")
        page.table(results.machine_table(runs))
    return page


def _cv_page(runs: RunFiles, folds: Table, synthetic: bool) -> layout.Page:
    page = layout.Page("cross-validation", synthetic)
    page.title("Cross-validation")
    page.table(folds, rules_before=[len(folds.rows) - 1])
    page.note("The epoch each fold is scored at follows the protocol stated under the headline on page 1.")
    page.heading("Full-data fit")
    page.text(full_fit_text(runs))
    page.heading("Training curves")
    room = min(4.6, layout.HEIGHT - layout.BOTTOM - page.cursor)
    plots.training_curves(runs.histories, page.plot_area(room, (0.6, 0.1, 0.1, 0.3), 0.35))
    return page


def _class_pages(evaluation: dict, classes: Table, categories: Table, synthetic: bool) -> list[layout.Page]:
    page = layout.Page("per-class results", synthetic)
    page.title("Per-class results")
    page.note(
        "IoU per class in percent. Cross-validation: mean ± sample std over the folds (a class absent from a fold "
        "is left out of its statistics). Val: the official Cityscapes evaluation; iIoU weighs each instance by its "
        "size, for the classes with instances."
    )
    swatches = [*map(plots.class_colour, range(NUM_CLASSES)), None]
    page.table(classes, swatches=swatches, rules_before=[NUM_CLASSES])
    page.heading("Categories (official)")
    page.table(categories, rules_before=[len(CATEGORY_NAMES)])
    confusion = layout.Page("confusion matrix", synthetic)
    confusion.title("Confusion matrix on val")
    confusion.note(
        "Each row is a ground-truth class, normalised to 100: where that class's pixels went. Cells of at least "
        "1 % are written in, the diagonal (per-class recall) in bold."
    )
    plots.confusion_figure(val_confusion(evaluation), confusion.plot_area(6.9, (1.25, 0.75, 1.3, 0.1)))
    return [page, confusion]


def _examples_page(
    pred_dir: Path, root: Path | None, evaluation: Mapping[str, Any], synthetic: bool
) -> tuple[layout.Page, list[plots.Example]]:
    """The best and the worst two val frames by their own mIoU (the evaluation's per-frame scores), titled so."""
    if root is None or not root.is_dir():
        raise UserError(
            f"the dataset folder for the qualitative examples ({root or 'unknown'}) does not exist; pass --root "
            "with the Cityscapes folder the predictions were made from, or leave out --predictions."
        )
    scores = frames.score_frames(pred_dir, root, "val", evaluation)
    picked = frames.best_and_worst(scores, count=2)  # the best ones first
    examples = frames.load_examples([s.id for s in picked], pred_dir, root, "val", scores=picked)
    titles = [f"{'best' if n < 2 else 'worst'}\n{s.id}\nmIoU {Score(s.miou)} %" for n, s in enumerate(picked)]
    examples = [replace(e, title=t) for e, t in zip(examples, titles, strict=True)]
    page = layout.Page("qualitative results", synthetic)
    page.title("Best and worst val frames")
    page.note(
        f"Each of the {len(scores)} val frames in {pred_dir.name}/ scored on its own (mIoU over the classes in its "
        "ground truth or prediction); shown are the best and the worst two. Error map: red wrong, black right, "
        "white ignored."
    )
    aspect = examples[0].image.shape[0] / examples[0].image.shape[1]
    plots.qualitative_panel(examples, page.plot_area(4 * (1.7 * aspect + 0.3) + 1.2, (0.5, 0, 0, 0.3), 0.1))
    return page, examples


def is_synthetic_run(runs: RunFiles, evaluation: Mapping[str, Any], root: Path | None) -> bool:
    """Synthetic if the training config, the evaluation or the dataset folder says so (any one is enough)."""
    return runs.synthetic or bool((evaluation.get("cityseg") or {}).get("synthetic")) or is_synthetic(root)


def build_report(
    runs_dir: Path, eval_json: Path, out_pdf: Path, pred_dir: Path | None = None, root: Path | None = None
) -> Path:
    """Write the PDF report, its figures (`<out stem>_figures/*.png`) and tables (`<out stem>_tables/*.csv,
    .tex`); returns the PDF path."""
    out_pdf, runs, evaluation = Path(out_pdf), load_runs(Path(runs_dir)), load_evaluation(Path(eval_json))
    root = Path(root) if root is not None else Path(runs.config["data_root"]) if runs.config.get("data_root") else None
    figures, tables_dir = layout.figures_dir(out_pdf), layout.tables_dir(out_pdf)
    side_files = {
        figures: [f"{n}.png" for n in FIGURES],
        tables_dir: [f"{n}{e}" for n in TABLES for e in (".csv", ".tex")],
    }
    layout.check_output(out_pdf, CREATOR, "cityseg report", side_files)
    synthetic, cv = is_synthetic_run(runs, evaluation, root), cv_result(runs.summary)
    tables = [headline_table(cv, evaluation, synthetic), cv_table(runs), class_results_table(cv, evaluation)]
    tables = dict(zip(TABLES, [*tables, official_tables(evaluation)[1]], strict=True))
    with layout.typesetting():
        pages = [
            _results_page(runs, evaluation, cv, tables["headline"], synthetic),
            _setup_page(runs, synthetic),
            _cv_page(runs, tables["cv_folds"], synthetic),
            *_class_pages(evaluation, tables["classes"], tables["categories"], synthetic),
        ]
        examples: list[plots.Example] = []
        if pred_dir is not None:
            page, examples = _examples_page(Path(pred_dir), root, evaluation, synthetic)
            pages.append(page)
        data = "SYNTHETIC data (cityseg synth), not Cityscapes" if synthetic else "Cityscapes data"
        subject = f"{model_title_of(runs.config.get('config') or {})} semantic segmentation"
        footer = "built from config.json, log.jsonl, folds.json, summary.json and the evaluation JSON"
        layout.write_pdf(pages, out_pdf, f"cityseg report - {data}", CREATOR, subject, footer)
        for name, figure in {
            "class_iou": plots.class_iou_bars(cv.class_iou_mean, cv.class_iou_std, val_class_iou(evaluation)),
            "curves": plots.training_curves(runs.histories),
            "confusion": plots.confusion_figure(val_confusion(evaluation)),
            **({"examples": plots.qualitative_panel(examples)} if examples else {}),
        }.items():
            layout.write_bytes(figures / f"{name}.png", plots.figure_png(figure))
    layout.write_tables(tables_dir, tables)
    return out_pdf
