"""Colour augmentations of a training batch on the device (`--gpu-aug`), instead of in the loader workers.

Photometric distortion costs ~40 ms per 1024x512 crop on one CPU core: 14 loader workers then feed at
most ~350 crops/s, less than one H100/H200 trains. On the GPU, torchvision's per-image ops cost dozens of
small kernels per image; `BatchPhotometric` applies the same distortion to the whole batch with per-image
factors in about twenty kernels. Random draws happen on the host (torch's global generator, like the
workers' transforms), so the step never waits for the device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as F

from cityseg.transforms import PIXEL_AUGMENTATIONS, PhotometricSpec, pixel_transform

# RGB -> YIQ (NTSC): Y is luma, I and Q span the chroma plane that a hue shift rotates.
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def blend(image: Tensor, other: Tensor | float, factor: Tensor) -> Tensor:
    """factor * image + (1 - factor) * other, clamped to [0, 1]: torchvision's adjust_* blend, with one
    factor per image. image (B, 3, H, W) float in [0, 1]; other broadcastable; factor (B,)."""
    factor = factor.view(-1, 1, 1, 1)
    return (image * factor + other * (1 - factor)).clamp_(0, 1)


def adjust_brightness(image: Tensor, factor: Tensor) -> Tensor:
    """Per-image brightness: blend with black."""
    return blend(image, 0.0, factor)


def adjust_contrast(image: Tensor, factor: Tensor) -> Tensor:
    """Per-image contrast: blend with the image's mean grey level."""
    mean = F.rgb_to_grayscale(image).mean(dim=(-3, -2, -1), keepdim=True)  # (B, 1, 1, 1)
    return blend(image, mean, factor)


def adjust_saturation(image: Tensor, factor: Tensor) -> Tensor:
    """Per-image saturation: blend with the image's grey version."""
    return blend(image, F.rgb_to_grayscale(image), factor)


def hue_matrices(shift: Tensor) -> Tensor:
    """RGB -> RGB matrices (B, 3, 3) that shift hue by `shift` (B,) turns of the colour wheel: a rotation of
    the chroma plane in YIQ space. It keeps luma exactly, where an HSV shift (torchvision's adjust_hue)
    keeps the largest channel; both turn red towards yellow for a positive shift, by a similar angle (within
    half of it either way). Built on the host (tiny)."""
    angle = shift.double() * (-2 * math.pi)  # YIQ's I->Q rotation runs red->magenta; HSV's hue runs red->yellow
    rotation = torch.zeros(shift.shape[0], 3, 3, dtype=torch.float64)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2] = torch.cos(angle), -torch.sin(angle)
    rotation[:, 2, 1], rotation[:, 2, 2] = torch.sin(angle), torch.cos(angle)
    return (_YIQ_TO_RGB @ rotation @ _RGB_TO_YIQ).float()


def rotate_hue(image: Tensor, matrices: Tensor) -> Tensor:
    """Apply per-image colour matrices (B, 3, 3) from `hue_matrices` to image (B, 3, H, W): one batched matmul."""
    return torch.einsum("bij,bjhw->bihw", matrices, image).clamp_(0, 1)


class BatchPhotometric:
    """mmseg-style photometric distortion of a whole uint8 batch, each image with its own draw.

    Per image: brightness, then contrast either before or after saturation and hue, each applied with
    probability `spec.p` (the schedule and ranges of `transforms._photometric`). An op not drawn for an image
    gets the identity factor, so every op runs once on the whole batch.
    """

    def __init__(self, spec: PhotometricSpec) -> None:
        self.spec = spec

    def draw(self, batch: int) -> Tensor:
        """Factors (B, 5): brightness, contrast first, saturation, hue, contrast last (identity where not drawn)."""
        spec = self.spec

        def factor(bounds: tuple[float, float], identity: float) -> Tensor:
            value = torch.empty(batch).uniform_(*bounds)
            return torch.where(torch.rand(batch) < spec.p, value, torch.full((batch,), identity))

        brightness = factor(spec.brightness, 1.0)
        contrast = factor(spec.contrast, 1.0)
        contrast_first = torch.rand(batch) < 0.5
        saturation = factor(spec.saturation, 1.0)
        hue = factor(spec.hue, 0.0)
        first = torch.where(contrast_first, contrast, 1.0)
        last = torch.where(contrast_first, 1.0, contrast)
        return torch.stack([brightness, first, saturation, hue, last], dim=1)

    def __call__(self, images: Tensor) -> Tensor:
        # images (B, 3, H, W) uint8 -> (B, 3, H, W) uint8
        batch = images.shape[0]
        factors = self.draw(batch)  # (B, 5)
        packed = torch.cat([factors, hue_matrices(factors[:, 3]).view(batch, 9)], dim=1)  # (B, 14): one copy
        if images.device.type == "cuda":  # pinned + non_blocking: the copy does not wait for queued work
            packed = packed.pin_memory()
        packed = packed.to(images.device, non_blocking=True)
        brightness, first, saturation, _, last = packed[:, :5].unbind(dim=1)
        x = images.float().div_(255)
        x = adjust_brightness(x, brightness)
        x = adjust_contrast(x, first)
        x = adjust_saturation(x, saturation)
        x = rotate_hue(x, packed[:, 5:].view(batch, 3, 3))
        x = adjust_contrast(x, last)
        return x.mul_(255).round_().to(torch.uint8)

    def __repr__(self) -> str:
        return f"BatchPhotometric({self.spec})"


class PerImage:
    """A torchvision transform applied to each image of the batch with its own random draw."""

    def __init__(self, transform: Callable[[Tensor], Tensor]) -> None:
        self.transform = transform

    def __call__(self, images: Tensor) -> Tensor:
        # images (B, 3, H, W) uint8 -> (B, 3, H, W) uint8
        return torch.stack([self.transform(image) for image in images])

    def __repr__(self) -> str:
        return f"PerImage({self.transform!r})"


class BatchAugment:
    """The per-pixel augmentations of a recipe, in the loader's order, for a uint8 batch on the device."""

    def __init__(self, stages: list[Callable[[Tensor], Tensor]]) -> None:
        self.stages = stages

    def __call__(self, images: Tensor) -> Tensor:
        for stage in self.stages:
            images = stage(images)
        return images

    def __repr__(self) -> str:
        return f"BatchAugment({self.stages!r})"


def build_batch_augment(aug: Sequence[str]) -> BatchAugment | None:
    """The per-pixel ops of `aug` that `build_transform(pixel_ops=False)` leaves out (None: there are none).
    Photometric distortion runs batched; color-jitter and gaussian-blur image by image."""
    from cityseg.transforms import PHOTOMETRIC

    stages: list[Callable[[Tensor], Tensor]] = [
        BatchPhotometric(PHOTOMETRIC) if name == "photometric" else PerImage(pixel_transform(name))
        for name in PIXEL_AUGMENTATIONS
        if name in aug
    ]
    return BatchAugment(stages) if stages else None
