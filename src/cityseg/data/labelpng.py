"""Label PNGs (labelIds, instanceIds, predictions): read exactly as the official script reads them (PIL), a refused
file one UnreadablePngError; written as 8-bit grayscale by OpenCV (BENCHMARKS.md, label-png). PIL opens every file,
so it decides what is readable; plain 8/16-bit grayscale pixels then come from imagecodecs' libpng (faster, GIL
released), any other kind or any file libpng refuses from PIL (tests/data/test_labelpng.py fuzzes both paths)."""

from pathlib import Path

import cv2
import imagecodecs
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


# PIL's raw modes whose pixels libpng returns unchanged: 8-bit grayscale (mode L) and 16-bit big-endian (I;16)
_LIBPNG_RAW_MODES = {"L": np.uint8, "I;16B": np.uint16}


def _libpng_pixels(image: Image.Image, path: Path) -> np.ndarray | None:
    """The pixels by libpng where PIL would read them unchanged (one non-interlaced grayscale tile, no tRNS)."""
    if image.format != "PNG" or len(image.tile) != 1 or {"interlace", "transparency"} & image.info.keys():
        return None
    dtype = _LIBPNG_RAW_MODES.get(image.tile[0].args)
    if dtype is None:
        return None
    try:
        array = imagecodecs.png_decode(Path(path).read_bytes())
    except Exception:  # noqa: BLE001 - PngError, or e.g. UnicodeDecodeError from libpng's message; PIL decides
        return None
    return array if array.shape == image.size[::-1] and array.dtype == dtype else None


def read_png(path: Path) -> tuple[np.ndarray, str]:
    """(pixels, PIL mode): the array the official script reads (`np.array(Image.open(path))`), decoded now."""
    try:
        with Image.open(path) as image:
            fast = _libpng_pixels(image, path)
            if fast is not None:
                return fast, image.mode
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
