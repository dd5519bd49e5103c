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
from matplotlib.transforms import ScaledTranslation

from cityseg.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, TRAIN_ID_COLORS, colorize_train_ids

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


def _finite(values: Sequence[float | None]) -> np.ndarray:
    """JSON nulls (a class that never occurred) become NaN so matplotlib leaves a gap."""
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def training_curves(histories: Mapping[str, Sequence[Mapping]], title: str | None = None) -> Figure:
    """Loss and validation mIoU per epoch for every run, to see over- or under-fitting per fold at a glance.

    histories: run name (e.g. "fold_0") -> log.jsonl rows with epoch, train_loss, val_loss, val_miou.
    """
    fig = Figure(figsize=WIDE_SIZE, layout="constrained")
    ax_loss, ax_miou = fig.subplots(1, 2)
    draw_training_curves(ax_loss, ax_miou, histories)
    if title:
        fig.suptitle(title)
    return fig


def draw_training_curves(ax_loss, ax_miou, histories: Mapping[str, Sequence[Mapping]]) -> None:
    """`training_curves` into two given axes (a report page places them itself)."""
    colours = _run_colours(list(histories))
    for name, rows in histories.items():
        if not rows:
            continue
        epochs = [row["epoch"] for row in rows]
        colour = colours[name]
        ax_loss.plot(
            epochs, _finite([r.get("train_loss") for r in rows]), "-o", color=colour, ms=3, label=f"{name} train"
        )
        val_loss = _finite([r.get("val_loss") for r in rows])
        if np.isfinite(val_loss).any():
            ax_loss.plot(epochs, val_loss, "--s", color=colour, ms=3, label=f"{name} val")
        val_miou = 100.0 * _finite([r.get("val_miou") for r in rows])
        if np.isfinite(val_miou).any():
            ax_miou.plot(epochs, val_miou, "-o", color=colour, ms=3, label=name)
    # Log scale: a from-scratch model's first validation losses are orders of magnitude above the rest.
    ax_loss.set(
        xlabel="epoch", ylabel="cross-entropy (log scale)", title="loss (solid: train, dashed: val)", yscale="log"
    )
    ax_miou.set(xlabel="epoch", ylabel="mIoU (%)", title="validation mIoU")
    for ax in (ax_loss, ax_miou):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if ax.has_data():
            ax.legend(fontsize="x-small", ncols=2 if len(histories) > 3 else 1)


def _run_colours(names: Sequence[str]) -> dict[str, tuple]:
    """Stable colours per run; the full-data fit is drawn in black so it stands apart from the folds."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    folds = [n for n in names if n != "full"]
    colours = {name: cmap(i % 10) for i, name in enumerate(folds)}
    if "full" in names:
        colours["full"] = (0.0, 0.0, 0.0, 1.0)
    return colours


def class_colour(train_id: int) -> tuple[float, float, float]:
    """The class's colour in the official Cityscapes palette (cityscapesscripts), as matplotlib RGB."""
    return tuple(float(c) / 255.0 for c in TRAIN_ID_COLORS[train_id])


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
    draw_class_iou(ax, cv_mean, cv_std, val, class_names)
    ax.set_title(title)
    return fig


def draw_class_iou(
    ax,
    cv_mean: Sequence[float | None] | None,
    cv_std: Sequence[float | None] | None,
    val: Sequence[float | None] | None,
    class_names: Sequence[str] = CLASS_NAMES,
    cv_label: str = "cross-validation mean ± std",
    val_label: str = "val (official script)",
) -> None:
    """Per-class IoU bars in each class's palette colour: solid for CV (with its fold std), hatched for val."""
    y = np.arange(len(class_names))
    colours = [class_colour(i) for i in range(len(class_names))]
    # (values, std, hatch, share of the class colour in the fill, legend label) of each series drawn
    series = [
        s for s in ((cv_mean, cv_std, None, 1.0, cv_label), (val, None, "////", 0.3, val_label)) if s[0] is not None
    ]
    height = 0.8 / max(1, len(series))
    for i, (values, std, hatch, alpha, _) in enumerate(series):
        offset = (i - (len(series) - 1) / 2) * height
        err = None if std is None else 100.0 * _finite(std)
        ax.barh(
            y + offset,
            100.0 * _finite(values),
            height=height,
            color=[_tint(c, alpha) for c in colours],
            edgecolor=colours,
            hatch=hatch,
            linewidth=0.6,
            xerr=err,
            error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "0.15"},
        )
    ax.set_yticks(y, class_names)
    ax.invert_yaxis()  # trainId 0 (road) at the top, as in the official table
    ax.set(xlabel="IoU (%)", xlim=(0, 100))
    ax.grid(axis="x", alpha=0.3)
    if series:  # grey stand-ins: the bars themselves carry the class colours
        handles = [
            Patch(facecolor=_tint((0.4, 0.4, 0.4), alpha), edgecolor="0.4", hatch=hatch, label=label)
            for _, _, hatch, alpha, label in series
        ]
        ax.legend(handles=handles, loc="lower right", fontsize="small")


