"""Photometric distortion in the loader workers is mmsegmentation's PhotoMetricDistortion, pixel for pixel:
the table-and-OpenCV implementation equals a direct transcription of mmseg's code on the same draws, and
the draws follow mmseg's ranges and probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_photometric import colourful_image, every_kind_of_draw, reference_rgb

from cityseg.data.photometric import PHOTOMETRIC, PhotometricDraw, distort_chw, distort_hwc, draw_photometric
from cityseg.data.transforms import build_transform

torch.set_num_threads(1)


@pytest.mark.parametrize("draw", every_kind_of_draw(), ids=repr)
def test_tables_and_opencv_equal_mmseg_on_fixed_draws(draw):
    image = colourful_image(height=40, width=100)  # a width off OpenCV's vector size: its tail code runs too
    expected = reference_rgb(image, draw)
    assert np.array_equal(distort_hwc(image, draw), expected)
    chw = torch.from_numpy(image).permute(2, 0, 1)  # (3, H, W) view of HWC memory, as the transforms hold it
    assert torch.equal(distort_chw(chw, draw), torch.from_numpy(expected).permute(2, 0, 1))
    contiguous = chw.contiguous()  # (3, H, W) memory, as a crop or a flip leaves it
    out = distort_chw(contiguous, draw)
    assert torch.equal(out, torch.from_numpy(expected).permute(2, 0, 1))
    assert torch.equal(contiguous, chw)  # the input is never modified


def test_random_draws_equal_mmseg_and_change_the_image():
    image = colourful_image(height=32, width=64, seed=1)
    generator = torch.Generator().manual_seed(0)
    changed = 0
    for _ in range(40):
        draw = draw_photometric(PHOTOMETRIC, generator)
        out = distort_hwc(image, draw)
        assert np.array_equal(out, reference_rgb(image, draw)), draw
        changed += not np.array_equal(out, image)
    assert changed > 30  # nothing applied has probability 1/16


def test_draws_follow_mmsegs_ranges_and_probabilities():
    generator = torch.Generator().manual_seed(0)
    draws = [draw_photometric(PHOTOMETRIC, generator) for _ in range(8000)]
    for name in ("brightness", "contrast", "saturation", "hue"):
        share = np.mean([getattr(d, name) is not None for d in draws])
        assert abs(share - 0.5) < 0.02, (name, share)
    assert abs(np.mean([d.contrast_first for d in draws]) - 0.5) < 0.02
    brightness = np.array([d.brightness for d in draws if d.brightness is not None])
    assert -32 <= brightness.min() < -31 and 31 < brightness.max() <= 32
    for name in ("contrast", "saturation"):
        values = np.array([getattr(d, name) for d in draws if getattr(d, name) is not None])
        assert 0.5 <= values.min() < 0.52 and 1.48 < values.max() <= 1.5
    hues = [d.hue for d in draws if d.hue is not None]
    assert all(isinstance(h, int) for h in hues)
    assert sorted(set(hues)) == list(range(-18, 18))  # numpy's randint(-18, 18): 18 itself never
    counts = np.bincount(np.array(hues) + 18)
    assert counts.min() > 0.6 * counts.mean()


def test_the_training_transform_draws_then_distorts_exactly_like_mmseg():
    image = colourful_image(height=32, width=64, seed=2)
    mask = np.zeros(image.shape[:2], dtype=np.uint8)
    transform = build_transform(True, ("photometric",))
    for seed in range(12):
        torch.manual_seed(seed)
        draw = draw_photometric()  # what the transform's PhotoMetricDistortion draws first from this seed
        torch.manual_seed(seed)
        out_image, out_mask = transform(image, mask)
        assert out_image.dtype == torch.uint8 and out_image.is_contiguous()
        assert np.array_equal(out_image.permute(1, 2, 0).numpy(), reference_rgb(image, draw)), draw
        assert np.array_equal(out_mask.numpy(), mask)


def test_nothing_drawn_is_the_identity_without_a_copy():
    chw = torch.from_numpy(colourful_image()).permute(2, 0, 1)
    assert distort_chw(chw, PhotometricDraw()) is chw
