"""The PDF report: a few A4 pages built only from run files, so it can be rebuilt anywhere without a GPU.

Pages: overview and headline numbers, per-fold table, training curves, per-class IoU, confusion
matrix, qualitative examples (when predictions are given) and the official table. Tables are
real text (copyable, searchable); every page header says whether the data were synthetic.
"""

from __future__ import annotations

import datetime
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from PIL import Image

from cityseg.checkpoint import atomic_write_bytes
from cityseg.errors import UserError
from cityseg.labels import CATEGORY_NAMES, CLASS_NAMES
from cityseg.plots import (
    class_iou_bars,
    confusion_figure,
    figure_png,
    mean_std_text,
    percent,
    qualitative_panel,
    text_page,
    training_curves,
)
from cityseg.report.frames import load_examples, prediction_paths, spread
from cityseg.report.overview import folds_table, is_synthetic
from cityseg.report.runfiles import RunFiles, load_evaluation, load_runs
from cityseg.report.tables import Table

# The reference write-up's val mIoU (U-Net/ResNet-34, 10 epochs, batch 4, Adam 1e-4; NOTES.md).
REFERENCE_MIOU = 66.79
REFERENCE_TEXT = "U-Net/ResNet-34 reference (10 epochs, batch 4, Adam 1e-4, full resolution)"
CREATOR = "cityseg report"
EXAMPLE_COUNT = 3
# Text is embedded as TrueType (not Type 3) so PDF readers and text extractors get real characters.
PDF_RC = {"pdf.fonttype": 42, "ps.fonttype": 42}


@dataclass(frozen=True)
class Page:
    """One report page; `figure_name` is set for plots that are also written as PNGs for the README."""

    figure: Figure
    figure_name: str | None = None


def figures_dir(out_pdf: Path) -> Path:
    """`report.pdf` -> `report_figures/`, the folder the README embeds figures from."""
    out_pdf = Path(out_pdf)
    return out_pdf.with_name(out_pdf.stem + "_figures")


def data_source(synthetic: bool) -> str:
    """The phrase every page header carries, so no synthetic number is mistaken for a Cityscapes result."""
    return "SYNTHETIC data (cityseg synth), not Cityscapes" if synthetic else "Cityscapes data"


# ----------------------------------------------------------------------------------------------------------
# Page contents
# ----------------------------------------------------------------------------------------------------------


def _size_text(value: Any, unset: str = "full resolution") -> str:
    return unset if not value else f"{value[0]}x{value[1]}"


def total_seconds(runs: RunFiles) -> float:
    """Training time summed over every epoch of every run (folds and the full fit)."""
    return sum(float(row.get("seconds") or 0.0) for rows in runs.histories.values() for row in rows)


def throughput_text(runs: RunFiles) -> str:
    """Median training speed over all epochs, with how long the GPU waited for data: a starving loader shows here."""
    rows = [row for rows in runs.histories.values() for row in rows]

    def median(key: str) -> float | None:
        values = [float(row[key]) for row in rows if row.get(key) is not None]
        return float(np.median(values)) if values else None

    speed, wait, peak = median("images_per_s"), median("data_wait_share"), median("peak_memory_gb")
    parts = [f"{speed:.1f} img/s" if speed is not None else "not logged"]
    if wait is not None:
        parts.append(f"{100 * wait:.0f}% of it waiting for data")
    if peak is not None:
        parts.append(f"peak GPU memory {peak:.1f} GiB")
    return ", ".join(parts) + " (medians over all epochs)"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def trained_table(runs: RunFiles, data_root: Path | None, synthetic: bool) -> Table:
    """What was trained, on what and where: enough to reproduce or question the numbers."""
    record = runs.config  # the first fold's config.json: the cross-validation settings
    cfg = record.get("config") or {}
    hardware = record.get("hardware") or {}
    git = record.get("git") or {}
    versions = record.get("versions") or {}
    device = hardware.get("gpu") or hardware.get("device") or cfg.get("device")
    sha = git.get("sha") or "unknown"
    full_epochs = (runs.summary.get("full") or {}).get("epochs")
    selection = "last epoch (fixed budget)" if cfg.get("select") == "last" else f"best by {cfg.get('select')}"
    rows = [
        ("recipe", cfg.get("recipe")),
        ("model", f"U-Net, ResNet-34 encoder, encoder weights: {cfg.get('encoder_weights') or 'none (from scratch)'}"),
        ("augmentations", ", ".join(cfg.get("aug") or ()) or "none"),
        ("image size / crop", f"{_size_text(cfg.get('size'))} / {_size_text(cfg.get('crop'), 'none')}"),
        ("optimisation", f"{cfg.get('optimizer')} lr {cfg.get('lr')}, {cfg.get('schedule')} schedule, "
                         f"batch {cfg.get('batch_size')}, loss {cfg.get('loss')}"),
        ("epochs", f"{cfg.get('epochs')} per fold, {selection}; full-data fit: "
                   f"{full_epochs if full_epochs is not None else 'not trained yet'} on the folds' lr schedule"),
        ("changed from the recipe", _changes_text(cfg)),
        ("data", f"{'synthetic (cityseg synth)' if synthetic else 'Cityscapes'} at "
                 f"{Path(data_root).resolve() if data_root else record.get('data_root')}"),
        ("folds", f"{runs.folds['k']} folds split by {runs.folds['split']} (seed {runs.folds.get('seed')})"),
        ("hardware", f"{record.get('world_size') or 1} x {device}, {hardware.get('cpu_count')} CPU cores"),
        ("training time", f"{_duration(total_seconds(runs))} (all folds and the full fit)"),
        ("throughput", throughput_text(runs)),
        ("code", f"git {sha[:12]}{' (uncommitted changes)' if git.get('dirty') else ''}, "
                 f"torch {versions.get('torch')}, smp {versions.get('segmentation-models-pytorch')}"),
    ]
    return Table.build(("", ""), rows)


