"""Matplotlib figures shared by the notebooks, the PDF pages and the report's PNGs: each builder draws into the
figure it is given (a page's plot area) or a new one, made without pyplot so no state leaks between cells or pages."""

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.transforms import ScaledTranslation

from cityseg.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, TRAIN_ID_COLORS, colorize_train_ids

ERROR_CORRECT, ERROR_WRONG, ERROR_IGNORED = (0, 0, 0), (230, 30, 30), (255, 255, 255)
PANEL_MAX_SIDE = 1024  # longest side of an image in a panel; full frames would bloat the PDF for no gain
EXAMPLE_HEADERS = ("image", "ground truth", "prediction", "error (red: wrong, white: ignored)")


@dataclass(frozen=True)
class Example:
    """One frame for a qualitative panel: RGB image and trainId maps of ground truth and prediction."""

    title: str
    image: np.ndarray  # (H, W, 3) uint8
    truth: np.ndarray  # (H, W) uint8 trainIds, 255 = ignore
    prediction: np.ndarray  # (H, W) uint8 trainIds


def _figure(fig: Figure | None, size: tuple[float, float]) -> Figure:
    return fig if fig is not None else Figure(figsize=size, layout="constrained")


def class_colour(train_id: int) -> tuple[float, ...]:
    """The class's colour in the official Cityscapes palette, as matplotlib RGB."""
    return tuple(float(c) / 255.0 for c in TRAIN_ID_COLORS[train_id])


def run_colours(names: Sequence[str]) -> dict[str, tuple]:
    """Stable tab10 colours per run; the full-data fit is black so it stands apart from the folds."""
    colours = {name: colormaps["tab10"](i % 10) for i, name in enumerate(n for n in names if n != "full")}
    return colours | ({"full": (0.0, 0.0, 0.0, 1.0)} if "full" in names else {})


def training_curves(histories: Mapping[str, Sequence[Mapping]], fig: Figure | None = None) -> Figure:
    """Loss (and validation mIoU, when any run has it) per epoch of every run, one colour each, legend below."""
    fig = _figure(fig, (11.0, 4.4))
    has_miou = any(r.get("val_miou") is not None for rows in histories.values() for r in rows)
    grid = fig.add_gridspec(2, 2 if has_miou else 1, height_ratios=[1, 0.01])
    axes = [fig.add_subplot(grid[0, i]) for i in range(grid.ncols)]
    colours = run_colours(list(histories))
    for name, rows in histories.items():
        epochs = [row["epoch"] for row in rows]
        for ax, key, style in (
            (axes[0], "train_loss", "-o"),
            (axes[0], "val_loss", "--s"),
            (axes[-1], "val_miou", "-o"),
        ):
            values = np.array([r.get(key) for r in rows], dtype=float) * (100.0 if key == "val_miou" else 1.0)
            if np.isfinite(values).any() and (has_miou or key != "val_miou"):
                ax.plot(epochs, values, style, color=colours[name], ms=3, label=f"{name} {key}")
    # Log scale: a from-scratch model's first validation losses are orders of magnitude above the rest.
    axes[0].set(xlabel="epoch", ylabel="loss (log scale)", title="loss (solid: train, dashed: val)", yscale="log")
    if has_miou:
        axes[1].set(xlabel="epoch", ylabel="mIoU (%)", title="validation mIoU (the full fit has no validation)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles = [Line2D([], [], color=colours[n], marker="o", ms=3, label=n) for n in histories]
    handles += [Line2D([], [], color="0.3", ls=ls, label=what) for ls, what in (("-", "train"), ("--", "val"))]
    _legend_row(fig, grid, handles, ncols=min(len(handles), 8))
    return fig


def _legend_row(fig: Figure, grid, handles: list, **options) -> None:
    """A legend in the grid's last row, under the plots: it covers no data and stays inside the figure's layout."""
    ax = fig.add_subplot(grid[-1, :])
    ax.set_axis_off()
    ax.legend(handles=handles, loc="center", frameon=False, **options)


@dataclass(frozen=True)
class Bars:
    """One series of per-class bars: IoU values (0..1, None = absent) and how they are drawn."""

    label: str
    values: Sequence[float | None]
    std: Sequence[float | None] | None = None
    colour: tuple | None = None  # None: each class in its palette colour
    hatch: str | None = None
    tint: float = 1.0  # share of the colour in the fill (the rest white)


def draw_class_bars(ax, series: Sequence[Bars], legend: Sequence[Patch]) -> None:
    """Horizontal per-class bars, series side by side, a zero IoU drawn as a stub (not a gap)."""
    y, height = np.arange(NUM_CLASSES), 0.8 / max(1, len(series))
    for i, bars in enumerate(series):  # dtype float turns JSON nulls (absent classes) into NaN: a gap
        where, widths = y + (i - (len(series) - 1) / 2) * height, 100.0 * np.array(bars.values, dtype=float)
        edges = [bars.colour or class_colour(c) for c in range(NUM_CLASSES)]
        ax.barh(
            where,
            np.where(widths == 0, 0.4, widths),
            height=height,
            color=[_tint(c, bars.tint) for c in edges],
            edgecolor=edges,
            hatch=bars.hatch,
            linewidth=0.6,
            xerr=None if bars.std is None else 100.0 * np.array(bars.std, dtype=float),
            error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "0.15"},
        )
        for row in np.flatnonzero(widths == 0):
            ax.text(1.2, where[row], "0.00", va="center", fontsize=6.5, color="0.2")
    ax.set_yticks(y, CLASS_NAMES)
    ax.invert_yaxis()  # trainId 0 (road) at the top, as in the official table
    ax.set(xlabel="IoU (%)", xlim=(0, 100))
    ax.grid(axis="x", alpha=0.3)
    ax.legend(handles=legend, loc="lower right", fontsize="small")


