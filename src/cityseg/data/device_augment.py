"""`photometric`'s colour augmentations of a training batch on the device (`--gpu-aug`), each image with its own
draw: OpenCV's 8-bit HSV in tensor ops, the workers' result bit for bit where OpenCV fuses multiply-adds (x86-64)."""

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

from cityseg.data.layout import PIXEL_AUGMENTATIONS
from cityseg.data.photometric import (
    PHOTOMETRIC,
    PhotometricDraw,
    PhotometricSpec,
    convert_table,
    draw_photometric,
    hue_table,
    value_tables,
)
from cityseg.data.sampling import sample_seed
from cityseg.data.transforms import pixel_transform

_HSV_SHIFT = 12  # OpenCV's fixed-point shift in its 8-bit RGB -> HSV
# Per sector of the hue circle, which of OpenCV's four values (v, v(1-s), v(1-sf), v(1-s(1-f))) is R, G, B.
_RGB_FROM_SECTOR = ((0, 3, 1), (2, 0, 1), (1, 0, 3), (1, 2, 0), (3, 1, 0), (0, 1, 2))
_TABLES = 4  # per image: before, saturation, hue, after


@functools.cache
def _hsv_constants(device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """OpenCV's division tables (saturation, hue for the 180 range) and the sector map, on `device`, made once."""
    divisor = np.arange(1, 256, dtype=np.float64)
    saturation = np.zeros(256, dtype=np.int32)
    hue = np.zeros(256, dtype=np.int32)
    saturation[1:] = np.round((255 << _HSV_SHIFT) / divisor)  # saturate_cast<int>: round half to even
    hue[1:] = np.round((180 << _HSV_SHIFT) / (6 * divisor))
    sectors = torch.tensor(_RGB_FROM_SECTOR, dtype=torch.long)
    return torch.from_numpy(saturation).to(device), torch.from_numpy(hue).to(device), sectors.to(device)


def lookup(tables: Tensor, values: Tensor) -> Tensor:
    """Per-image table lookup: tables (B, 256) uint8, values (B, ...) uint8 -> uint8 of values' shape."""
    batch = values.shape[0]
    offsets = torch.arange(batch, device=values.device, dtype=torch.int32).mul_(256)
    index = values.int() + offsets.view(batch, *([1] * (values.dim() - 1)))
    return tables.reshape(-1).index_select(0, index.reshape(-1)).view(values.shape)


def rgb_to_hsv(images: Tensor) -> Tensor:
    """OpenCV's 8-bit RGB -> HSV of (B, 3, H, W) uint8 in its integer arithmetic (cv2.cvtColor's values)."""
    saturation_div, hue_div, _ = _hsv_constants(images.device)
    red, green, blue = images.int().unbind(dim=1)  # each (B, H, W)
    value = torch.maximum(torch.maximum(red, green), blue)
    diff = value - torch.minimum(torch.minimum(red, green), blue)
    half = 1 << (_HSV_SHIFT - 1)
    saturation = (diff * saturation_div[value.long()] + half) >> _HSV_SHIFT
    hue = torch.where(
        value == red, green - blue, torch.where(value == green, blue - red + 2 * diff, red - green + 4 * diff)
    )
    hue = (hue * hue_div[diff.long()] + half) >> _HSV_SHIFT
    hue = torch.where(hue < 0, hue + 180, hue)
    return torch.stack([hue, saturation, value], dim=1).to(torch.uint8)


def hsv_to_rgb(hsv: Tensor, rounded_tail: int | None = None) -> Tensor:
    """OpenCV's 8-bit HSV -> RGB of (B, 3, H, W) uint8: its float formula with fused multiply-adds, truncated as its
    vector loop does, the last `rounded_tail` columns of each row (`opencv_rounded_tail`) rounded as its scalar tail."""
    _, _, sectors = _hsv_constants(hsv.device)
    hue = hsv[:, 0].float() * np.float32(6.0 / 180.0)  # (B, H, W), in sixths of the circle
    saturation = hsv[:, 1].float() * np.float32(1.0 / 255.0)
    value = hsv[:, 2].float() * np.float32(1.0 / 255.0)
    whole = torch.trunc(hue)
    fraction = hue - whole
    sector = (whole - torch.trunc(whole * np.float32(1.0 / 6.0)) * 6).long()  # (B, H, W) in 0..5
    s64 = saturation.double()
    candidates = torch.stack(
        [
            value,
            value * (1 - saturation),
            value * (1 - s64 * fraction.double()).float(),
            value * (1 - s64 * (1 - fraction).double()).float(),
        ],
        dim=1,
    )  # (B, 4, H, W)
    index = sectors[sector].permute(0, 3, 1, 2)  # (B, 3, H, W): which candidate is R, G, B
    rgb = torch.gather(candidates, 1, index).mul_(255)
    out = rgb.trunc()
    tail = opencv_rounded_tail(rgb.shape[-1]) if rounded_tail is None else rounded_tail
    if tail:
        out[..., -tail:] = rgb[..., -tail:].round()  # half to even, as cvRound
    return out.clamp_(0, 255).to(torch.uint8)


_PROBE_HSV = (10, 100, 200)  # truncation gives RGB (200, 147, 121), rounding (200, 148, 122)


@functools.cache
def opencv_rounded_tail(width: int) -> int:
    """How many last columns of a `width`-wide row this machine's OpenCV rounds (scalar tail) instead of truncating
    (vector loop) in HSV -> RGB, probed on one row of that width."""
    probe = np.full((1, width, 3), _PROBE_HSV, dtype=np.uint8)
    truncated = hsv_to_rgb(torch.from_numpy(probe).permute(2, 0, 1)[None], rounded_tail=0)[0, :, 0, 0].numpy()
    differs = (cv2.cvtColor(probe, cv2.COLOR_HSV2RGB)[0] != truncated).any(axis=-1)  # (W,)
    return int(np.cumprod(differs[::-1]).sum())  # the differing suffix


def photometric_tables(draws: Sequence[PhotometricDraw]) -> Tensor:
    """The draws of a batch as one host tensor (B, 4 * 256 + 2) uint8: four tables, then the two HSV steps' flags."""
    identity = np.arange(256, dtype=np.uint8)
    rows = []
    for draw in draws:
        before, after = value_tables(draw)
        saturation = convert_table(alpha=draw.saturation) if draw.saturation is not None else identity
        hue = hue_table(draw.hue) if draw.hue is not None else identity
        flags = np.array([draw.saturation is not None, draw.hue is not None], dtype=np.uint8)
        rows.append(np.concatenate([before, saturation, hue, after, flags]))
    return torch.from_numpy(np.stack(rows))


@dataclass(eq=False)
class BatchPhotometric:
    """mmsegmentation's PhotoMetricDistortion of a whole uint8 batch on its device, each image with its own draw."""

    spec: PhotometricSpec = PHOTOMETRIC

    def draw(self, batch: int, generator: torch.Generator | None = None) -> list[PhotometricDraw]:
        """One draw per image, from torch's (global or given) generator."""
        return [draw_photometric(self.spec, generator) for _ in range(batch)]

    def __call__(self, images: Tensor, draws: Sequence[PhotometricDraw] | None = None) -> Tensor:
        # images (B, 3, H, W) uint8 -> (B, 3, H, W) uint8
        batch = images.shape[0]
        draws = self.draw(batch) if draws is None else draws
        packed = photometric_tables(draws)
        if images.device.type == "cuda":  # pinned + non_blocking: the copy does not wait for queued work
            packed = packed.pin_memory()
        packed = packed.to(images.device, non_blocking=True)
        tables = packed[:, : _TABLES * 256].view(batch, _TABLES, 256)
        applied = packed[:, _TABLES * 256 :].bool()  # (B, 2): saturation, hue
        x = lookup(tables[:, 0], images)
        # Saturation scales S, then hue shifts H: one HSV round trip each, kept only where drawn (mmseg makes
        # no round trip for a skipped step, and the round trip alone is not the identity).
        for step, channel, drawn in (
            (1, 1, [d.saturation is not None for d in draws]),
            (2, 0, [d.hue is not None for d in draws]),
        ):
            if not any(drawn):
                continue  # known on the host: no round trip, no sync
            hsv = rgb_to_hsv(x)
            hsv[:, channel] = lookup(tables[:, step], hsv[:, channel])
            x = torch.where(applied[:, step - 1].view(batch, 1, 1, 1), hsv_to_rgb(hsv), x)
        return lookup(tables[:, 3], x)


@dataclass(eq=False)
class PerImage:
    """A torchvision transform applied to each image of the batch with its own random draw."""

    transform: Callable[[Tensor], Tensor]

    def __call__(self, images: Tensor) -> Tensor:
        # images (B, 3, H, W) uint8 -> (B, 3, H, W) uint8
        return torch.stack([self.transform(image) for image in images])


@dataclass(eq=False)
class BatchAugment:
    """A recipe's per-pixel augmentations of a uint8 batch on the device, seeded per step."""

    stages: list[Callable[[Tensor], Tensor]]
    seed: int = 0
    rank: int = 0
    epoch: int = 0
    step: int = 0

    def start_epoch(self, epoch: int) -> None:
        """Steps are counted from 0 in every epoch."""
        self.epoch, self.step = epoch, 0

    def __call__(self, images: Tensor) -> Tensor:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, self.epoch, self.step, self.rank))
            self.step += 1
            for stage in self.stages:
                images = stage(images)
        return images


def build_batch_augment(aug: Sequence[str], seed: int = 0, rank: int = 0) -> BatchAugment | None:
    """The per-pixel ops of `aug` that `build_transform(pixel_ops=False)` leaves out (None: there are none)."""
    stages: list[Callable[[Tensor], Tensor]] = [
        BatchPhotometric(PHOTOMETRIC) if name == "photometric" else PerImage(pixel_transform(name))
        for name in PIXEL_AUGMENTATIONS
        if name in aug
    ]
    return BatchAugment(stages, seed, rank) if stages else None
