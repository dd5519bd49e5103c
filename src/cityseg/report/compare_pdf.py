"""compare.pdf: the runs table, the paired per-fold comparison, per-class IoU side by side, curves overlaid."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from cityseg.labels import CLASS_NAMES, NUM_CLASSES
from cityseg.report.compare import ComparedRun, Comparison, compare_runs
from cityseg.report.layout import WARNING_RED, Page, check_output, typesetting, write_pdf
from cityseg.report.pdf import sentence
from cityseg.report.plots import class_colour, class_swatches

CREATOR = "cityseg compare"


def run_colours(labels: Sequence[str]) -> dict[str, tuple]:
    """One colour per run, the same in every figure (tab10; classes keep the Cityscapes palette)."""
    cmap = colormaps["tab10"]
    return {label: cmap(i % 10) for i, label in enumerate(labels)}


def draw_class_comparison(ax, runs: Sequence[ComparedRun]) -> None:
    """Grouped horizontal bars of CV IoU per class, one colour per run; class names carry palette swatches."""
    colours = run_colours([r.label for r in runs])
    y = np.arange(NUM_CLASSES)
    height = 0.8 / len(runs)
    for i, run in enumerate(runs):
        values = np.array([np.nan if v is None else 100 * v for v in run.cv.class_iou_mean], dtype=float)
        errors = np.array([np.nan if v is None else 100 * v for v in run.cv.class_iou_std], dtype=float)
        ax.barh(
            y + (i - (len(runs) - 1) / 2) * height,
            values,
            height=height,
            color=colours[run.label],
            xerr=errors,
            error_kw={"elinewidth": 0.6, "capsize": 1.5, "ecolor": "0.2"},
            label=run.label,
        )
    ax.set_yticks(y, CLASS_NAMES, fontsize=7.5)
    ax.invert_yaxis()
    class_swatches(ax, "y")
    ax.set(xlabel="cross-validation IoU (%), mean ± std over folds", xlim=(0, 100))
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7.5, loc="lower right")


def _per_epoch(
    histories: Mapping[str, Sequence[Mapping]], key: str
) -> tuple[list[int], list[float], list[float], list[float]]:
    """Mean, min and max of one logged value over the folds, per epoch (the full fit excluded)."""
    by_epoch: dict[int, list[float]] = {}
    for name, rows in histories.items():
        if name == "full":
            continue
        for row in rows:
            if row.get(key) is not None:
                by_epoch.setdefault(int(row["epoch"]), []).append(float(row[key]))
    epochs = sorted(by_epoch)
    return (
        epochs,
        [float(np.mean(by_epoch[e])) for e in epochs],
        [min(by_epoch[e]) for e in epochs],
        [max(by_epoch[e]) for e in epochs],
    )


def draw_curves_overlaid(ax_miou, ax_loss, runs: Sequence[ComparedRun]) -> None:
    """Val mIoU and train loss per epoch, mean over folds with the folds' range shaded, one colour per run."""
    colours = run_colours([r.label for r in runs])
    for run in runs:
        colour = colours[run.label]
        for ax, key, scale in ((ax_miou, "val_miou", 100.0), (ax_loss, "train_loss", 1.0)):
            epochs, mean, low, high = _per_epoch(run.runs.histories, key)
            if epochs:
                ax.plot(epochs, np.multiply(mean, scale), "-o", ms=3, color=colour, label=f"{run.label} folds")
                ax.fill_between(
                    epochs, np.multiply(low, scale), np.multiply(high, scale), color=colour, alpha=0.15, linewidth=0
                )
        full = run.runs.histories.get("full") or []
        if full:
            ax_loss.plot(
                [r["epoch"] for r in full],
                [r.get("train_loss") for r in full],
                "--",
                color=colour,
                label=f"{run.label} full fit",
            )
    ax_miou.set(xlabel="epoch", ylabel="val mIoU (%)", title="validation mIoU (mean over folds, range shaded)")
    ax_loss.set(xlabel="epoch", ylabel="train loss (log)", yscale="log", title="training loss")
    for ax in (ax_miou, ax_loss):
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if ax.has_data():
            ax.legend(fontsize=7)


def comparison_figure(comparison: Comparison) -> Figure:
    """Per-class IoU side by side and the curves overlaid, as one figure for a notebook."""
    fig = Figure(figsize=(11.0, 6.0), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[1.1, 1.0])
    draw_class_comparison(left.subplots(), comparison.runs)
    draw_curves_overlaid(*right.subplots(2, 1), comparison.runs)
    return fig


def _continued(pages: list[Page], draw, new_page) -> None:
    """Draw a block on the last page, or on a fresh one when it does not fit there (blocks check before drawing)."""
    try:
        draw(pages[-1])
    except ValueError:
        pages.append(new_page())
        draw(pages[-1])