def class_iou_bars(
    cv_mean: Sequence[float | None] | None,
    cv_std: Sequence[float | None] | None = None,
    val: Sequence[float | None] | None = None,
    fig: Figure | None = None,
    labels: tuple[str, str] = ("cross-validation mean ± std", "val (official script)"),
    title: str | None = None,
) -> Figure:
    """Per-class IoU in each class's palette colour: solid for CV (with its fold std), hatched for val."""
    fig = _figure(fig, (8.27, 7.0))
    series = [Bars(labels[0], cv_mean, cv_std), Bars(labels[1], val, hatch="////", tint=0.3)]
    series = [bars for bars in series if bars.values is not None]
    grey = [Patch(facecolor=_tint((0.4,) * 3, b.tint), edgecolor="0.4", hatch=b.hatch, label=b.label) for b in series]
    ax = fig.subplots()
    draw_class_bars(ax, series, grey)  # grey stand-ins: the bars carry the class colours
    ax.set_title(title or "")
    return fig


def _tint(colour: Sequence[float], share: float) -> tuple[float, ...]:
    """`colour` mixed with white, opaque: PDF viewers drop the hatching of some semi-transparent fills."""
    return tuple(1.0 - share * (1.0 - c) for c in colour)


def normalize_rows(confusion: np.ndarray) -> np.ndarray:
    """Row-normalise counts (rows = ground truth) so each row shows where that class's pixels went."""
    conf = np.asarray(confusion, dtype=np.float64)
    totals = conf.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, conf / totals, np.nan)


def confusion_figure(confusion: np.ndarray, fig: Figure | None = None, min_percent: float = 1.0) -> Figure:
    """Row-normalised confusion matrix in percent, cells >= `min_percent` written in."""
    fig = _figure(fig, (8.27, 7.6))
    ax = fig.subplots()
    norm = 100.0 * normalize_rows(confusion)  # (C, C) percent of each ground-truth row
    image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=100.0)
    ticks = np.arange(NUM_CLASSES)
    ax.set_xticks(ticks, CLASS_NAMES, rotation=90, fontsize="small")
    ax.set_yticks(ticks, CLASS_NAMES, fontsize="small")
    ax.set(xlabel="prediction", ylabel="ground truth")
    for row, col in np.argwhere(np.isfinite(norm) & ((norm >= min_percent) | np.eye(NUM_CLASSES, dtype=bool))):
        value = norm[row, col]
        weight, colour = "bold" if row == col else "normal", "white" if value > 55 else "black"
        ax.text(col, row, f"{value:.0f}", ha="center", va="center", fontsize=5.5, weight=weight, color=colour)
    class_swatches(ax, "y")
    class_swatches(ax, "x")
    # An inset colour bar follows the matrix's own height (a layout slot is taller than the square matrix).
    fig.colorbar(image, cax=ax.inset_axes((1.03, 0.0, 0.03, 1.0)), label="share of the row's pixels (%)")
    return fig


