"""report.pdf, like a paper's results section, built only from run files: results, setup, cross-validation, class
and category tables, confusion matrix and, with --predictions, the best and worst val frames (scored from the
evaluation JSON's per-frame counts when they match the files, else again). Figures and tables are written beside."""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cityseg.errors import UserError, format_paths
from cityseg.evaluation.checks import Problems, find_pngs, match_to_frames, single_matches
from cityseg.fileio import file_sha256, read_json_dict
from cityseg.labels import CATEGORY_NAMES, CLASS_NAMES, NUM_CLASSES
from cityseg.report import layout, plots, results
from cityseg.report.notebook import folds_table, is_synthetic
from cityseg.report.plots import Example
from cityseg.report.results import CvResult, RunFiles, cv_result, finite, load_evaluation, load_runs
from cityseg.report.tables import CellStyle, Score, Table, count, percent
from cityseg.training.model_names import model_title_of

CREATOR = "cityseg report"
FIGURES = ("class_iou", "curves", "confusion", "examples")
TABLES = ("headline", "cv_folds", "classes", "categories")
DASH = "–"


def headline_table(cv: CvResult, evaluation: Mapping[str, Any], synthetic: bool) -> Table:
    """CV mIoU (also at the best epochs), the official val scores and, on Cityscapes, the reference."""
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
    """The headline as plain text (notebook, `make demo`)."""
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
    state = (
        "finished" if full.get("finished") else f"{full.get('epochs_done')} of {count(full['epochs'], 'epoch')} done"
    )
    fixed = summary["folds"] and all(f.get("select") == "last" for f in summary["folds"])
    rule = "the folds' epochs (fixed budget)" if fixed else "the median of the folds' best epochs"
    return (
        f"{runs.configs.get('full', {}).get('n_train', 'all')} train images, {count(full['epochs'], 'epoch')} = {rule} "
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


def _results_page(doc: layout.Document, runs: RunFiles, evaluation: dict, cv: CvResult, headline: Table) -> None:
    config, synthetic = runs.config.get("config") or {}, doc.synthetic
    page = doc.page("results", f"{model_title_of(config)} semantic segmentation: results")
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
    plots.class_iou_bars(cv.class_iou_mean, cv.class_iou_std, results.val_class_iou(evaluation), area, labels)


def _setup_page(doc: layout.Document, runs: RunFiles) -> None:
    page = doc.page("what was trained", "What was trained")
    page.table(results.setup_table(runs, doc.synthetic))
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
    if not doc.synthetic:
        page.heading("Machine, time and code")
        page.table(results.machine_table(runs))


def _cv_page(doc: layout.Document, runs: RunFiles, folds: Table) -> None:
    page = doc.page("cross-validation", "Cross-validation")
    page.table(folds, rules_before=[len(folds.rows) - 1])
    page.note("The epoch each fold is scored at follows the protocol stated under the headline on page 1.")
    page.heading("Full-data fit")
    page.text(full_fit_text(runs))
    page.heading("Training curves")
    room = min(4.6, layout.HEIGHT - layout.BOTTOM - page.cursor)
    plots.training_curves(runs.histories, page.plot_area(room, (0.6, 0.1, 0.1, 0.3), 0.35))


def _class_pages(doc: layout.Document, evaluation: dict, classes: Table, categories: Table) -> None:
    page = doc.page("per-class results", "Per-class results")
    page.note(
        "IoU per class in percent. Cross-validation: mean ± sample std over the folds (a class absent from a fold "
        "is left out of its statistics). Val: the official Cityscapes evaluation; iIoU weighs each instance by its "
        "size, for the classes with instances."
    )
    swatches = [*map(plots.class_colour, range(NUM_CLASSES)), None]
    page.table(classes, swatches=swatches, rules_before=[NUM_CLASSES])
    page.heading("Categories (official)")
    page.table(categories, rules_before=[len(CATEGORY_NAMES)])
    page = doc.page("confusion matrix", "Confusion matrix on val")
    page.note(
        "Each row is a ground-truth class, normalised to 100: where that class's pixels went. Cells of at least "
        "1 % are written in, the diagonal (per-class recall) in bold."
    )
    plots.confusion_figure(results.val_confusion(evaluation), page.plot_area(6.9, (1.25, 0.75, 1.3, 0.1)))


@dataclass(frozen=True)
class FrameScore:
    """How well one frame was segmented; mIoU over the classes present in its ground truth or prediction."""

    id: str
    miou: float
    accuracy: float


def _matched_frames(pred_dir: Path, root: Path, split: str) -> dict[str, tuple[Any, Path]]:
    """Frame id -> (frame, its one prediction) for the frames of `split` that have one; none at all is a user error."""
    from cityseg.data.frames import list_frames

    frames = list_frames(Path(root), split, label_source="ids")
    matches, _extra = match_to_frames(find_pngs(pred_dir), [f.id for f in frames])
    problems = Problems()
    chosen = single_matches({i: paths for i, paths in matches.items() if paths}, problems)
    problems.raise_if_any(f"the predictions in {pred_dir} cannot be shown")
    if not chosen:
        raise UserError(
            f"none of the PNGs in {pred_dir} matches a {split} frame of {root}; predict that split with "
            f"`cityseg predict CHECKPOINT {root} --split {split} --out {pred_dir}`."
        )
    return {frame.id: (frame, chosen[frame.id]) for frame in frames if frame.id in chosen}


def _recorded_scores(pred_dir: Path, root: Path, split: str, evaluation: Mapping | Path | None) -> list | None:
    """The evaluation's per-frame rows when they describe exactly the PNGs now in `pred_dir`, else None."""
    if not isinstance(evaluation, Mapping):
        from cityseg.evaluation import default_json_path

        evaluation = read_json_dict(Path(evaluation or default_json_path(pred_dir, split)))
    try:
        section = evaluation["cityseg"]  # TypeError when the JSON could not be read
        rows = section["frames"]
        if section["split"] != split or Path(section["root"]) != Path(root).resolve() or not rows:
            return None
        matches, extra = match_to_frames(find_pngs(pred_dir), [row["id"] for row in rows])
        current = {i: file_sha256(paths[0]) if len(paths) == 1 else None for i, paths in matches.items()}
        if extra or any(current[row["id"]] != row["sha256"] for row in rows):
            return None
        return [FrameScore(row["id"], float(row["miou"]), float(row["pixel_accuracy"])) for row in rows]
    except (KeyError, TypeError, ValueError, OSError):  # an older or foreign JSON: score again
        return None


def score_frames(
    pred_dir: Path, root: Path, split: str = "val", evaluation: Mapping | Path | None = None
) -> list[FrameScore]:
    """Every frame's own score, worst first: from `evaluation` when it scored these files, else again."""
    from cityseg.evaluation import evaluate

    scores = _recorded_scores(Path(pred_dir), root, split, evaluation) or [
        FrameScore(row["id"], row["miou"], row["pixel_accuracy"])
        for row in evaluate(pred_dir, root, split, engine="fast")["cityseg"]["frames"]
    ]
    return sorted(scores, key=lambda s: (s.miou if math.isfinite(s.miou) else -1.0, s.id))


def load_examples(
    frame_ids: Sequence[str], pred_dir: Path, root: Path, split: str = "val", scores: Sequence[FrameScore] = ()
) -> list[Example]:
    """Image, ground truth and prediction (trainIds) of the given frames, titled with their id (and score)."""
    from cityseg.data.frames import check_same_size, read_image, read_train_ids

    by_id = _matched_frames(Path(pred_dir), root, split)
    score_of = {s.id: s for s in scores}
    missing = [i for i in frame_ids if i not in by_id]
    if missing:
        raise UserError(f"no prediction in {pred_dir} for {format_paths(missing)}; predict the {split} split first.")
    examples = []
    for fid in frame_ids:
        frame, pred_path = by_id[fid]
        image, truth = read_image(frame.image), read_train_ids(frame.label_ids, label_source="ids")
        prediction = read_train_ids(pred_path, label_source="ids")
        check_same_size(image, prediction, frame.image, pred_path)  # the evaluation refuses other sizes too
        title = fid if fid not in score_of else f"{fid}\nmIoU {percent(score_of[fid].miou)} %"
        examples.append(Example(title, image, truth, prediction))
    return examples


def best_and_worst(scores: Sequence[FrameScore], count: int = 2) -> list[FrameScore]:
    """The `count` best and `count` worst frames (scores sorted worst first), best first, no duplicates."""
    finite = [s for s in scores if math.isfinite(s.miou)]
    best = list(reversed(finite[-count:]))
    worst = [s for s in finite[:count] if s not in best]
    return best + worst


def _examples_page(doc: layout.Document, pred_dir: Path, root: Path | None, evaluation: Mapping) -> list[Example]:
    """The best and the worst two val frames by their own mIoU (the evaluation's per-frame scores), titled so."""
    if root is None or not root.is_dir():
        raise UserError(
            f"the dataset folder for the qualitative examples ({root or 'unknown'}) does not exist; pass --root "
            "with the Cityscapes folder the predictions were made from, or leave out --predictions."
        )
    scores = score_frames(pred_dir, root, "val", evaluation)
    picked = best_and_worst(scores, count=2)  # the best ones first
    examples = load_examples([s.id for s in picked], pred_dir, root, "val", scores=picked)
    examples = [replace(e, title=f"{'best' if n < 2 else 'worst'}\n{e.title}") for n, e in enumerate(examples)]
    page = doc.page("qualitative results", "Best and worst val frames")
    page.note(
        f"Each of the {len(scores)} val frames in {pred_dir.name}/ scored on its own (mIoU over the classes in its "
        "ground truth or prediction); shown are the best and the worst two. Error map: red wrong, black right, "
        "white ignored."
    )
    aspect = examples[0].image.shape[0] / examples[0].image.shape[1]
    plots.qualitative_panel(examples, page.plot_area(4 * (1.7 * aspect + 0.3) + 1.2, (0.5, 0, 0, 0.3), 0.1))
    return examples


def is_synthetic_run(runs: RunFiles, evaluation: Mapping[str, Any], root: Path | None) -> bool:
    """Synthetic if the training config, the evaluation or the dataset folder says so (any one is enough)."""
    return runs.synthetic or bool((evaluation.get("cityseg") or {}).get("synthetic")) or is_synthetic(root)


def build_report(
    runs_dir: Path, eval_json: Path, out_pdf: Path, pred_dir: Path | None = None, root: Path | None = None
) -> Path:
    """Write the PDF, its figures and its tables beside it; returns the PDF path."""
    out_pdf, runs, evaluation = Path(out_pdf), load_runs(Path(runs_dir)), load_evaluation(Path(eval_json))
    root = Path(root) if root is not None else Path(runs.config["data_root"]) if runs.config.get("data_root") else None
    synthetic, cv = is_synthetic_run(runs, evaluation, root), cv_result(runs.summary)
    doc = layout.Document(out_pdf, CREATOR, synthetic)
    doc.check(TABLES, FIGURES)
    tables = [headline_table(cv, evaluation, synthetic), cv_table(runs), class_results_table(cv, evaluation)]
    tables = dict(zip(TABLES, [*tables, official_tables(evaluation)[1]], strict=True))
    with layout.typesetting():
        _results_page(doc, runs, evaluation, cv, tables["headline"])
        _setup_page(doc, runs)
        _cv_page(doc, runs, tables["cv_folds"])
        _class_pages(doc, evaluation, tables["classes"], tables["categories"])
        examples = _examples_page(doc, Path(pred_dir), root, evaluation) if pred_dir is not None else []
        figures = {
            "class_iou": plots.class_iou_bars(cv.class_iou_mean, cv.class_iou_std, results.val_class_iou(evaluation)),
            "curves": plots.training_curves(runs.histories),
            "confusion": plots.confusion_figure(results.val_confusion(evaluation)),
            **({"examples": plots.qualitative_panel(examples)} if examples else {}),
        }
    data = "SYNTHETIC data (cityseg synth), not Cityscapes" if synthetic else "Cityscapes data"
    subject = f"{model_title_of(runs.config.get('config') or {})} semantic segmentation"
    footer = "built from config.json, log.jsonl, folds.json, summary.json and the evaluation JSON"
    doc.write(f"cityseg report - {data}", subject, footer, tables, figures)
    return out_pdf
