"""How to predict, without torch: inference modes, test-time augmentations and window sizes, checked before any
work is done, and `PredictOptions`, the settings of `predict_split` (the CLI lists them in --help)."""

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cityseg.errors import UserError
from cityseg.training.config import SIDE_MULTIPLE

MODES = ("whole", "slide")
TTAS = ("none", "flip", "ms-flip")
MS_SCALES = (0.75, 1.0, 1.25, 1.5, 1.75)
Size = tuple[int, int]  # (width, height)
# Photos (and network inputs) with more pixels are refused: memory grows with 19 float32 scores per pixel. Both are
# ~10% above what bench/photo_memory.py measured on a CPU in float32 (BENCHMARKS.md); on CUDA, device memory.
DEFAULT_MAX_PIXELS = 32_000_000
BYTES_PER_PIXEL = {"none": 190, "flip": 290, "ms-flip": 375}
WINDOW_BATCH_BYTES = 3.3e9  # four 2048x1024 windows (the default --whole-limit) in one forward pass
SMALLEST_WINDOW = 2 * SIDE_MULTIPLE  # a side of a sliding window: a smaller window sees too little of the scene


def memory_bound(max_pixels: int = DEFAULT_MAX_PIXELS) -> str:
    """The most memory one photo needs under `max_pixels`, per TTA, in words for --help and the docs."""
    gigabytes = {tta: (max_pixels * size + WINDOW_BATCH_BYTES) / 1e9 for tta, size in BYTES_PER_PIXEL.items()}
    return ", ".join(f"~{value:.0f} GB with --tta {tta}" for tta, value in gigabytes.items())


def check_window(window: Size | None, flag: str) -> None:
    """Refuse a sliding window (--crop, --whole-limit) with a side below SMALLEST_WINDOW."""
    least = SMALLEST_WINDOW
    if window is not None and min(window) < least:
        raise UserError(
            f"{flag} {window[0]}x{window[1]} is smaller than the smallest window, {least}x{least} (twice the model's "
            f"size multiple {SIDE_MULTIPLE}: smaller windows see too little and take thousands of forward passes "
            f"per photo); pass {flag} {max(least, window[0])}x{max(least, window[1])} or larger."
        )


def as_size(value: int | Sequence[int] | None) -> Size | None:
    """Accept one number for a square window as well as (width, height), as the CLI does."""
    if value is None:
        return None
    if isinstance(value, int):
        return value, value
    width, height = value
    return int(width), int(height)


def check_stride(crop: Size, stride: Size) -> None:
    if stride[0] > crop[0] or stride[1] > crop[1]:
        raise UserError(
            f"sliding-window stride {stride[0]}x{stride[1]} is larger than the crop {crop[0]}x{crop[1]}, which "
            "would leave pixels no window covers; use a --stride at most the --crop size."
        )


def default_stride(crop: Size) -> Size:
    """Two thirds of the crop, as in mmsegmentation's Cityscapes slide setting (341x682 for 512x1024)."""
    return max(1, (crop[0] * 2 + 2) // 3), max(1, (crop[1] * 2 + 2) // 3)


def check_options(
    mode: str, tta: str, crop: Size | int | None, stride: Size | int | None
) -> tuple[Size | None, Size | None]:
    """Reject bad modes, TTAs and window options before any work; return (crop, stride)."""
    crop, stride = as_size(crop), as_size(stride)
    if mode not in MODES:
        raise UserError(f"unknown inference mode {mode!r}; choose one of {', '.join(MODES)}.")
    if tta not in TTAS:
        raise UserError(f"unknown test-time augmentation {tta!r}; choose one of {', '.join(TTAS)}.")
    if mode == "whole" and (crop is not None or stride is not None):
        raise UserError("--crop and --stride only apply to sliding-window inference; add --mode slide or drop them.")
    if mode == "slide" and crop is None:
        raise UserError("sliding-window inference needs a window size; pass --crop WxH (e.g. 1024x512).")
    if crop is not None and stride is not None:
        check_stride(crop, stride)
    if mode == "slide" and stride is None:
        stride = default_stride(crop)
    return crop, stride


@dataclass(frozen=True)
class PredictOptions:
    """How `predict_split` predicts a split; every field has the CLI's default."""

    mode: str = "whole"  # whole: one forward per image; slide: overlapping `crop` windows, logits averaged
    tta: str = "none"  # none, flip, or ms-flip (flip at each of MS_SCALES)
    crop: Size | int | None = None  # window (width, height) in the image the network sees (after resizing)
    stride: Size | int | None = None  # step between windows; None = two thirds of `crop`
    batch_size: int = 1  # images per forward pass
    device: str = "auto"  # auto, cpu, cuda or cuda:N
    amp: bool | None = None  # autocast on CUDA; None: as the checkpoint was trained (its config's amp)
    workers: int = 0  # processes decoding PNGs in parallel (0 = in the calling process)
    color_out: Path | None = None  # also write Cityscapes-coloured images and overlays here
    overwrite: bool = False  # delete what an earlier prediction wrote with other settings (only its own files)
    progress: bool = True  # show a progress bar
    score: bool = False  # also score the label maps in memory as they are written (evaluation.runner.PredictionScorer)

    def checked(self) -> "PredictOptions":
        """These options, mode, TTA and windows checked before any work; crop and stride as (width, height)."""
        crop, stride = check_options(self.mode, self.tta, self.crop, self.stride)
        check_window(crop, "--crop")
        return dataclasses.replace(self, crop=crop, stride=stride)