def class_swatches(ax, axis: str = "y") -> None:
    """A square in each class's palette colour between the axes and its class-name tick labels (tick i = trainId i)."""
    base = ax.get_yaxis_transform() if axis == "y" else ax.get_xaxis_transform()
    where = base + ScaledTranslation(*((-7 / 72, 0) if axis == "y" else (0, -7 / 72)), ax.figure.dpi_scale_trans)
    ax.tick_params(axis=axis, pad=13, length=0)
    for i in range(NUM_CLASSES):
        xy = ([0], [i]) if axis == "y" else ([i], [0])
        style = {"marker": "s", "markersize": 7, "markeredgecolor": "0.3", "markeredgewidth": 0.3}
        ax.plot(*xy, transform=where, color=class_colour(i), clip_on=False, **style)


def error_map(truth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: black where right, red where wrong, white where the ground truth is ignored."""
    out = np.empty((*truth.shape, 3), dtype=np.uint8)
    out[:] = ERROR_CORRECT
    out[truth != prediction] = ERROR_WRONG
    out[truth == IGNORE_INDEX] = ERROR_IGNORED
    return out


def _shrink(array: np.ndarray) -> np.ndarray:
    """Subsample by an integer step (nearest, so label maps keep valid ids) until the long side fits a panel."""
    step = max(1, math.ceil(max(array.shape[:2]) / PANEL_MAX_SIDE))
    return array[::step, ::step]


def palette_handles(train_ids: Sequence[int] = range(NUM_CLASSES)) -> list[Patch]:
    """Legend patches of the given classes in their palette colours."""
    return [Patch(facecolor=class_colour(c), edgecolor="0.3", linewidth=0.3, label=CLASS_NAMES[c]) for c in train_ids]


def qualitative_panel(examples: Sequence[Example], fig: Figure | None = None) -> Figure:
    """Rows of image | ground truth | prediction | error map, and the palette: what the model gets wrong."""
    aspect = examples[0].image.shape[0] / examples[0].image.shape[1] if examples else 0.5
    fig = _figure(fig, (11.0, 1.2 + len(examples) * (11.0 / 4 * aspect + 0.35)))
    grid = fig.add_gridspec(max(1, len(examples)) + 1, 4, height_ratios=[1] * max(1, len(examples)) + [0.01])
    axes = np.array([[fig.add_subplot(grid[r, c]) for c in range(4)] for r in range(grid.nrows - 1)])
    for row, example in zip(axes, examples, strict=False):
        panels = (example.image, colorize_train_ids(example.truth), colorize_train_ids(example.prediction))
        for ax, panel in zip(row, (*panels, error_map(example.truth, example.prediction)), strict=True):
            ax.imshow(_shrink(panel), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(example.title, fontsize="small")
    for ax, header in zip(axes[0], EXAMPLE_HEADERS, strict=True):
        ax.set_title(header, fontsize="small")
    _legend_row(fig, grid, palette_handles(), ncols=7, fontsize="x-small", title="Cityscapes palette")
    return fig


def dataset_sample(image: np.ndarray, train_ids: np.ndarray, title: str = "") -> Figure:
    """An image beside its coloured mask with a legend of the classes present, to check that they line up."""
    fig = Figure(figsize=(11.0, 3.6), layout="constrained")
    panels = {"image": image, "ground truth (trainIds, black = ignore)": colorize_train_ids(train_ids)}
    for ax, (name, panel) in zip(fig.subplots(1, 2), panels.items(), strict=True):
        ax.imshow(_shrink(panel), interpolation="nearest")
        ax.set(xticks=[], yticks=[], title=name)
    present = [int(c) for c in np.unique(train_ids) if c < NUM_CLASSES]
    fig.legend(handles=palette_handles(present), loc="outside right center", fontsize="x-small")
    fig.suptitle(title)
    return fig


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """A figure as PNG bytes, marked as cityseg's (the report's figures, live notebook updates)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": "cityseg"})
    return buffer.getvalue()


class LiveCurves:
    """Training curves redrawn in place in a notebook (`live.update` as `on_epoch`), one picture per cell."""

    def __init__(self, histories: Mapping[str, Sequence[Mapping]] | None = None):
        self.histories: dict[str, list[dict]] = {k: list(v) for k, v in (histories or {}).items()}
        self._handle = None

    def update(self, run_name: str, row: Mapping) -> None:
        """Record one epoch's log row and redraw (a resumed run may re-log an epoch: one row per epoch is kept)."""
        rows = self.histories.setdefault(run_name, [])
        rows[:] = [r for r in rows if r.get("epoch") != row.get("epoch")] + [dict(row)]
        self.show()

    def show(self) -> None:
        from IPython.display import Image, display

        image = Image(data=figure_png(training_curves(self.histories)), format="png")
        if self._handle is None:
            self._handle = display(image, display_id=True)
        else:
            self._handle.update(image)