def _tint(colour: Sequence[float], share: float) -> tuple[float, ...]:
    """`colour` mixed with white, opaque: PDF viewers drop the hatching of some semi-transparent fills."""
    return tuple(1.0 - share * (1.0 - c) for c in colour)


def normalize_rows(confusion: np.ndarray) -> np.ndarray:
    """Row-normalise counts (rows = ground truth) so each row shows where that class's pixels went."""
    conf = np.asarray(confusion, dtype=np.float64)
    totals = conf.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, conf / totals, np.nan)


def confusion_figure(
    confusion: np.ndarray,
    class_names: Sequence[str] = CLASS_NAMES,
    title: str = "normalised confusion matrix (rows: ground truth)",
) -> Figure:
    """Row-normalised confusion matrix heat map with its cells written in, to see which classes get mixed up."""
    fig = Figure(figsize=(8.27, 7.6), layout="constrained")
    ax = fig.subplots()
    image = draw_confusion(ax, confusion, class_names)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the row's pixels (%)")
    return fig


def draw_confusion(ax, confusion: np.ndarray, class_names: Sequence[str] = CLASS_NAMES, min_percent: float = 1.0):
    """Row-normalised matrix in percent: every cell of at least `min_percent` written as an integer (the
    diagonal in bold), palette swatches beside the class names; returns the image for a colour bar."""
    norm = 100.0 * normalize_rows(confusion)  # (C, C) percent of each ground-truth row
    image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=100.0)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=90, fontsize="small")
    ax.set_yticks(ticks, class_names, fontsize="small")
    ax.set(xlabel="prediction", ylabel="ground truth")
    for row in ticks:
        for col in ticks:
            value = norm[row, col]
            if np.isfinite(value) and (value >= min_percent or row == col):
                ax.text(
                    col,
                    row,
                    f"{value:.0f}",
                    ha="center",
                    va="center",
                    fontsize=5.5,
                    weight="bold" if row == col else "normal",
                    color="white" if value > 55 else "black",
                )
    class_swatches(ax, "y")
    class_swatches(ax, "x")
    return image


def class_swatches(ax, axis: str = "y") -> None:
    """A square in each class's palette colour between the axes and its class-name tick labels (tick i = trainId i)."""
    shift = 7 / 72  # inches from the axes edge, whatever the figure's size
    if axis == "y":
        where = ax.get_yaxis_transform() + ScaledTranslation(-shift, 0, ax.figure.dpi_scale_trans)
    else:
        where = ax.get_xaxis_transform() + ScaledTranslation(0, -shift, ax.figure.dpi_scale_trans)
    ax.tick_params(axis=axis, pad=13, length=0)
    for i in range(NUM_CLASSES):
        xy = ([0], [i]) if axis == "y" else ([i], [0])
        ax.plot(
            *xy,
            transform=where,
            marker="s",
            markersize=7,
            color=class_colour(i),
            markeredgecolor="0.3",
            markeredgewidth=0.3,
            clip_on=False,
        )


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


EXAMPLE_HEADERS = ("image", "ground truth", "prediction", "error (red: wrong, white: ignored)")


def qualitative_panel(examples: Sequence[Example], title: str | None = None) -> Figure:
    """Rows of image | ground truth | prediction | error map, the quickest check of what the model gets wrong."""
    rows = max(1, len(examples))
    aspect = examples[0].image.shape[0] / examples[0].image.shape[1] if examples else 0.5
    fig = Figure(figsize=(11.0, 0.4 + rows * 11.0 / 4 * aspect + rows * 0.35), layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, 4))
    for row, example in zip(axes, examples, strict=False):
        draw_example(row, example)
    for ax, header in zip(axes[0], EXAMPLE_HEADERS, strict=True):
        ax.set_title(header, fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def draw_example(axes: Sequence, example: Example, title_beside: bool = False) -> None:
    """Image, ground truth, prediction (Cityscapes palette) and error map of one frame into four axes; the
    title goes up the first panel's side, or (`title_beside`) level to its left, where a page made room."""
    panels = (
        example.image,
        colorize_train_ids(example.truth),
        colorize_train_ids(example.prediction),
        error_map(example.truth, example.prediction),
    )
    for ax, panel in zip(axes, panels, strict=True):
        ax.imshow(_shrink(panel), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
    if title_beside:
        axes[0].text(-0.04, 0.5, example.title, transform=axes[0].transAxes, ha="right", va="center", fontsize=7)
    else:
        axes[0].set_ylabel(example.title, fontsize="small")


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
