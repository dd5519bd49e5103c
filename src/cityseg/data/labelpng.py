"""Label PNGs (labelIds, instanceIds, predictions): read as the official script reads them, written fast.

Reading goes through PIL, the official script's own reader, so a file is read exactly when that script can read
it; whatever PIL refuses becomes one UnreadablePngError naming the file. Label maps cityseg writes are 8-bit
grayscale PNGs from OpenCV's libpng encoder, Up filter at zlib level 1 (BENCHMARKS.md, label-png).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from cityseg.errors import UserError, describe_error

LABEL_PNG_ENCODING = "opencv-up-zlib1"  # names the encoding, e.g. for files generated once and reused
_LABEL_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]


class UnreadablePngError(UserError):
    """A PNG that PIL cannot read (truncated, corrupt, not an image at all)."""

    def __init__(self, path: Path | str, detail: str) -> None:
        super().__init__(f"cannot read {path} as a PNG ({detail})")
        self.path = Path(path)
        self.detail = detail


def png_header(path: Path) -> tuple[str, tuple[int, int]]:
    """(PIL mode, (W, H)) of an image file from its header, without decoding the pixels."""
    try:
        with Image.open(path) as image:
            return image.mode, image.size
    except Exception as exc:  # noqa: BLE001 - a damaged file can make PIL raise almost anything
        raise UnreadablePngError(path, describe_error(exc)) from None


def read_png(path: Path) -> tuple[np.ndarray, str]:
    """(pixels, PIL mode): the array the official script reads (`np.array(Image.open(path))`), decoded now."""
    try:
        with Image.open(path) as image:
            image.load()
            return np.asarray(image), image.mode
    except Exception as exc:  # noqa: BLE001 - a damaged file can make PIL or zlib raise almost anything
        raise UnreadablePngError(path, describe_error(exc)) from None


def encode_label_png(labels: np.ndarray) -> bytes:
    """PNG bytes of an (H, W) uint8 label map (8-bit grayscale: what PIL and the official script read as mode L)."""
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise ValueError(f"encode_label_png takes (H, W) uint8 label maps, got {labels.dtype} {labels.shape}")
    ok, data = cv2.imencode(".png", np.ascontiguousarray(labels), _LABEL_PNG_PARAMS)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {labels.shape} label map as PNG")
    return data.tobytes()
