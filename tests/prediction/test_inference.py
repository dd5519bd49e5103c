"""Inference tensor logic: whole image vs sliding window, padding to multiples of 32, flip and multi-scale TTA,
and the precision prediction runs in."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from cityseg.errors import UserError
from cityseg.labels import NUM_CLASSES
from cityseg.prediction.inference import (
    _window_starts,
    flip_tta,
    forward_padded,
    inference_dtype,
    precision_name,
    predict_logits,
    sliding_window,
    wants_amp,
)
from cityseg.prediction.options import MS_SCALES
from cityseg.training.model import build_model

WIDTH, HEIGHT = 128, 64


@pytest.fixture(scope="module")
def unet() -> nn.Module:
    """An untrained but real U-Net/ResNet-34, in eval mode (BatchNorm uses its running statistics)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    return build_model(encoder_weights=None).eval()


@pytest.fixture(scope="module")
def pointwise() -> nn.Module:
    """A 1x1 convolution: every output pixel depends only on its own input pixel, so any window tiling is exact."""
    torch.manual_seed(1)
    return nn.Conv2d(3, NUM_CLASSES, kernel_size=1).eval()


@pytest.fixture
def image() -> torch.Tensor:
    torch.manual_seed(2)
    return torch.randn(2, 3, HEIGHT, WIDTH)  # (B, 3, H, W), like normalised images