def _protocols(comparison: Comparison) -> str:
    """Which cross-validation protocol the CV column follows, once if the runs agree, else per run."""
    protocols = {run.label: run.cv.protocol for run in comparison.runs}
    if len(set(protocols.values())) == 1:
        return f"CV mIoU: mean ± std over folds; protocol: {next(iter(protocols.values()))}"
    return "CV mIoU follows DIFFERENT protocols: " + "; ".join(f"{label}: {text}" for label, text in protocols.items())


def comparison_pages(comparison: Comparison) -> list[Page]:
    """The pages of compare.pdf (A4 landscape)."""
    synthetic, title = comparison.synthetic, " vs ".join(comparison.labels)

    def new_page() -> Page:
        return Page(f"comparison: {title}", synthetic, landscape=True, source=CREATOR)

    first = new_page()
    first.title(f"Runs compared: {title}")
    if synthetic:
        first.banner(
            "SYNTHETIC DATA in at least one run (cityseg synth): differences only show that the pipeline "
            "reacts to the settings; they say nothing about Cityscapes."
        )
    for mismatch in comparison.mismatches:
        first.paragraph(
            f"Not strictly comparable (compared because it was asked for): {mismatch}.",
            color=WARNING_RED,
            weight="bold",
        )
    first.table(comparison.runs_table())
    first.paragraph(
        sentence(_protocols(comparison)) + " Val: the official Cityscapes metrics in each run's --eval JSON (– where "
        "none was given). Training time: all folds and the full fit; images/s: median over epochs.",
        size=8,
        color="0.25",
    )
    settings = comparison.settings_table()
    first.heading("Settings that differ")
    if settings.rows:
        first.table(settings)
    else:
        first.paragraph("None: every training setting in config.json is the same.")
    pages = [first]
    paired = comparison.paired()
    if len(comparison.runs) > 1:
        _continued(pages, lambda page: page.heading("Paired per-fold comparison"), new_page)
        if not paired:
            pages[-1].paragraph("None: no other run shares the first run's folds with every fold finished.")
        for pair in paired:
            _continued(
                pages,
                lambda page, pair=pair: page.table(pair.table(), rules_before=[len(pair.folds)], after=0.06),
                new_page,
            )
            _continued(pages, lambda page, pair=pair: page.paragraph(pair.verdict(), weight="bold"), new_page)
        if paired:
            _continued(
                pages,
                lambda page: page.paragraph(
                    "Each fold's difference is one sample of the gain, so their spread is the fold-to-fold noise. The "
                    "corrected resampled t-test (Nadeau & Bengio 2003) widens the paired t-test's variance by "
                    "n_val/n_train because the folds share training images.",
                    size=8,
                    color="0.25",
                ),
                new_page,
            )
    table, styles = comparison.class_table()
    page = new_page()
    page.title("IoU per class")
    page.paragraph(
        "IoU in percent; Δ columns: difference to the first run in points, green a gain and red a loss, "
        "bold on a tinted cell where it exceeds the larger of the two runs' fold-to-fold std for that class.",
        size=8,
        color="0.25",
    )
    page.table(table, size=7.5, styles=styles, swatches=[class_colour(i) for i in range(NUM_CLASSES)])
    pages.append(page)
    page = new_page()
    page.title("Per-class IoU and training curves")
    height = page.remaining
    ax_classes = page.axes(height, width=page.text_width * 0.5, left=1.2, bottom=0.5, top=0.1)
    draw_class_comparison(ax_classes, comparison.runs)
    x = page.text_width * 0.5 + 0.3
    width = page.text_width - x
    ax_miou = page.axes(height / 2, x=x, width=width, left=0.6, bottom=0.5, top=0.3)
    page.space(height / 2)
    ax_loss = page.axes(height / 2, x=x, width=width, left=0.6, bottom=0.5, top=0.3)
    draw_curves_overlaid(ax_miou, ax_loss, comparison.runs)
    pages.append(page)
    return pages


def write_comparison(comparison: Comparison, out_pdf: Path) -> Path:
    """Write compare.pdf (fixed metadata, like the report); refuses to replace a PDF it did not write."""
    out_pdf = Path(out_pdf)
    check_output(out_pdf, CREATOR, "cityseg compare")
    data = "SYNTHETIC data" if comparison.synthetic else "Cityscapes data"
    with typesetting():
        pages = comparison_pages(comparison)
    write_pdf(
        pages,
        out_pdf,
        title=f"cityseg compare - {data} - {', '.join(comparison.labels)}",
        creator=CREATOR,
        subject="U-Net/ResNet-34 runs compared",
        footer_note="built from each runs folder's config.json, log.jsonl, folds.json, summary.json and "
        "the evaluation JSONs given",
    )
    return out_pdf


def build_comparison(
    runs_dirs: Sequence[Path],
    out_pdf: Path,
    labels: Sequence[str] | str | None = None,
    evaluations: Sequence[Path | None] | None = None,
    allow_mismatch: bool = False,
) -> Path:
    """`cityseg compare`: load, check and write compare.pdf; returns its path."""
    return write_comparison(compare_runs(runs_dirs, labels, evaluations, allow_mismatch), out_pdf)
