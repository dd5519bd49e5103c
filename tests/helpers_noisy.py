"""Stand-in predictions for tests and benchmarks: the ground truth with blocks of wrong labels.

Blocks rather than single pixels, so the PNGs compress like a real model's output (decoding cost
is part of what the benchmark measures) and whole instances get partly missed (iIoU moves).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from cityseg.data.labelpng import encode_label_png, read_png
from cityseg.labels import VALID_LABEL_IDS

PREDICTION_SUFFIX = "_leftImg8bit.png"  # what `cityseg predict` names its outputs


def noisy_labels(
    gt: np.ndarray,
    rng: np.random.Generator,
    error_rate: float = 0.2,
    block: int = 8,
    values: Sequence[int] | None = None,
) -> np.ndarray:
    """(H, W) uint8 labelIds: `gt` with about `error_rate` of `block`x`block` cells replaced by a random id."""
    height, width = gt.shape
    cells = (-(-height // block), -(-width // block))
    choices = np.asarray(sorted(values if values is not None else VALID_LABEL_IDS), dtype=np.uint8)
    wrong = rng.random(cells) < error_rate  # (h, w) cells to corrupt
    ids = choices[rng.integers(0, choices.size, cells)]  # (h, w)
    noisy = np.where(wrong, ids, 0).repeat(block, axis=0).repeat(block, axis=1)[:height, :width]  # (H, W)
    return np.where(wrong.repeat(block, axis=0).repeat(block, axis=1)[:height, :width], noisy, gt).astype(np.uint8)


def write_noisy_predictions(
    frames: Iterable,
    out_dir: Path,
    seed: int = 0,
    error_rate: float = 0.2,
    block: int = 8,
    values: Sequence[int] | None = None,
) -> list[Path]:
    """One labelIds PNG per frame (anything with `.id` and `.label_ids`), named like `cityseg predict`'s output."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = []
    for frame in frames:
        gt, _mode = read_png(frame.label_ids)
        path = out_dir / f"{frame.id}{PREDICTION_SUFFIX}"
        path.write_bytes(encode_label_png(noisy_labels(gt, rng, error_rate, block, values)))  # as `cityseg predict`
        written.append(path)
    return written
