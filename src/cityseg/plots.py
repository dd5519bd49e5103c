"""Matplotlib figure builders shared by the notebooks and the PDF report.

Every builder returns a `matplotlib.figure.Figure` made without pyplot, so no global
figure state leaks between cells or report pages; a notebook shows one by leaving it as
the last expression of a cell (or with `IPython.display.display`). Inputs are the plain
structures the run files hold (log rows, IoU lists, confusion counts), never live models.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from cityseg.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, TRAIN_ID_COLORS, colorize_train_ids

# A4 portrait in inches: report pages and the figures written beside them share one shape.
PAGE_SIZE = (8.27, 11.69)
WIDE_SIZE = (11.0, 4.2)

# Error map colours: why a pixel is not simply "right or wrong" is the ignore label.
ERROR_CORRECT = (0, 0, 0)
ERROR_WRONG = (230, 30, 30)
ERROR_IGNORED = (255, 255, 255)

# Longest side of an image drawn in a panel; full 2048x1024 frames would bloat the PDF for no gain.
PANEL_MAX_SIDE = 1024


@dataclass(frozen=True)
class Example:
    """One frame for a qualitative panel: RGB image and trainId maps of ground truth and prediction."""

    title: str
    image: np.ndarray  # (H, W, 3) uint8
    truth: np.ndarray  # (H, W) uint8 trainIds, 255 = ignore
    prediction: np.ndarray  # (H, W) uint8 trainIds


def percent(value: float | None, digits: int = 2) -> str:
    """Format a 0..1 score as a percentage with fixed decimals, the one format used in tables and text."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{100.0 * value:.{digits}f}"


def mean_std_text(mean: float | None, std: float | None, digits: int = 2) -> str:
    """`mean ± std` in percent, so fold results read the same in the notebook, the PDF and the README."""
    if std is None or not math.isfinite(std):
        return percent(mean, digits)
    return f"{percent(mean, digits)} ± {percent(std, digits)}"


def _finite(values: Sequence[float | None]) -> np.ndarray:
    """JSON nulls (a class that never occurred) become NaN so matplotlib leaves a gap."""
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def training_curves(histories: Mapping[str, Sequence[Mapping]], title: str | None = None) -> Figure:
    """Loss and validation mIoU per epoch for every run, to see over- or under-fitting per fold at a glance.

    histories: run name (e.g. "fold_0") -> log.jsonl rows with epoch, train_loss, val_loss, val_miou.
    """
    fig = Figure(figsize=WIDE_SIZE, layout="constrained")
    ax_loss, ax_miou = fig.subplots(1, 2)
    colours = _run_colours(list(histories))
    for name, rows in histories.items():
        if not rows:
            continue
        epochs = [row["epoch"] for row in rows]
        colour = colours[name]
        ax_loss.plot(epochs, _finite([r.get("train_loss") for r in rows]), "-o", color=colour, ms=3, label=f"{name} train")
        val_loss = _finite([r.get("val_loss") for r in rows])
        if np.isfinite(val_loss).any():
            ax_loss.plot(epochs, val_loss, "--s", color=colour, ms=3, label=f"{name} val")
        val_miou = 100.0 * _finite([r.get("val_miou") for r in rows])
        if np.isfinite(val_miou).any():
            ax_miou.plot(epochs, val_miou, "-o", color=colour, ms=3, label=name)
    # Log scale: a from-scratch model's first validation losses are orders of magnitude above the rest.
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy (log scale)", title="loss (solid: train, dashed: val)",
                yscale="log")
    ax_miou.set(xlabel="epoch", ylabel="mIoU (%)", title="validation mIoU")
    for ax in (ax_loss, ax_miou):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if ax.has_data():
            ax.legend(fontsize="x-small", ncols=2 if len(histories) > 3 else 1)
    if title:
        fig.suptitle(title)
    return fig