class ShapeRecorder(nn.Module):
    """Wraps a model and remembers the (H, W) of every input it sees."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.seen: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape[-2:]))
        return self.inner(x)


def test_window_starts_cover_the_border() -> None:
    assert _window_starts(100, 48, 20) == [0, 20, 40, 52]  # last window flush with the border
    assert _window_starts(96, 48, 48) == [0, 48]  # exact tiling adds nothing
    assert _window_starts(30, 48, 20) == [0]  # smaller than the window: one (padded) window


def test_slide_equals_whole_when_one_window_covers_the_image(unet, image) -> None:
    whole = predict_logits(unet, image, mode="whole")
    slide = predict_logits(unet, image, mode="slide", crop=(WIDTH, HEIGHT), stride=(WIDTH, HEIGHT))
    assert whole.shape == (2, NUM_CLASSES, HEIGHT, WIDTH)
    torch.testing.assert_close(slide, whole)
    assert torch.equal(slide.argmax(1), whole.argmax(1))


@pytest.mark.parametrize("crop,stride", [((48, 32), (20, 16)), ((64, 64), (64, 32)), ((40, 24), (40, 24))])
def test_overlapping_windows_are_averaged_by_their_count(pointwise, image, crop, stride) -> None:
    # A wrong overlap count would scale the logits of multiply-covered pixels.
    whole = forward_padded(pointwise, image)
    slide = sliding_window(pointwise, image, crop=crop, stride=stride, window_batch=3)
    assert slide.shape == (2, NUM_CLASSES, HEIGHT, WIDTH)
    torch.testing.assert_close(slide, whole, rtol=1e-5, atol=1e-5)


def test_window_larger_than_image_is_padded(pointwise, image) -> None:
    slide = sliding_window(pointwise, image, crop=(256, 96), stride=(200, 80))
    torch.testing.assert_close(slide, forward_padded(pointwise, image))


def test_sides_not_divisible_by_32_are_padded_and_cropped_back(unet) -> None:
    odd = torch.randn(1, 3, 50, 100)
    probs = predict_logits(unet, odd, mode="whole")
    assert probs.shape == (1, NUM_CLASSES, 50, 100)
    slide = predict_logits(unet, odd, mode="slide", crop=(70, 40), stride=30)
    assert slide.shape == (1, NUM_CLASSES, 50, 100)


def test_flip_tta_commutes_with_mirroring(unet, image) -> None:
    pred = predict_logits(unet, image, tta="flip")
    pred_of_mirror = predict_logits(unet, image.flip(-1), tta="flip")
    torch.testing.assert_close(pred_of_mirror, pred.flip(-1))
    # Without TTA an untrained U-Net is not mirror-symmetric, so the property above is TTA's doing.
    plain = predict_logits(unet, image)
    assert not torch.allclose(predict_logits(unet, image.flip(-1)), plain.flip(-1), atol=1e-4)


def test_flip_tta_averages_both_views() -> None:
    # A "model" that is 1 in the left half: averaged with its mirror it must be 0.5 everywhere.
    def left_half(x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], 1, *x.shape[-2:])
        out[..., : x.shape[-1] // 2] = 1
        return out

    averaged = flip_tta(left_half, torch.zeros(1, 3, 4, 8))
    assert torch.equal(averaged, torch.full((1, 1, 4, 8), 0.5))


def test_ms_flip_gives_probabilities_at_input_size(unet, image) -> None:
    recorder = ShapeRecorder(unet)
    probs = predict_logits(recorder, image[:1], tta="ms-flip")
    assert probs.shape == (1, NUM_CLASSES, HEIGHT, WIDTH)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(1, HEIGHT, WIDTH))
    assert probs.min() >= 0
    # Five scales, each plain and mirrored: ten forwards, at sizes padded up to multiples of 32.
    assert len(recorder.seen) == 2 * len(MS_SCALES)
    assert all(h % 32 == 0 and w % 32 == 0 for h, w in recorder.seen)
    largest = max(MS_SCALES)
    assert max(recorder.seen) == (math.ceil(HEIGHT * largest / 32) * 32, math.ceil(WIDTH * largest / 32) * 32)


def test_scale_size_resizes_input_and_returns_original_size(pointwise, image) -> None:
    recorder = ShapeRecorder(pointwise)
    probs = predict_logits(recorder, image, scale_size=(64, 32))
    assert recorder.seen == [(32, 64)]  # the network saw the training size (W=64, H=32)
    assert probs.shape == (2, NUM_CLASSES, HEIGHT, WIDTH)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(2, HEIGHT, WIDTH))


def test_slide_crop_is_measured_in_the_resized_image(pointwise, image) -> None:
    recorder = ShapeRecorder(pointwise)
    predict_logits(recorder, image, mode="slide", crop=(32, 32), stride=(32, 32), scale_size=(64, 32))
    assert len(recorder.seen) == 1  # both windows (2 x 1 over 64x32) in one batched forward
    assert recorder.seen == [(32, 32)]


@pytest.mark.parametrize(
    "options,match",
    [
        ({"mode": "tiles"}, "unknown inference mode"),
        ({"tta": "rotate"}, "unknown test-time augmentation"),
        ({"crop": (64, 64)}, "only apply to sliding-window"),
        ({"mode": "slide"}, "needs a window size"),
        ({"mode": "slide", "crop": (32, 32), "stride": (64, 16)}, "larger than the crop"),
    ],
)
def test_bad_options_are_user_errors(pointwise, image, options, match) -> None:
    with pytest.raises(UserError, match=match):
        predict_logits(pointwise, image, **options)


@pytest.mark.parametrize(
    ("trained_with_amp", "flag", "native_bf16", "expected"),
    [
        (False, None, True, "float32"),  # the seed recipe: validated in fp32, so predicted in fp32
        (True, None, True, "bf16 autocast"),
        (True, None, False, "fp16 autocast"),  # a GPU without native bf16
        (True, False, True, "float32"),  # --no-amp
        (False, True, True, "bf16 autocast"),  # --amp
        (None, None, True, "float32"),  # a config that never said
    ],
)
def test_precision_follows_the_checkpoint_unless_the_flag_says_otherwise(
    monkeypatch, trained_with_amp, flag, native_bf16, expected
) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native_bf16)
    config = {} if trained_with_amp is None else {"amp": trained_with_amp}
    amp = wants_amp({"config": config}, flag)
    assert precision_name(inference_dtype(SimpleNamespace(type="cuda"), amp)) == expected
    assert precision_name(inference_dtype(torch.device("cpu"), amp)) == "float32"  # no autocast on a CPU
