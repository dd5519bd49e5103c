"""Crops larger than the scaled image are padded with the mean colour (exactly 0 after normalisation) and
ignore labels, on every training path (PNG workers, cache, --gpu-aug), and validation pads with 0 too."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cityseg.data.frames import list_frames
from cityseg.data.transforms import PAD_COLOR
from cityseg.labels import IGNORE_INDEX, NUM_CLASSES
from cityseg.training.config import resolve_config
from cityseg.training.datasets import build_datasets
from cityseg.training.engine import full_resolution_logits, to_device_batch
from cityseg.training.runtime import step_context

torch.set_num_threads(1)

CROP = (64, 32)  # the synthetic frames are 128x64: at scale 0.25 the image fills a 32x16 corner of the crop


@pytest.mark.parametrize("path", ["workers", "cache", "gpu-aug"])
def test_padding_normalises_to_exactly_zero_with_ignore_labels(synth_root, tmp_path, path):
    config = resolve_config(
        "strong",
        crop=CROP,
        scale_range=(0.25, 0.25),
        encoder_weights=None,
        workers=0,
        device="cpu",
        cache=str(tmp_path / "cache") if path == "cache" else None,
        gpu_aug=path == "gpu-aug",
    )
    ids = [frame.id for frame in list_frames(synth_root, "train")][:8]
    train_set, _ = build_datasets(config, synth_root, ids)
    torch.manual_seed(0)
    images, masks = map(torch.stack, zip(*(train_set[i] for i in range(len(ids))), strict=True))
    context = step_context(config, torch.device("cpu"))
    if path == "gpu-aug":  # the device's colour ops do alter the padding before the step resets it
        torch.manual_seed(0)
        augmented = context.augment(images)[:, :, 16:, 32:]
        assert (augmented != torch.tensor(PAD_COLOR, dtype=torch.uint8).view(3, 1, 1)).any()
    normalised, labels = to_device_batch(images, masks, context, train=True)  # (B, 3, 32, 64), (B, 32, 64)

    padded = torch.ones(32, 64, dtype=torch.bool)
    padded[:16, :32] = False  # the scaled image, top left (flips happen before the padding)
    assert torch.all(normalised[:, :, padded] == 0)  # exactly the ImageNet mean
    assert torch.all(labels[:, padded] == IGNORE_INDEX)
    inside = labels[:, ~padded]
    assert ((inside < NUM_CLASSES) | (inside == IGNORE_INDEX)).all() and (inside < NUM_CLASSES).any()
    assert (normalised[:, :, ~padded] != 0).float().mean() > 0.9  # the image itself is left alone


class _Recorder(nn.Module):
    """A stand-in model that keeps its input and predicts zeros."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        self.seen = image.clone()
        return torch.zeros(image.shape[0], NUM_CLASSES, *image.shape[-2:])


def test_validation_pads_the_normalised_image_with_zeros():
    image = torch.randn(1, 3, 40, 70) + 3  # normalised values, none of them 0
    model = _Recorder()
    logits = full_resolution_logits(model, image, (40, 70))
    assert model.seen.shape == (1, 3, 64, 96) and logits.shape == (1, NUM_CLASSES, 40, 70)
    assert torch.equal(model.seen[..., :40, :70], image)
    assert torch.all(model.seen[..., 40:, :] == 0) and torch.all(model.seen[..., :, 70:] == 0)
