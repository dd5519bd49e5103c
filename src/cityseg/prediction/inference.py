"""Turning a batch of normalised images into class probabilities: whole image, sliding window, TTA.

Pure tensor logic; sizes given by callers are (width, height), like the CLI. As in the usual Cityscapes recipe:
resize the input to the training size times the TTA scale, run the network on the whole image or overlapping
windows (logits averaged), upsample the logits to the input's size, softmax, average over flips and scales.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cityseg.prediction.options import MS_SCALES, Size, as_size, check_options, check_stride
from cityseg.training.config import SIDE_MULTIPLE


def pad_to_multiple(image: Tensor, multiple: int = SIDE_MULTIPLE) -> Tensor:
    """Pad bottom/right so both sides divide by `multiple`; reflect keeps border statistics natural."""
    height, width = image.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h == 0 and pad_w == 0:
        return image
    # Reflection needs a pad shorter than the side; tiny inputs get zeros (the mean colour after normalisation).
    mode = "reflect" if pad_h < height and pad_w < width else "constant"
    return F.pad(image, (0, pad_w, 0, pad_h), mode=mode)


def forward_padded(model: nn.Module, image: Tensor) -> Tensor:
    """Run `model` on an input of any size by padding to a multiple of 32 and cropping the logits back."""
    height, width = image.shape[-2:]
    padded = pad_to_multiple(image)  # (B, 3, H', W')
    if padded.is_cuda:
        padded = padded.contiguous(memory_format=torch.channels_last)
    logits = model(padded)  # (B, C, H', W')
    return logits[..., :height, :width].float()


def _window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets covering [0, length) with the last window flush with the border."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def sliding_window(
    model: nn.Module, image: Tensor, crop: Size | int, stride: Size | int, window_batch: int = 4
) -> Tensor:
    """(B, C, H, W) float logits of normalised images (B, 3, H, W), averaged over overlapping `crop` windows (width,
    height), so a large image fits in memory at full detail; an image smaller than the crop is zero-padded."""
    crop, stride = as_size(crop), as_size(stride)
    check_stride(crop, stride)
    crop_w, crop_h = crop
    stride_w, stride_h = stride
    batch, _, height, width = image.shape
    pad_h, pad_w = max(0, crop_h - height), max(0, crop_w - width)
    padded = F.pad(image, (0, pad_w, 0, pad_h)) if pad_h or pad_w else image  # (B, 3, Hp, Wp)
    full_h, full_w = padded.shape[-2:]
    boxes = [
        (top, left)
        for top in _window_starts(full_h, crop_h, stride_h)
        for left in _window_starts(full_w, crop_w, stride_w)
    ]
    win_h, win_w = min(crop_h, full_h), min(crop_w, full_w)
    logit_sum: Tensor | None = None
    count = torch.zeros((1, 1, full_h, full_w), device=image.device)
    for first in range(0, len(boxes), window_batch):
        group = boxes[first : first + window_batch]
        windows = torch.cat([padded[..., t : t + win_h, left : left + win_w] for t, left in group])
        logits = forward_padded(model, windows)  # (len(group) * B, C, win_h, win_w)
        if logit_sum is None:
            logit_sum = torch.zeros((batch, logits.shape[1], full_h, full_w), device=image.device)
        for k, (top, left) in enumerate(group):
            logit_sum[..., top : top + win_h, left : left + win_w] += logits[k * batch : (k + 1) * batch]
            count[..., top : top + win_h, left : left + win_w] += 1
    return logit_sum.div_(count)[..., :height, :width]


def flip_tta(predict: Callable[[Tensor], Tensor], image: Tensor) -> Tensor:
    """Average `predict` ((B, 3, H, W) -> (B, C, H, W) probabilities) over the image and its mirror (in place)."""
    plain = predict(image)
    return plain.add_(predict(image.flip(-1)).flip(-1)).div_(2)


def _probabilities_at_scale(
    model: nn.Module,
    image: Tensor,
    input_hw: tuple[int, int],
    mode: str,
    crop: Size | None,
    stride: Size | None,
    window_batch: int,
) -> Tensor:
    """Resize to `input_hw`, run the network, upsample logits to the input's size, softmax."""
    height, width = image.shape[-2:]
    resized = image
    if tuple(input_hw) != (height, width):
        shrinking = input_hw[0] < height or input_hw[1] < width
        resized = F.interpolate(image, size=input_hw, mode="bilinear", align_corners=False, antialias=shrinking)
    if mode == "slide":
        logits = sliding_window(model, resized, crop, stride, window_batch)
    else:
        logits = forward_padded(model, resized)  # (B, C, h, w)
    if logits.shape[-2:] != (height, width):
        logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
    return logits.softmax(dim=1)  # (B, C, H, W)


def wants_amp(state: dict, amp: bool | None) -> bool:
    """Predict in the precision the model was trained and validated in (its config's `amp`) unless `amp` is given."""
    return bool((state.get("config") or {}).get("amp", False)) if amp is None else bool(amp)


def inference_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """The autocast dtype with `amp`: bf16 where the GPU has it natively, else fp16; None (float32) off CUDA."""
    from cityseg.training.model import mixed_precision_dtype

    return mixed_precision_dtype(device) if amp else None


def precision_name(dtype: torch.dtype | None) -> str:
    """How the forward passes ran, as the prediction manifest (and so the evaluation JSON) records it."""
    return {torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}.get(dtype, "float32")


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    image: Tensor,
    mode: str = "whole",
    tta: str = "none",
    crop: Size | int | None = None,
    stride: Size | int | None = None,
    scale_size: Size | None = None,
    scales: Sequence[float] = MS_SCALES,
    window_batch: int = 4,
    amp: bool = False,
) -> Tensor:
    """Softmax probabilities (B, C, H, W) for normalised images (B, 3, H, W) at their own resolution, the same kind
    of tensor for every TTA. Inputs are resized to `scale_size` (the training size, width x height; times each TTA
    scale), in which `crop`/`stride` are measured. `model` in eval mode; on CUDA `amp` runs it under autocast."""
    crop, stride = check_options(mode, tta, crop, stride)
    height, width = image.shape[-2:]
    reference_hw = (scale_size[1], scale_size[0]) if scale_size is not None else (height, width)
    tta_scales = tuple(scales) if tta == "ms-flip" else (1.0,)

    def at_scale(scale: float) -> Callable[[Tensor], Tensor]:
        input_hw = max(1, round(reference_hw[0] * scale)), max(1, round(reference_hw[1] * scale))
        return lambda x: _probabilities_at_scale(model, x, input_hw, mode, crop, stride, window_batch)

    dtype = inference_dtype(image.device, amp)
    with torch.autocast(device_type=image.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        total: Tensor | None = None
        for scale in tta_scales:
            predict = at_scale(scale)
            probs = predict(image) if tta == "none" else flip_tta(predict, image)  # (B, C, H, W)
            total = probs if total is None else total.add_(probs)
            del probs
    return total.div_(len(tta_scales))  # in place: a photo's class scores exist once, not twice
