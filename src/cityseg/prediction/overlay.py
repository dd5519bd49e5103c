"""What a person looks at: a prediction in Cityscapes colours, blended over the photo, with a legend.

Colours come from `cityscapesscripts.helpers.labels` (through `cityseg.labels`); the legend lists
the classes present, largest first, with their share of the image, drawn with PIL so the overlay
keeps the input's exact size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from cityseg.labels import CLASS_NAMES, ID_COLORS, NUM_CLASSES, TRAIN_ID_COLORS, ids_to_train_ids

LEGEND_BACKGROUND = (0, 0, 0, 170)  # translucent black behind the entries, readable on any photo
LEGEND_TEXT = (255, 255, 255, 255)


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


def _percent(share: float) -> str:
    return f"{100 * share:.0f}%" if share >= 0.005 else "<1%"


def draw_legend(canvas: Image.Image, entries: Sequence[tuple[int, float]]) -> Image.Image:
    """The RGB `canvas` with a legend (colour swatch, class name, share) in its top-left corner.

    Text height follows the image height (1/40, 9..36 px); entries that do not fit in one column
    continue in the next, up to half the image's width (then the smallest classes are left out).
    """
    width, height = canvas.size
    size = int(np.clip(round(height / 40), 9, 36))
    font, pad = _font(size), max(2, size // 3)
    labels = [f"{CLASS_NAMES[train_id]} {_percent(share)}" for train_id, share in entries]
    row = size + pad
    rows_per_column = max(1, (height - 2 * pad) // row)
    text_width = max((int(ImageDraw.Draw(canvas).textlength(text, font=font)) for text in labels), default=0)
    column = size + 2 * pad + text_width + pad  # swatch, gap, text, gap
    labels = labels[: max(1, (width // 2) // column) * rows_per_column]
    layer = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    columns = -(-len(labels) // rows_per_column)
    used_rows = min(len(labels), rows_per_column)
    draw.rectangle((0, 0, columns * column + pad, used_rows * row + pad), fill=LEGEND_BACKGROUND)
    for index, ((train_id, _), text) in enumerate(zip(entries, labels, strict=False)):
        left = pad + (index // rows_per_column) * column
        top = pad + (index % rows_per_column) * row
        draw.rectangle((left, top, left + size, top + size), fill=tuple(int(v) for v in TRAIN_ID_COLORS[train_id]))
        draw.text((left + size + pad, top), text, font=font, fill=LEGEND_TEXT)
    return Image.alpha_composite(canvas.convert("RGBA"), layer).convert("RGB")


def overlay_image(image: np.ndarray, label_ids: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: the photo blended with the class colours, with a legend of the classes present."""
    blended = Image.fromarray(blend(image, color_image(label_ids)))
    return np.asarray(draw_legend(blended, classes_present(label_ids)))


def overlay_panel(paths: Sequence[Path], columns: int = 2, width: float = 11.0) -> Figure:
    """A grid of overlay PNGs with their names as titles, for a notebook."""
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
