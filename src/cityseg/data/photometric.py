"""mmsegmentation's PhotoMetricDistortion (mmseg/datasets/transforms/transforms.py), exactly, for one uint8 crop:
each step maps uint8 to uint8, so it is a 256-entry `cv2.LUT` table (mmseg's pixels bit for bit)."""

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2

_IDENTITY = np.arange(256, dtype=np.uint8)


@dataclass(frozen=True)
class PhotometricSpec:
    """mmsegmentation's PhotoMetricDistortion defaults."""

    p: float = 0.5  # each of the four steps is applied with this probability
    brightness_delta: float = 32.0  # additive, uniform in [-delta, delta]
    contrast_range: tuple[float, float] = (0.5, 1.5)  # multiplicative
    saturation_range: tuple[float, float] = (0.5, 1.5)  # multiplies HSV's S channel
    hue_delta: int = 18  # OpenCV hue steps (0..180, i.e. 2 degrees each); shift is an integer in [-delta, delta)


PHOTOMETRIC = PhotometricSpec()


@dataclass(frozen=True)
class PhotometricDraw:
    """One image's random choices; None means the step is skipped."""

    brightness: float | None = None  # delta added
    contrast: float | None = None  # alpha multiplied
    contrast_first: bool = True  # contrast second (after brightness) or last
    saturation: float | None = None  # alpha multiplied into S
    hue: int | None = None  # steps added to H, modulo 180


def draw_photometric(spec: PhotometricSpec = PHOTOMETRIC, generator: torch.Generator | None = None) -> PhotometricDraw:
    """One image's choices from torch's (global or given) generator: always 9 numbers, whatever is drawn."""
    u = torch.rand(9, generator=generator, dtype=torch.float64).tolist()
    applied = [value < spec.p for value in u[:4]]
    low, high = spec.contrast_range
    s_low, s_high = spec.saturation_range
    return PhotometricDraw(
        brightness=(2 * u[4] - 1) * spec.brightness_delta if applied[0] else None,
        contrast=low + (high - low) * u[5] if applied[1] else None,
        contrast_first=u[8] < 0.5,
        saturation=s_low + (s_high - s_low) * u[6] if applied[2] else None,
        # numpy's randint(-d, d): an integer in [-d, d), each with probability 1 / (2 d)
        hue=int(np.floor(-spec.hue_delta + 2 * spec.hue_delta * u[7])) if applied[3] else None,
    )


def convert_table(alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """mmseg's `convert` (float32 x * alpha + beta, clipped to 0..255, cast to uint8) of every uint8 value: (256,)."""
    values = np.arange(256, dtype=np.float32) * alpha + beta
    return np.clip(values, 0, 255).astype(np.uint8)


def hue_table(shift: int) -> np.ndarray:
    """(H + shift) % 180 for every uint8 H: (256,) uint8 (OpenCV's 8-bit H never exceeds 179)."""
    return ((np.arange(256) + shift) % 180).astype(np.uint8)


def value_tables(draw: PhotometricDraw) -> tuple[np.ndarray, np.ndarray]:
    """The per-value steps around the HSV ones, each composed into one table: (before, after), (256,) uint8."""
    before = convert_table(beta=draw.brightness) if draw.brightness is not None else _IDENTITY
    contrast = convert_table(alpha=draw.contrast) if draw.contrast is not None else _IDENTITY
    if draw.contrast_first:
        return contrast[before], _IDENTITY
    return before, contrast


def _lookup(array: np.ndarray, table: np.ndarray) -> np.ndarray:
    """cv2.LUT of a contiguous uint8 array of any layout, as one channel (cv2 reads a 3-D array as H, W, C)."""
    if table is _IDENTITY:
        return array
    return cv2.LUT(array.reshape(-1, array.shape[-1]), table).reshape(array.shape)


def distort_hwc(image: np.ndarray, draw: PhotometricDraw) -> np.ndarray:
    """mmseg's PhotoMetricDistortion of a contiguous (H, W, 3) uint8 RGB image with the given draw."""
    before, after = value_tables(draw)
    out = _lookup(image, before)
    round_trips = []  # the (H, S, V) tables of each HSV round trip, in order: saturation scales S, hue shifts H
    if draw.saturation is not None:
        round_trips.append([_IDENTITY, convert_table(alpha=draw.saturation), _IDENTITY])
    if draw.hue is not None:
        round_trips.append([hue_table(draw.hue), _IDENTITY, _IDENTITY])
    for tables in round_trips:
        hsv = cv2.LUT(cv2.cvtColor(out, cv2.COLOR_RGB2HSV), np.stack(tables, axis=-1).reshape(256, 1, 3))
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return _lookup(out, after)


def distort_chw(image: Tensor, draw: PhotometricDraw) -> Tensor:
    """The same for a (3, H, W) uint8 tensor (OpenCV merge/split: cheaper than a transpose)."""
    hwc_view = image.permute(1, 2, 0).is_contiguous()  # (3, H, W) view of (H, W, 3) memory: how images arrive
    if draw.saturation is None and draw.hue is None:
        before, after = value_tables(draw)
        table = after[before]
        if np.array_equal(table, _IDENTITY):
            return image
        memory = image.permute(1, 2, 0) if hwc_view else image.contiguous()  # (H, W, 3) or (3, H, W)
        out = torch.from_numpy(_lookup(memory.numpy(), table))
        return out.permute(2, 0, 1) if hwc_view else out
    if hwc_view:
        return torch.from_numpy(distort_hwc(image.permute(1, 2, 0).numpy(), draw)).permute(2, 0, 1)
    planes = image.contiguous().numpy()  # (3, H, W)
    distorted = distort_hwc(cv2.merge(list(planes)), draw)  # (H, W, 3)
    out = np.empty_like(planes)
    written = cv2.split(distorted, list(out))  # writes into the (3, H, W) planes given
    if not np.shares_memory(written[0], out):  # an OpenCV that allocated its own planes instead
        out = np.stack(written)
    return torch.from_numpy(out)


class PhotoMetricDistortion(v2.Transform):
    """mmsegmentation's PhotoMetricDistortion on the image of an (image, mask) pair, drawn from torch's generator."""

    _transformed_types = (tv_tensors.Image,)

    def __init__(self, spec: PhotometricSpec = PHOTOMETRIC) -> None:
        super().__init__()
        self.spec = spec

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"draw": draw_photometric(self.spec)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        out = distort_chw(inpt.as_subclass(Tensor), params["draw"])
        return tv_tensors.wrap(out, like=inpt)

    def extra_repr(self) -> str:
        return repr(self.spec)