def _changes_text(cfg: dict[str, Any]) -> str:
    """The resolved fields that differ from the run's recipe (machine fields aside), as 'field recipe -> run'."""
    from cityseg.config import TrainConfig, recipe_differences, value_text

    changes = recipe_differences(TrainConfig.from_dict(cfg)) if cfg else []
    return "; ".join(f"{name} {value_text(recipe)} -> {value_text(run)}" for name, recipe, run in changes) or "nothing"


def headline_text(runs: RunFiles, evaluation: dict[str, Any], synthetic: bool) -> str:
    """CV mIoU mean ± std (no selection, and the optimistic selected one), the official val mIoU and the reference."""
    from cityseg.cv import summary_text

    summary = runs.summary
    val = float(evaluation["averageScoreClasses"])
    lines = [
        summary_text(summary),
        f"Validation mIoU (official cityscapesscripts): {percent(val)} %  "
        f"(iIoU {percent(evaluation['averageScoreInstClasses'])} %, "
        f"categories {percent(evaluation['averageScoreCategories'])} %)",
        f"Reference, {REFERENCE_TEXT}: {REFERENCE_MIOU:.2f} %",
    ]
    if synthetic:
        lines.append("The data are SYNTHETIC, so the comparison with the 66.79 reference is NOT meaningful:\n"
                     "these numbers only show that the pipeline runs end to end.")
    elif math.isfinite(val):
        lines.append(f"Difference to the reference: {100 * val - REFERENCE_MIOU:+.2f} points.")
    return "\n".join(lines)


def cv_table(runs: RunFiles) -> Table:
    """Per fold: the scored epoch's val loss and mIoU (the headline), then its own best epoch and mIoU (selected on
    the same fold, optimistic); the folds' mean ± std as the last row."""
    summary = runs.summary
    cities = {row[0]: row[1] for row in folds_table(runs.folds).rows}
    rows = [(str(f["fold"]), cities.get(str(f["fold"]), ""), f["epoch"] or "n/a", _loss(f["val_loss"]),
             percent(f["val_miou"]), f["best_epoch"], percent(f["best_val_miou"])) for f in summary["folds"]]
    losses = [f["val_loss"] for f in summary["folds"] if f["val_loss"] is not None]
    selected = summary["selected"]
    rows.append(("mean ± std", "", "", _loss(float(np.mean(losses))) if losses else "n/a",
                 mean_std_text(summary["miou_mean"], summary["miou_std"]), "",
                 mean_std_text(selected["miou_mean"], selected["miou_std"])))
    return Table.build(("fold", "validation cities", "epoch", "val loss", "mIoU (%)", "best epoch", "best mIoU (%)"),
                       rows, title="cross-validation: every fold at the full fit's epoch count; best epoch chosen on "
                       "the same fold (optimistic)")


