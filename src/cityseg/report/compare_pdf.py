"""compare.pdf (A4 portrait): the runs, the paired per-fold test with its limits, per-class IoU, curves; beside it
the tables as CSV and LaTeX in `<out stem>_tables/`."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from cityseg.labels import NUM_CLASSES
from cityseg.report.compare import TEST_CAVEATS, ComparedRun, Comparison, compare_runs
from cityseg.report.layout import WARNING_RED, Page, check_output, tables_dir, typesetting, write_pdf, write_tables
from cityseg.report.plots import Bars, class_colour, class_swatches, draw_class_bars, run_colours

CREATOR = "cityseg compare"


def _per_epoch(histories: Mapping[str, Sequence[Mapping]], key: str) -> tuple[list[int], np.ndarray]:
    """(epochs, (3, E) mean, min and max of one logged value over the folds); the full fit is left out."""
    by_epoch: dict[int, list[float]] = {}
    for name, rows in histories.items():
        for row in rows if name != "full" else ():
            if row.get(key) is not None:
                by_epoch.setdefault(int(row["epoch"]), []).append(float(row[key]))
    epochs = sorted(by_epoch)
    return epochs, np.array([[f(by_epoch[e]) for e in epochs] for f in (np.mean, min, max)])


def comparison_figure(comparison: Comparison, fig: Figure | None = None) -> Figure:
    """CV IoU per class side by side, one colour per run, and the val mIoU and training loss curves overlaid (mean
    over folds, range shaded, full fit dashed)."""
    fig = fig if fig is not None else Figure(figsize=(11.0, 6.0), layout="constrained")
    runs: Sequence[ComparedRun] = comparison.runs
    colours = run_colours(comparison.labels)
    grid = fig.add_gridspec(2, 2, width_ratios=[1.1, 1.0])
    ax_classes, ax_miou, ax_loss = fig.add_subplot(grid[:, 0]), fig.add_subplot(grid[0, 1]), fig.add_subplot(grid[1, 1])
    bars = [Bars(run.label, run.cv.class_iou_mean, run.cv.class_iou_std, colours[run.label]) for run in runs]
    draw_class_bars(ax_classes, bars, [Patch(color=colours[b.label], label=b.label) for b in bars])
    for run in runs:
        for ax, key, scale in ((ax_miou, "val_miou", 100.0), (ax_loss, "train_loss", 1.0)):
            epochs, (mean, low, high) = _per_epoch(run.runs.histories, key)
            ax.plot(epochs, scale * mean, "-o", ms=3, color=colours[run.label], label=f"{run.label} folds")
            ax.fill_between(epochs, scale * low, scale * high, color=colours[run.label], alpha=0.15, linewidth=0)
        full = run.runs.histories.get("full") or []
        ax_loss.plot([r["epoch"] for r in full], [r.get("train_loss") for r in full], "--", color=colours[run.label])
    class_swatches(ax_classes, "y")
    ax_classes.set(xlabel="cross-validation IoU (%), mean ± std over folds")
    ax_miou.set(xlabel="epoch", ylabel="val mIoU (%)", title="validation mIoU (mean over folds, range shaded)")
    ax_loss.set(xlabel="epoch", ylabel="train loss (log)", yscale="log", title="training loss (full fit dashed)")
    for ax in (ax_classes, ax_miou, ax_loss):
        ax.grid(alpha=0.3)
    for ax in (ax_miou, ax_loss):
        ax.xaxis.get_major_locator().set_params(integer=True)
    return fig


def comparison_pages(comparison: Comparison) -> list[Page]:
    """The pages of compare.pdf; blocks that do not fit continue on a new page."""
    synthetic, title, pages = comparison.synthetic, " vs ".join(comparison.labels), []

    def new_page() -> Page:
        pages.append(Page(f"comparison: {title}", synthetic, source=CREATOR))
        return pages[-1]

    def add(draw: Callable[[Page], None]) -> None:
        try:
            draw(pages[-1])
        except ValueError:  # a block checks that it fits before it draws anything
            draw(new_page())

    new_page().title(f"Runs compared: {title}")
    if synthetic:
        pages[0].banner(
            "SYNTHETIC DATA in at least one run (cityseg synth): differences only show that the pipeline reacts to "
            "the settings; they say nothing about Cityscapes."
        )
    for mismatch in comparison.mismatches:
        pages[0].text(f"Not strictly comparable (compared because it was asked for): {mismatch}.", color=WARNING_RED)
    add(lambda page: page.table(comparison.runs_table(), size=7.5))
    add(
        lambda page: page.note(
            f"{comparison.protocol_text()} Val: the official Cityscapes metrics of each run's --eval JSON (– where "
            "none was given). Training time: all folds and the full fit; images/s: median over epochs."
        )
    )
    settings = comparison.settings_table()
    add(lambda page: page.heading("Settings that differ"))
    add(lambda page: page.table(settings) if settings.rows else page.text("None: every setting is the same."))
    paired = comparison.paired()
    if len(comparison.runs) > 1:
        add(lambda page: page.heading("Paired per-fold comparison"))
        if not paired:
            add(lambda page: page.text("None: no other run shares the first run's folds with every fold finished."))
        for pair in paired:
            add(lambda page, pair=pair: page.table(pair.table(), rules_before=[len(pair.folds)], after=0.06))
            add(lambda page, pair=pair: page.text(pair.verdict(), weight="bold"))
        if paired:
            add(lambda page: page.note(TEST_CAVEATS))
    table, styles = comparison.class_table()
    page = new_page()
    page.title("IoU per class")
    page.note(
        "IoU in percent; Δ columns: difference to the first run in points, green a gain and red a loss, bold on a "
        "tinted cell where it exceeds the larger of the two runs' fold-to-fold std for that class."
    )
    page.table(table, size=7.5, styles=styles, swatches=[class_colour(i) for i in range(NUM_CLASSES)])
    page = new_page()
    page.title("Per-class IoU and training curves")
    comparison_figure(comparison, page.plot_area(margins=(1.25, 0.1, 0.5, 0.3), space=0.35))
    return pages


def build_comparison(
    runs_dirs: Sequence[Path],
    out_pdf: Path,
    labels: Sequence[str] | str | None = None,
    evaluations: Sequence[Path | None] | None = None,
    allow_mismatch: bool = False,
) -> Comparison:
    """`cityseg compare`: load and check the runs, write compare.pdf and its tables; returns the comparison."""
    comparison, out_pdf = compare_runs(runs_dirs, labels, evaluations, allow_mismatch), Path(out_pdf)
    paired = {"paired_" + re.sub(r"[^\w.-]", "_", pair.other): pair.table() for pair in comparison.paired()}
    tables = {"runs": comparison.runs_table(), **paired, "classes": comparison.class_table()[0]}
    files = [f"{name}{ext}" for name in tables for ext in (".csv", ".tex")]
    check_output(out_pdf, CREATOR, "cityseg compare", {tables_dir(out_pdf): files})
    with typesetting():
        pages = comparison_pages(comparison)
        data = "SYNTHETIC data" if comparison.synthetic else "Cityscapes data"
        footer = "built from each runs folder's config.json, log.jsonl, folds.json, summary.json and the --eval JSONs"
        title = f"cityseg compare - {data} - {', '.join(comparison.labels)}"
        write_pdf(pages, out_pdf, title, CREATOR, "semantic segmentation runs compared", footer)
    write_tables(tables_dir(out_pdf), tables)
    return comparison
