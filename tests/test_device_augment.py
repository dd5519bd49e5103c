"""Colour augmentation on the device (--gpu-aug): the batched ops do what torchvision's per-image ops do,
each image gets its own draw, and the step's batch stays uint8 of the same shape."""

from __future__ import annotations

import colorsys

import pytest
import torch
from torchvision.transforms.v2 import functional as F

from cityseg.device_augment import (
    BatchPhotometric,
    adjust_brightness,
    adjust_contrast,
    adjust_saturation,
    build_batch_augment,
    hue_matrices,
    rotate_hue,
)
from cityseg.transforms import PHOTOMETRIC, PhotometricSpec


def random_batch(batch: int = 4, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, 24, 40), dtype=torch.uint8, generator=generator)  # (B, 3, H, W)


@pytest.mark.parametrize(("ours", "theirs"), [
    (adjust_brightness, F.adjust_brightness),
    (adjust_contrast, F.adjust_contrast),
    (adjust_saturation, F.adjust_saturation),
])
def test_batched_blends_equal_torchvision_per_image(ours, theirs):
    images = random_batch().float() / 255
    factors = torch.tensor([0.5, 0.8, 1.0, 1.5])  # one per image, identity included
    expected = torch.stack([theirs(image, float(f)) for image, f in zip(images, factors, strict=True)])
    torch.testing.assert_close(ours(images.clone(), factors), expected, atol=1e-6, rtol=0)


def test_hue_rotation_keeps_luma_is_invertible_and_turns_hues_like_hsv():
    images = random_batch().float() / 255 * 0.3 + 0.35  # mid colours: nothing clipped
    shifts = torch.tensor([0.0, 0.05, -0.1, 0.1])
    turned = rotate_hue(images, hue_matrices(shifts))
    torch.testing.assert_close(turned[0], images[0])  # shift 0 is the identity
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    torch.testing.assert_close((turned * luma).sum(1), (images * luma).sum(1), atol=1e-5, rtol=0)
    torch.testing.assert_close(rotate_hue(turned, hue_matrices(-shifts)), images, atol=1e-5, rtol=0)

    colours = torch.tensor([[0.8, 0.3, 0.3], [0.3, 0.6, 0.3], [0.3, 0.3, 0.7], [0.6, 0.5, 0.2]])  # (4, 3)
    for shift in (0.05, -0.05, 0.1):
        moved = rotate_hue(colours.T.reshape(1, 3, 4, 1), hue_matrices(torch.tensor([shift])))[0, :, :, 0].T
        for before, after in zip(colours.tolist(), moved.tolist(), strict=True):
            turn = (colorsys.rgb_to_hsv(*after)[0] - colorsys.rgb_to_hsv(*before)[0] + 0.5) % 1 - 0.5
            # the direction of torchvision's HSV hue shift, and a similar amount (YIQ angles are not HSV's)
            assert 0.5 * abs(shift) <= turn * (1 if shift > 0 else -1) <= 1.5 * abs(shift)


def test_batch_photometric_draws_per_image_with_the_recipe_probabilities():
    photometric = BatchPhotometric(PHOTOMETRIC)
    torch.manual_seed(0)
    factors = photometric.draw(4000)  # (N, 5): brightness, contrast first, saturation, hue, contrast last
    identity = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0])
    applied = factors != identity
    assert applied[:, [0, 2, 3]].float().mean(0).sub(PHOTOMETRIC.p).abs().max() < 0.03
    assert not (applied[:, 1] & applied[:, 4]).any()  # contrast runs before or after, never twice
    assert (applied[:, 1] | applied[:, 4]).float().mean().sub(PHOTOMETRIC.p).abs() < 0.03
    for column, bounds in ((0, PHOTOMETRIC.brightness), (2, PHOTOMETRIC.saturation), (3, PHOTOMETRIC.hue)):
        drawn = factors[applied[:, column], column]
        assert bounds[0] <= drawn.min() and drawn.max() <= bounds[1]

    never = BatchPhotometric(PhotometricSpec(p=0.0))
    images = random_batch()
    assert torch.equal(never(images), images)  # nothing drawn: the exact input back
    out = photometric(images[:1].repeat(8, 1, 1, 1))
    assert out.dtype == torch.uint8 and out.shape == (8, 3, 24, 40)
    assert len({bytes(image.numpy()) for image in out}) > 1  # each copy got its own draw


def test_build_batch_augment_keeps_the_loader_order_and_skips_geometric_ops():
    assert build_batch_augment(("flip", "scale-crop")) is None
    augment = build_batch_augment(("gaussian-blur", "photometric", "flip", "color-jitter"))
    assert [type(stage).__name__ for stage in augment.stages] == ["PerImage", "BatchPhotometric", "PerImage"]
    assert "ColorJitter" in repr(augment.stages[0]) and "GaussianBlur" in repr(augment.stages[2])
    torch.manual_seed(1)
    images = random_batch(batch=3)
    out = augment(images)
    assert out.dtype == torch.uint8 and out.shape == images.shape and not torch.equal(out, images)