def _run_colours(names: Sequence[str]) -> dict[str, tuple]:
    """Stable colours per run; the full-data fit is drawn in black so it stands apart from the folds."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    folds = [n for n in names if n != "full"]
    colours = {name: cmap(i % 10) for i, name in enumerate(folds)}
    if "full" in names:
        colours["full"] = (0.0, 0.0, 0.0, 1.0)
    return colours


def class_iou_bars(
    cv_mean: Sequence[float | None] | None = None,
    cv_std: Sequence[float | None] | None = None,
    val: Sequence[float | None] | None = None,
    class_names: Sequence[str] = CLASS_NAMES,
    title: str = "IoU per class",
) -> Figure:
    """Horizontal bars of per-class IoU: CV mean ± std beside the validation score, to spot weak classes."""
    fig = Figure(figsize=(8.27, 7.0), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(class_names))
    series = [(values, std, label, colour) for values, std, label, colour in (
        (cv_mean, cv_std, "CV mean ± std", "tab:blue"),
        (val, None, "val (official)", "tab:orange"),
    ) if values is not None]
    height = 0.8 / max(1, len(series))
    for i, (values, std, label, colour) in enumerate(series):
        offset = (i - (len(series) - 1) / 2) * height
        err = None if std is None else 100.0 * _finite(std)
        ax.barh(y + offset, 100.0 * _finite(values), height=height, xerr=err, capsize=2, label=label, color=colour)
    ax.set_yticks(y, class_names)
    ax.invert_yaxis()  # trainId 0 (road) at the top, as in the official table
    ax.set(xlabel="IoU (%)", xlim=(0, 100), title=title)
    ax.grid(axis="x", alpha=0.3)
    if series:
        ax.legend(loc="lower right", fontsize="small")
    return fig


def normalize_rows(confusion: np.ndarray) -> np.ndarray:
    """Row-normalise counts (rows = ground truth) so each row shows where that class's pixels went."""
    conf = np.asarray(confusion, dtype=np.float64)
    totals = conf.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, conf / totals, np.nan)


def confusion_figure(confusion: np.ndarray, class_names: Sequence[str] = CLASS_NAMES,
                     title: str = "normalised confusion matrix (rows: ground truth)") -> Figure:
    """Row-normalised confusion matrix heat map with the diagonal written in, to see which classes get mixed up."""
    norm = normalize_rows(confusion)  # (C, C)
    fig = Figure(figsize=(8.27, 7.6), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=90, fontsize="small")
    ax.set_yticks(ticks, class_names, fontsize="small")
    ax.set(xlabel="prediction", ylabel="ground truth", title=title)
    for i in ticks:
        if np.isfinite(norm[i, i]):
            ax.text(i, i, f"{100 * norm[i, i]:.0f}", ha="center", va="center", fontsize=6,
                    color="white" if norm[i, i] > 0.5 else "black")
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of the row's pixels")
    return fig


