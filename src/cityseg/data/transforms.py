"""Joint image/mask transforms on torchvision.transforms.v2 (image bilinear, mask nearest; colour on the image).
Random scale and crop are one resize of the crop window; a crop past the image is padded last (as mmsegmentation):
the label with `PAD_LABEL`, the image with the ImageNet mean, which `mark_padding` makes exactly 0 and ignored."""

import functools
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from cityseg.data.layout import DEFAULT_SCALE_RANGE, PIXEL_AUGMENTATIONS
from cityseg.data.photometric import PhotoMetricDistortion
from cityseg.labels import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# A label value no trainId uses (0..18, 255): marks crop padding until the training step makes it ignore.
PAD_LABEL = 254
PAD_COLOR = tuple(round(255 * m) for m in IMAGENET_MEAN)  # (124, 116, 104): the mean as near as uint8 gets
CROP_TRIES = 10
RATIO_MAX_STRIDE = 4  # pixel step of the crop's class-ratio estimate on large windows
RATIO_SAMPLES = 16384  # pixels that estimate looks at, at least

PairTransformFn = Callable[[np.ndarray, np.ndarray], tuple[Tensor, Tensor]]


def normalize(image: Tensor, memory_format: torch.memory_format = torch.contiguous_format) -> Tensor:
    """uint8 (..., 3, H, W) -> float32 with ImageNet statistics, laid out in `memory_format` in the same pass."""
    image = image.as_subclass(Tensor) if isinstance(image, tv_tensors.TVTensor) else image
    scale, shift = _normalize_constants(image.device)
    return image.to(torch.float32, memory_format=memory_format).mul_(scale).sub_(shift)


@functools.cache
def _normalize_constants(device: torch.device) -> tuple[Tensor, Tensor]:
    """(scale, shift), each (3, 1, 1), made once per device: x/255 - mean over std == x * scale - shift."""
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    scale = 1.0 / (255.0 * std)
    shift = torch.tensor(IMAGENET_MEAN).view(3, 1, 1) / std
    return scale.to(device), shift.to(device)


def _dominant_class_ratio(mask: Tensor) -> float:
    """Share of the most frequent labelled class (1.0 if none), large windows subsampled."""
    height, width = mask.shape[-2:]
    stride = max(1, min(RATIO_MAX_STRIDE, math.isqrt(height * width // RATIO_SAMPLES)))
    sample = mask[..., ::stride, ::stride]
    counts = torch.bincount(sample.reshape(-1).long(), minlength=256)[:IGNORE_INDEX]
    total = int(counts.sum())
    return 1.0 if total == 0 else int(counts.max()) / total


class ScaleCrop(v2.Transform):
    """Random scale, then a random crop of up to `crop` (W, H): smaller where the scaled image is (`PadTo` pads it).
    While one class covers more than `max_class_ratio` of the labelled pixels the window is re-drawn, up to CROP_TRIES
    draws, keeping the least dominated one (unlike mmsegmentation's cat_max_ratio, which keeps an 11th unchecked)."""

    def __init__(
        self,
        crop: tuple[int, int] | None,
        scale_range: tuple[float, float] = (1.0, 1.0),
        base_size: tuple[int, int] | None = None,
        max_class_ratio: float = 1.0,
    ) -> None:
        super().__init__()
        self.crop = crop
        self.scale_range = scale_range
        self.base_size = base_size
        self.max_class_ratio = max_class_ratio

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = next(x for x in flat_inputs if isinstance(x, (tv_tensors.Image, tv_tensors.Mask))).shape[-2:]
        mask = next((x for x in flat_inputs if isinstance(x, tv_tensors.Mask)), None)
        base_w, base_h = self.base_size or (width, height)
        crop_w, crop_h = self.crop or (base_w, base_h)
        low, high = self.scale_range
        scale = float(torch.empty(1).uniform_(low, high)) if low != high else low
        scaled_h, scaled_w = max(1, round(base_h * scale)), max(1, round(base_w * scale))
        out_h, out_w = min(crop_h, scaled_h), min(crop_w, scaled_w)
        # Source pixels per output pixel; the crop window is mapped back through these.
        step_y, step_x = height / scaled_h, width / scaled_w
        src_h = max(1, min(height, round(out_h * step_y)))
        src_w = max(1, min(width, round(out_w * step_x)))
        best: tuple[float, int, int] | None = None
        tries = CROP_TRIES if (scaled_h > out_h or scaled_w > out_w) else 1
        for _ in range(tries):
            top = int(torch.randint(0, scaled_h - out_h + 1, ()).item() * step_y)
            left = int(torch.randint(0, scaled_w - out_w + 1, ()).item() * step_x)
            top, left = min(top, height - src_h), min(left, width - src_w)
            if mask is None or self.max_class_ratio >= 1.0:
                best = (0.0, top, left)
                break
            ratio = _dominant_class_ratio(mask[..., top : top + src_h, left : left + src_w])
            if best is None or ratio < best[0]:
                best = (ratio, top, left)
            if ratio <= self.max_class_ratio:
                break
        _, top, left = best
        return {"window": (top, left, src_h, src_w), "size": [out_h, out_w]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        top, left, height, width = params["window"]
        return F.resized_crop(inpt, top, left, height, width, size=params["size"], antialias=True)


class PadTo(v2.Transform):
    """Pad at the bottom and right up to `size` (W, H): the image with `PAD_COLOR`, the mask with `PAD_LABEL`."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        height, width = inpt.shape[-2:]
        missing_w, missing_h = max(0, self.size[0] - width), max(0, self.size[1] - height)
        if not (missing_w or missing_h):
            return inpt
        fill = PAD_LABEL if isinstance(inpt, tv_tensors.Mask) else list(PAD_COLOR)
        return F.pad(inpt, [0, 0, missing_w, missing_h], fill=fill)


def mark_padding(images: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    """Set a batch's crop padding to exactly 0 in place and its labels to ignore (no host sync)."""
    padded = masks == PAD_LABEL  # (B, H, W)
    images.masked_fill_(padded.unsqueeze(1), 0.0)
    return images, masks.masked_fill(padded, IGNORE_INDEX)


def pixel_transform(name: str) -> v2.Transform:
    """One per-pixel augmentation of PIXEL_AUGMENTATIONS, for one image."""
    if name == "color-jitter":
        return v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1)
    if name == "photometric":
        return PhotoMetricDistortion()
    if name == "gaussian-blur":
        return v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.1, 2.0))], p=0.5)
    raise ValueError(f"{name!r} is not a per-pixel augmentation")  # callers iterate PIXEL_AUGMENTATIONS


