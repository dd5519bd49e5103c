"""Photo overlays: the legend lists the classes of at least 1% of the image and stays small on small images."""

from __future__ import annotations

import numpy as np
import pytest

from cityseg.labels import CLASS_NAMES, TRAIN_ID_COLORS
from cityseg.prediction.overlay import LEGEND_MAX_COVER, blend, color_image, overlay_image

LABEL_IDS = {"road": 7, "building": 11, "vegetation": 21, "sky": 23, "car": 26, "person": 24, "pole": 17}


def scene(height: int, width: int, shares: dict[str, float]) -> np.ndarray:
    """A labelIds map whose classes cover the given shares of the pixels (in raster order)."""
    flat = np.full(height * width, LABEL_IDS["road"], dtype=np.uint8)
    start = 0
    for name, share in shares.items():
        count = round(share * flat.size)
        flat[start : start + count] = LABEL_IDS[name]
        start += count
    return flat.reshape(height, width)


def legend_colours(height: int, width: int, shares: dict[str, float]) -> tuple[np.ndarray, set[str]]:
    """Where the legend is drawn on a black photo (pixels that differ from the blend) and which classes' swatch
    colours it holds (the blend of a black photo is half a class colour, a swatch the whole)."""
    label_ids = scene(height, width, shares)
    photo = np.zeros((height, width, 3), np.uint8)
    overlay = overlay_image(photo, label_ids)
    legend = np.any(overlay != blend(photo, color_image(label_ids)), axis=2)
    pixels = {tuple(p) for p in overlay[legend]}
    return legend, {name for i, name in enumerate(CLASS_NAMES) if tuple(TRAIN_ID_COLORS[i]) in pixels}


@pytest.mark.parametrize(("height", "width"), [(64, 96), (128, 256), (512, 1024)])
def test_legend_lists_classes_of_one_percent_or_more_and_covers_at_most_a_quarter(height, width):
    shares = {"building": 0.3, "vegetation": 0.15, "sky": 0.1, "car": 0.05, "pole": 0.02, "person": 0.004}
    legend, listed = legend_colours(height, width, shares)
    assert legend.any() and legend.mean() <= LEGEND_MAX_COVER
    assert "person" not in listed  # 0.4% of the image
    assert {"road", "building"} <= listed
    if height >= 128:  # room for every class of 1% or more
        assert listed == {"road", "building", "vegetation", "sky", "car", "pole"}


def test_legend_text_grows_with_the_image():
    shares = {"building": 0.3}
    small, _ = legend_colours(64, 96, shares)
    large, _ = legend_colours(1024, 2048, shares)
    assert large.sum(axis=0).max() > 4 * small.sum(axis=0).max()  # the legend is taller on the larger image
    assert large.mean() <= LEGEND_MAX_COVER and small.mean() <= LEGEND_MAX_COVER
