"""Colour augmentation on the device (--gpu-aug): the batched photometric distortion is mmsegmentation's on
the same draws (the reference in helpers_photometric), each image gets its own draw, the draws follow
(seed, epoch, step), and the step's batch stays uint8 of the same shape."""

from __future__ import annotations

import platform

import cv2
import numpy as np
import pytest
import torch
from helpers_photometric import colourful_image, every_kind_of_draw, reference_rgb

from cityseg.data.device_augment import (
    BatchAugment,
    BatchPhotometric,
    build_batch_augment,
    hsv_to_rgb,
    opencv_rounded_tail,
    rgb_to_hsv,
)
from cityseg.data.photometric import PHOTOMETRIC, PhotometricDraw, PhotometricSpec, draw_photometric

torch.set_num_threads(1)


def random_batch(batch: int = 4, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, 24, 40), dtype=torch.uint8, generator=generator)  # (B, 3, H, W)


def as_batch(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()  # (B, 3, H, W)


def test_rgb_to_hsv_is_opencvs_exactly():
    image = colourful_image(height=256, width=256, seed=3)  # 65k colours incl. greys, pure hues, extremes
    ours = rgb_to_hsv(as_batch([image]))[0].permute(1, 2, 0).numpy()
    assert np.array_equal(ours, cv2.cvtColor(image, cv2.COLOR_RGB2HSV))


# OpenCV's x86-64 wheels fuse the multiply-adds of their HSV -> RGB, which hsv_to_rgb reproduces exactly; a build
# that does not rounds a few pixels per ten thousand one grey level differently.
FUSED = platform.machine().lower() in ("x86_64", "amd64")


def assert_opencvs(ours: np.ndarray, expected: np.ndarray) -> None:
    diff = np.abs(ours.astype(int) - expected.astype(int))
    assert diff.max() == 0 if FUSED else (diff.max() <= 1 and (diff > 0).mean() < 1e-3)


@pytest.mark.parametrize("width", [256, 800, 4095])
def test_hsv_to_rgb_is_opencvs_scalar_tail_included(width):
    """OpenCV truncates in its vector loop and rounds in the scalar tail after it (the last W mod 64 columns of
    a row with AVX-512, W mod 32 with AVX2): 800 and 4095 have such tails, 256 none on either."""
    rng = np.random.default_rng(4)
    hsv = rng.integers(0, 256, (32, width, 3), dtype=np.uint8)
    hsv[..., 0] %= 180
    ours = hsv_to_rgb(as_batch([hsv]))[0].permute(1, 2, 0).numpy()
    assert_opencvs(ours, cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB))
    truncated = hsv_to_rgb(as_batch([hsv]), rounded_tail=0)[0].permute(1, 2, 0).numpy()
    tail = opencv_rounded_tail(width)
    assert np.array_equal(truncated[:, : width - tail], ours[:, : width - tail])  # the vector loop truncates
    assert tail == 0 or not np.array_equal(truncated[:, -tail:], ours[:, -tail:])  # the tail rounds
    if width % 16:
        assert tail > 0  # OpenCV's vector loops take 16, 32 or 64 pixels: such a width always leaves a tail


@pytest.mark.parametrize("draw", every_kind_of_draw(), ids=repr)
def test_batched_distortion_equals_mmseg_on_fixed_draws(draw):
    images = [colourful_image(height=32, width=64, seed=s) for s in range(2)]
    out = BatchPhotometric()(as_batch(images), [draw, draw])
    for got, image in zip(out, images, strict=True):
        assert_opencvs(got.permute(1, 2, 0).numpy(), reference_rgb(image, draw))


@pytest.mark.parametrize("width", [800, 4095])
def test_batched_distortion_equals_mmseg_at_widths_with_a_scalar_tail(width):
    image = colourful_image(height=8, width=width, seed=7)
    draw = PhotometricDraw(brightness=-12.3, contrast=1.21, contrast_first=True, saturation=0.73, hue=9)
    got = BatchPhotometric()(as_batch([image]), [draw])[0]
    assert_opencvs(got.permute(1, 2, 0).numpy(), reference_rgb(image, draw))


def test_each_image_gets_its_own_draw_and_its_own_result():
    images = [colourful_image(height=32, width=64, seed=s) for s in range(6)]
    generator = torch.Generator().manual_seed(5)
    draws = [draw_photometric(PHOTOMETRIC, generator) for _ in images]
    out = BatchPhotometric()(as_batch(images), draws)
    for got, image, draw in zip(out, images, draws, strict=True):
        assert_opencvs(got.permute(1, 2, 0).numpy(), reference_rgb(image, draw))

    never = BatchPhotometric(PhotometricSpec(p=0.0))
    batch = random_batch()
    assert torch.equal(never(batch), batch)  # nothing drawn: the exact input back
    copies = BatchPhotometric()(batch[:1].repeat(8, 1, 1, 1))
    assert copies.dtype == torch.uint8 and copies.shape == (8, 3, 24, 40)
    assert len({bytes(image.numpy()) for image in copies}) > 1  # each copy got its own draw


def test_batch_augment_draws_follow_seed_epoch_and_step_only():
    batch = random_batch(batch=3)

    def run(seed: int, epoch: int, steps: int) -> torch.Tensor:
        augment = build_batch_augment(("photometric", "gaussian-blur"), seed=seed)
        augment.start_epoch(epoch)
        for _ in range(steps):
            out = augment(batch)
        return out

    torch.manual_seed(123)
    first = run(0, 2, 3)
    torch.manual_seed(456)  # the global stream does not matter, and is not advanced
    state = torch.get_rng_state()
    assert torch.equal(run(0, 2, 3), first)
    assert torch.equal(torch.get_rng_state(), state)
    assert not torch.equal(run(0, 2, 2), first) and not torch.equal(run(0, 3, 3), first)
    assert not torch.equal(run(1, 2, 3), first)
    ranked = BatchAugment(build_batch_augment(("photometric",)).stages, seed=0, rank=1)
    assert not torch.equal(ranked(batch), build_batch_augment(("photometric",))(batch))  # ranks draw apart


def test_build_batch_augment_keeps_the_loader_order_and_skips_geometric_ops():
    assert build_batch_augment(("flip", "scale-crop")) is None
    augment = build_batch_augment(("gaussian-blur", "photometric", "flip", "color-jitter"))
    assert [type(stage).__name__ for stage in augment.stages] == ["PerImage", "BatchPhotometric", "PerImage"]
    assert "ColorJitter" in repr(augment.stages[0]) and "GaussianBlur" in repr(augment.stages[2])
    images = random_batch(batch=3)
    out = augment(images)
    assert out.dtype == torch.uint8 and out.shape == images.shape and not torch.equal(out, images)


def test_identity_draws_leave_every_pixel():
    batch = random_batch()
    assert torch.equal(BatchPhotometric()(batch, [PhotometricDraw()] * 4), batch)