def _as_tensor(array: np.ndarray | Tensor) -> Tensor:
    """The array's memory without a copy; read-only ones (cache memmaps) too, as every op below makes a new tensor."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's warning about non-writable arrays
        return torch.as_tensor(array)


class PairTransform:
    """(image (H, W, 3), mask (H, W)) uint8 -> (image (3, H, W), mask (H, W)) uint8."""

    def __init__(self, ops: list[v2.Transform]) -> None:
        self.ops = v2.Compose(ops) if ops else None

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[Tensor, Tensor]:
        image_t = tv_tensors.Image(_as_tensor(image).permute(2, 0, 1))  # (3, H, W) uint8
        mask_t = tv_tensors.Mask(_as_tensor(mask))  # (H, W) uint8
        if self.ops is None:  # nothing copied yet: never hand out views of the caller's (maybe read-only) arrays
            return image_t.as_subclass(Tensor).contiguous(), mask_t.as_subclass(Tensor).clone()
        image_t, mask_t = self.ops(image_t, mask_t)
        return image_t.as_subclass(Tensor).contiguous(), mask_t.as_subclass(Tensor).contiguous()

    def __repr__(self) -> str:
        return f"PairTransform({self.ops!r})"


def build_transform(
    train: bool,
    aug: Sequence[str] = (),
    size: tuple[int, int] | None = None,
    crop: tuple[int, int] | None = None,
    scale_range: tuple[float, float] | None = None,
    crop_max_class_ratio: float = 0.75,
    pixel_ops: bool = True,
) -> PairTransformFn:
    """Training: scale-and-crop, flip, colour ops, `PadTo`; evaluation: a resize to `size` only."""
    aug = tuple(aug)  # names and sizes checked by TrainConfig
    ops: list[v2.Transform] = []
    pad_to = None
    if train and ("scale-crop" in aug or crop is not None):
        scales = (scale_range or DEFAULT_SCALE_RANGE) if "scale-crop" in aug else (1.0, 1.0)
        ops.append(ScaleCrop(crop, scales, base_size=size, max_class_ratio=crop_max_class_ratio))
        pad_to = crop or size
    elif size is not None:
        ops.append(v2.Resize((size[1], size[0]), antialias=True))
    if train:
        if "flip" in aug:
            ops.append(v2.RandomHorizontalFlip(p=0.5))
        if pixel_ops:
            ops.extend(pixel_transform(name) for name in PIXEL_AUGMENTATIONS if name in aug)
    if pad_to is not None:
        ops.append(PadTo(pad_to))
    return PairTransform(ops)
