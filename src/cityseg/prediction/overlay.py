"""What a person looks at: a prediction in Cityscapes colours, blended over the photo, with a legend of the
classes covering at least 1% of it, largest first, scaled to the image and never over a quarter of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cityseg.labels import CLASS_NAMES, ID_COLORS, NUM_CLASSES, TRAIN_ID_COLORS, ids_to_train_ids

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LEGEND_MIN_SHARE = 0.01  # classes under 1% of the image are not listed
LEGEND_MAX_COVER = 0.25  # share of the image the legend may cover at most
LEGEND_BACKGROUND = (0, 0, 0, 170)  # translucent black behind the entries, readable on any photo


def color_image(label_ids: np.ndarray) -> np.ndarray:
    """(H, W) labelIds -> (H, W, 3) uint8 in the official Cityscapes palette."""
    return ID_COLORS[label_ids]


def blend(image: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Half photo, half class colour: (H, W, 3) uint8 each."""
    return ((image.astype(np.uint16) + colors) // 2).astype(np.uint8)


def classes_present(label_ids: np.ndarray) -> list[tuple[int, float]]:
    """(trainId, share of the pixels) of every evaluation class in a labelIds map, largest first."""
    counts = np.bincount(ids_to_train_ids(label_ids).ravel(), minlength=256)[:NUM_CLASSES]
    total = max(1, label_ids.size)
    return [(int(c), counts[c] / total) for c in np.argsort(-counts, kind="stable") if counts[c] > 0]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # scalable with FreeType (Pillow >= 10.1)
    except (TypeError, OSError):  # pragma: no cover - Pillow without FreeType: its fixed bitmap font
        return ImageFont.load_default()


def draw_legend(canvas: Image.Image, entries: Sequence[tuple[int, float]]) -> Image.Image:
    """The RGB `canvas` with a legend (swatch, class name, share) of the entries of at least 1% in its top-left
    corner: text 1/24 of the image's shorter side (7..40 px), one column, the smallest classes dropped to fit."""
    width, height = canvas.size
    size = int(np.clip(round(min(width, height) / 24), 7, 40))
    font, pad, row = _font(size), max(1, size // 4), size + max(1, size // 4)
    labels = [f"{CLASS_NAMES[c]} {100 * share:.0f}%" for c, share in entries if share >= LEGEND_MIN_SHARE]
    measure = ImageDraw.Draw(canvas)
    while labels:  # the smallest classes go first until the legend fits
        box = (size + 3 * pad + max(int(measure.textlength(t, font=font)) for t in labels), len(labels) * row + pad)
        if box[0] <= width and box[1] <= height and box[0] * box[1] <= LEGEND_MAX_COVER * width * height:
            break
        labels.pop()
    if not labels:
        return canvas
    layer = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    draw.rectangle((0, 0, box[0] - 1, box[1] - 1), fill=LEGEND_BACKGROUND)
    for index, ((train_id, _), text) in enumerate(zip(entries, labels, strict=False)):
        top = pad + index * row
        draw.rectangle(
            (pad, top, pad + size - 1, top + size - 1), fill=tuple(int(v) for v in TRAIN_ID_COLORS[train_id])
        )
        draw.text((size + 2 * pad, top), text, font=font, fill=(255, 255, 255, 255))
    return Image.alpha_composite(canvas.convert("RGBA"), layer).convert("RGB")


def overlay_image(image: np.ndarray, label_ids: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: the photo blended with the class colours, with a legend of the main classes."""
    blended = Image.fromarray(blend(image, color_image(label_ids)))
    return np.asarray(draw_legend(blended, classes_present(label_ids)))


def overlay_panel(paths: Sequence[Path], columns: int = 2, width: float = 11.0) -> Figure:
    """A grid of overlay PNGs with their names as titles, for a notebook."""
    from matplotlib.figure import Figure

    paths = list(paths)
    if not paths:
        figure = Figure(figsize=(width, 1.0))
        figure.text(0.5, 0.5, "no overlays to show", ha="center", va="center")
        return figure
    columns = max(1, min(columns, len(paths)))
    rows = -(-len(paths) // columns)
    figure = Figure(figsize=(width, width / columns * 0.6 * rows), layout="constrained")
    for index, path in enumerate(paths):
        axis = figure.add_subplot(rows, columns, index + 1)
        with Image.open(path) as image:
            axis.imshow(np.asarray(image.convert("RGB")))
        axis.set_title(Path(path).name, fontsize=8)
        axis.set_axis_off()
    return figure