def full_fit_text(runs: RunFiles) -> str:
    """How the final model was trained: all train images, for the epoch count the folds chose."""
    summary = runs.summary
    full = summary.get("full")
    if not full:
        return "No full-data fit yet: `cityseg cv ... --resume` trains it once every fold is finished."
    n_train = runs.configs.get("full", {}).get("n_train", "all")
    state = "finished" if full.get("finished") else f"{full.get('epochs_done')} of {full.get('epochs')} epochs done"
    rule = "the folds' epochs (fixed budget)" if summary["folds"] and all(
        f["select"] == "last" for f in summary["folds"]) else "the median of the folds' best epochs"
    horizon = full.get("schedule_epochs", full["epochs"])
    return (f"{n_train} train images, {full['epochs']} epochs = {rule} (chosen: {summary['chosen_epochs']}), on the "
            f"folds' {horizon}-epoch lr schedule stopped there; {state}. Its best.pt made the validation predictions.")


def _loss(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


def official_tables(evaluation: dict[str, Any]) -> tuple[Table, Table]:
    """The official per-class and per-category IoU / iIoU tables in percent, means as the last rows."""
    classes = [(name, percent(evaluation["classScores"][name]), percent(evaluation["classInstScores"][name]))
               for name in CLASS_NAMES]
    classes.append(("mean (mIoU / iIoU)", percent(evaluation["averageScoreClasses"]),
                    percent(evaluation["averageScoreInstClasses"])))
    categories = [(name, percent(evaluation["categoryScores"][name]), percent(evaluation["categoryInstScores"][name]))
                  for name in CATEGORY_NAMES]
    categories.append(("mean", percent(evaluation["averageScoreCategories"]),
                       percent(evaluation["averageScoreInstCategories"])))
    return (Table.build(("class", "IoU (%)", "iIoU (%)"), classes),
            Table.build(("category", "IoU (%)", "iIoU (%)"), categories))


def val_class_iou(evaluation: dict[str, Any]) -> list[float]:
    """Official per-class IoU in trainId order."""
    return [float(evaluation["classScores"][name]) for name in CLASS_NAMES]


def val_confusion(evaluation: dict[str, Any]) -> np.ndarray:
    """(19, 19) counts from the official 34x34 confMatrix, rows = ground truth, in trainId order."""
    from cityseg.evaluation.output import summary

    return np.asarray(summary(evaluation)["confusion_train_ids"], dtype=np.int64)


# ----------------------------------------------------------------------------------------------------------
# Assembly
# ----------------------------------------------------------------------------------------------------------


def _stamp(fig: Figure, header: str, title: str) -> Figure:
    """Title a plot page with the data-source header above it (a suptitle, so the layout makes room)."""
    fig.suptitle(f"{header}\n{title}", x=0.01, ha="left", fontsize=9)
    return fig


def _resolve_root(root: Path | None, runs: RunFiles) -> Path | None:
    if root is not None:
        return Path(root)
    recorded = runs.config.get("data_root")
    return Path(recorded) if recorded else None


def _examples_page(pred_dir: Path, root: Path | None, header: str) -> Page:
    """Image | ground truth | prediction | error for a few frames spread over the sorted val predictions."""
    if root is None or not root.is_dir():
        raise UserError(
            f"the dataset folder for the qualitative examples ({root or 'unknown'}) does not exist; pass --root "
            "with the Cityscapes folder the predictions were made from, or leave out --predictions."
        )
    ids = spread(list(prediction_paths(pred_dir)), EXAMPLE_COUNT)
    examples = load_examples(ids, pred_dir, root, split="val")
    title = f"qualitative examples: {len(examples)} val frames from {pred_dir.name}/"
    return Page(_stamp(qualitative_panel(examples), header, title), "examples")


def is_synthetic_run(runs: RunFiles, evaluation: dict[str, Any], root: Path | None) -> bool:
    """Synthetic if the training config, the evaluation or the dataset folder says so (any one is enough)."""
    return runs.synthetic or bool(evaluation.get("cityseg", {}).get("synthetic")) or is_synthetic(root)


def build_pages(runs: RunFiles, evaluation: dict[str, Any], pred_dir: Path | None, root: Path | None,
                synthetic: bool) -> list[Page]:
    """Every page of the report, in order."""
    header = f"cityseg report | {data_source(synthetic)} | runs: {runs.runs_dir.resolve()}"
    overview = text_page(
        [
            ("U-Net / ResNet-34 semantic segmentation: report", ""),
            ("Headline", headline_text(runs, evaluation, synthetic)),
            ("What was trained", trained_table(runs, root, synthetic).text(header=False)),
        ],
        header,
        footer=f"built {datetime.datetime.now():%Y-%m-%d %H:%M} from {runs.runs_dir.resolve()} (config.json, log.jsonl, "
        "folds.json, summary.json) and the evaluation JSON",
    )
    folds_page = text_page(
        [
            ("Cross-validation", cv_table(runs).text()),
            ("Folds", folds_table(runs.folds).text()),
            ("Full-data fit", full_fit_text(runs)),
        ],
        header,
    )
    pages = [Page(overview), Page(folds_page)]
    curves = training_curves(runs.histories)
    pages.append(Page(_stamp(curves, header, "training curves: every fold and the full-data fit"), "curves"))
    bars = class_iou_bars(runs.summary["class_iou_mean"], runs.summary["class_iou_std"], val_class_iou(evaluation),
                          title="")
    pages.append(Page(_stamp(bars, header, "IoU per class: cross-validation mean ± std beside the official val score"),
                      "class_iou"))
    confusion = confusion_figure(val_confusion(evaluation), title="")
    pages.append(Page(_stamp(confusion, header, "normalised confusion matrix on val (rows: ground truth)"), "confusion"))
    if pred_dir is not None:
        pages.append(_examples_page(Path(pred_dir), root, header))
    class_table, category_table = official_tables(evaluation)
    pages.append(Page(text_page([("Official evaluation (cityscapesscripts), validation set", class_table.text()),
                                 ("Categories", category_table.text())], header)))
    return pages


def _is_ours_pdf(path: Path) -> bool:
    """A PDF this command wrote carries its Creator string in the (uncompressed) info dictionary."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return data.startswith(b"%PDF") and f"/Creator ({CREATOR})".encode() in data


def _is_ours_png(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            return image.info.get("Software") == "cityseg"
    except OSError:
        return False


def _check_outputs(out_pdf: Path, names: Sequence[str]) -> None:
    """Refuse, before any drawing, to replace files this command did not write."""
    if out_pdf.is_dir():
        raise UserError(f"--out {out_pdf} is a folder; pass a file name ending in .pdf.")
    if out_pdf.exists() and not _is_ours_pdf(out_pdf):
        raise UserError(f"{out_pdf} exists and was not written by `cityseg report`; it is left alone. Pass another "
                        "--out or move that file away.")
    folder = figures_dir(out_pdf)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file, but the report writes its figures into a folder of that name; move it away.")
    for name in names:
        png = folder / f"{name}.png"
        if png.exists() and not _is_ours_png(png):
            raise UserError(f"{png} exists and was not written by `cityseg report`; it is left alone. Pass another "
                            "--out or move that file away.")


def write_pdf(pages: Sequence[Page], out_pdf: Path, title: str) -> None:
    """Write all pages atomically, with title and date in the PDF metadata."""
    metadata = {"Title": title, "Creator": CREATOR, "Subject": "U-Net/ResNet-34 semantic segmentation on Cityscapes",
                "CreationDate": datetime.datetime.now(datetime.timezone.utc)}
    buffer = io.BytesIO()  # PdfPages seeks, so render in memory and write the file in one go
    with matplotlib.rc_context(PDF_RC), PdfPages(buffer, metadata=metadata) as pdf:
        for page in pages:
            pdf.savefig(page.figure)
    _write_readable(out_pdf, buffer.getvalue())


def _write_readable(path: Path, data: bytes) -> None:
    """Atomic write, then the usual 0644 (the temp file's private 0600 would surprise whoever shares the report)."""
    atomic_write_bytes(path, lambda handle: handle.write(data))
    path.chmod(0o644)


def build_report(runs_dir: Path, eval_json: Path, out_pdf: Path, pred_dir: Path | None = None,
                 root: Path | None = None) -> Path:
    """Write the PDF report and its figures (PNGs in `<out stem>_figures/`); returns the PDF path."""
    out_pdf = Path(out_pdf)
    runs = load_runs(Path(runs_dir))
    evaluation = load_evaluation(Path(eval_json))
    root = _resolve_root(root, runs)
    _check_outputs(out_pdf, ("curves", "class_iou", "confusion", "examples"))
    synthetic = is_synthetic_run(runs, evaluation, root)
    pages = build_pages(runs, evaluation, pred_dir, root, synthetic)
    write_pdf(pages, out_pdf, title=f"cityseg report - {data_source(synthetic)}")
    folder = figures_dir(out_pdf)
    for page in pages:
        if page.figure_name:
            png = figure_png(page.figure)
            _write_readable(folder / f"{page.figure_name}.png", png)
    return out_pdf