def error_map(truth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: black where right, red where wrong, white where the ground truth is ignored."""
    out = np.empty((*truth.shape, 3), dtype=np.uint8)
    out[:] = ERROR_CORRECT
    out[truth != prediction] = ERROR_WRONG
    out[truth == IGNORE_INDEX] = ERROR_IGNORED
    return out


def _shrink(array: np.ndarray, max_side: int = PANEL_MAX_SIDE) -> np.ndarray:
    """Subsample by an integer step (nearest, so label maps keep valid ids) until the long side fits."""
    step = max(1, math.ceil(max(array.shape[:2]) / max_side))
    return array[::step, ::step]


def qualitative_panel(examples: Sequence[Example], title: str | None = None) -> Figure:
    """Rows of image | ground truth | prediction | error map, the quickest check of what the model gets wrong."""
    rows = max(1, len(examples))
    aspect = examples[0].image.shape[0] / examples[0].image.shape[1] if examples else 0.5
    fig = Figure(figsize=(11.0, 0.4 + rows * 11.0 / 4 * aspect + rows * 0.35), layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, 4))
    headers = ("image", "ground truth", "prediction", "error (red: wrong, white: ignored)")
    for row, example in zip(axes, examples, strict=False):
        panels = (
            example.image,
            colorize_train_ids(example.truth),
            colorize_train_ids(example.prediction),
            error_map(example.truth, example.prediction),
        )
        for ax, panel in zip(row, panels, strict=True):
            ax.imshow(_shrink(panel), interpolation="nearest")
        row[0].set_ylabel(example.title, fontsize="small")
    for ax, header in zip(axes[0], headers, strict=True):
        ax.set_title(header, fontsize="small")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return fig


def class_legend_handles(train_ids: np.ndarray) -> list[Patch]:
    """Legend patches for the classes present in a mask, in trainId order."""
    present = [int(c) for c in np.unique(train_ids) if c < NUM_CLASSES]
    return [Patch(color=TRAIN_ID_COLORS[c] / 255.0, label=CLASS_NAMES[c]) for c in present]


def dataset_sample(image: np.ndarray, train_ids: np.ndarray, title: str = "") -> Figure:
    """An image beside its coloured mask with a legend, to check that images and labels line up."""
    fig = Figure(figsize=(11.0, 3.6), layout="constrained")
    ax_image, ax_mask = fig.subplots(1, 2)
    ax_image.imshow(_shrink(image))
    ax_mask.imshow(_shrink(colorize_train_ids(train_ids)), interpolation="nearest")
    ax_image.set_title("image", fontsize="small")
    ax_mask.set_title("ground truth (trainIds, black = ignore)", fontsize="small")
    for ax in (ax_image, ax_mask):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.legend(handles=class_legend_handles(train_ids), loc="outside right center", fontsize="x-small")
    if title:
        fig.suptitle(title)
    return fig


def text_page(blocks: Sequence[tuple[str, str]], header: str, footer: str = "") -> Figure:
    """An A4 page of titled monospace text blocks, so tables stay real text that a PDF reader can copy.

    blocks: (title, body) pairs drawn top to bottom; body lines are pre-aligned plain text.
    """
    fig = Figure(figsize=PAGE_SIZE)
    fig.text(0.06, 0.965, header, fontsize=9, color="0.3", va="top")
    y = 0.93
    for title, body in blocks:
        if title:
            fig.text(0.06, y, title, fontsize=12, weight="bold", va="top")
            y -= 0.03
        if body:
            fig.text(0.06, y, body, family="monospace", fontsize=8, va="top", linespacing=1.3)
            y -= (body.count("\n") + 1) * 0.0135 + 0.03
    if footer:
        fig.text(0.06, 0.03, footer, fontsize=7, color="0.4", va="bottom")
    return fig


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """Render a figure to PNG bytes (for the README figures and for live notebook updates)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": "cityseg"})
    return buffer.getvalue()


class LiveCurves:
    """Training curves that redraw in place in a notebook while `run_cv` trains.

    Pass `live.update` as `on_epoch`; each epoch replaces the one displayed figure through an
    IPython display id, so the output cell holds one picture rather than one per epoch, and
    the same code runs headless under papermill (the last picture is stored in the notebook).
    """

    def __init__(self, histories: Mapping[str, Sequence[Mapping]] | None = None):
        self.histories: dict[str, list[dict]] = {k: list(v) for k, v in (histories or {}).items()}
        self._handle = None

    def update(self, run_name: str, row: Mapping) -> None:
        """Record one epoch's log row and redraw; the signature is `run_cv`'s `on_epoch` callback."""
        rows = self.histories.setdefault(run_name, [])
        # A resumed run may re-log an epoch that was already shown: keep one row per epoch.
        rows[:] = [r for r in rows if r.get("epoch") != row.get("epoch")] + [dict(row)]
        self.show()

    def figure(self) -> Figure:
        """The current curves as a figure."""
        return training_curves(self.histories)

    def show(self) -> None:
        """Draw the current curves, replacing the previous drawing when there is one."""
        from IPython.display import Image, display

        image = Image(data=figure_png(self.figure()), format="png")
        if self._handle is None:
            self._handle = display(image, display_id=True)  # a fresh id per instance
        else:
            self._handle.update(image)
