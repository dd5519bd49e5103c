"""Losses: cross-entropy ignores 255 and never turns NaN; OHEM is mmsegmentation's sampler and averaging."""

from __future__ import annotations

import math

import pytest
import torch

from cityseg.training.losses import CrossEntropy, OhemCrossEntropy, build_loss


def random_batch(seed=0, ignore_share=0.2, batch=2, confident_share=0.0):
    """Random logits and labels; on `confident_share` of the pixels the true class gets a large margin (easy)."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, 19, 8, 16, generator=generator)
    target = torch.randint(0, 19, (batch, 8, 16), generator=generator)
    easy = (torch.rand(target.shape, generator=generator) < confident_share).unsqueeze(1)  # (B, 1, H, W)
    margin = 6.0 + 4.0 * torch.rand(target.shape, generator=generator).unsqueeze(1)
    logits = logits + easy * margin * torch.nn.functional.one_hot(target, 19).permute(0, 3, 1, 2)
    target[torch.rand(target.shape, generator=generator) < ignore_share] = 255
    return logits.requires_grad_(), target


def mmseg_ohem_reference(logits, target, thresh, min_kept):
    """OHEMPixelSampler(thresh, min_kept) + CrossEntropyLoss(avg_non_ignore=False), written out pixel by pixel.

    Sampler (mmseg/structures/sampler/ohem_pixel_sampler.py): batch_kept = min_kept * N; sort the softmax
    probability of the true class over non-ignored pixels; min_threshold = sort_prob[min(batch_kept, n - 1)]
    (0.0 when there is none); threshold = max(min_threshold, thresh); weight 1 where prob < threshold.
    Loss (losses/cross_entropy_loss.py, utils.weight_reduce_loss): per-pixel CE times weight, .mean() over
    every pixel of the batch.
    """
    batch, _, height, width = logits.shape
    probs = torch.softmax(logits.detach(), dim=1)
    pixels = [(b, i, j) for b in range(batch) for i in range(height) for j in range(width)]
    valid = [p for p in pixels if int(target[p]) != 255]
    sort_prob = sorted(float(probs[p[0], int(target[p]), p[1], p[2]]) for p in valid)
    min_threshold = sort_prob[min(min_kept * batch, len(sort_prob) - 1)] if sort_prob else 0.0
    threshold = max(min_threshold, thresh)
    total = 0.0
    for b, i, j in valid:
        t = int(target[b, i, j])
        if float(probs[b, t, i, j]) < threshold:
            column = logits.detach()[b, :, i, j].double()
            total += float(torch.logsumexp(column, 0) - column[t])  # -log softmax of the true class
    return total / len(pixels), sum(1 for b, i, j in valid if float(probs[b, int(target[b, i, j]), i, j]) < threshold)


def test_cross_entropy_matches_torch_with_ignore():
    logits, target = random_batch()
    expected = torch.nn.CrossEntropyLoss(ignore_index=255)(logits, target)
    torch.testing.assert_close(CrossEntropy()(logits, target), expected)


def test_all_ignored_crop_gives_zero_not_nan():
    logits, target = random_batch()
    loss = build_loss("ce")(logits, torch.full_like(target, 255))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()
    assert build_loss("ohem", 0.7, 10)(logits, torch.full_like(target, 255)).item() == 0.0


@pytest.mark.parametrize("batch", [1, 2, 3])
@pytest.mark.parametrize(
    ("thresh", "min_kept", "ignore_share", "confident_share"),
    [
        (0.7, 10, 0.2, 0.0),  # random logits: nearly every pixel is below 0.7, thresh decides
        (0.7, 20, 0.2, 0.9),  # ~10 hard pixels per image: min_kept x N raises the threshold
        (0.3, 40, 0.5, 0.7),
        (0.7, 200, 0.3, 0.9),  # fewer than min_kept x N labelled pixels: the most confident one is not kept
        (0.9, 5, 0.95, 0.5),  # almost all ignored
    ],
)
def test_ohem_matches_mmsegmentation_definition(batch, thresh, min_kept, ignore_share, confident_share):
    logits, target = random_batch(batch, ignore_share, batch, confident_share)
    expected, n_kept = mmseg_ohem_reference(logits, target, thresh, min_kept)
    loss = OhemCrossEntropy(thresh=thresh, min_kept=min_kept)(logits, target)
    assert loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert OhemCrossEntropy(thresh, min_kept).kept_pixels(logits.detach(), target).sum().item() == n_kept
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_ohem_min_kept_counts_per_image_and_the_mean_runs_over_all_pixels():
    logits, target = random_batch(3, ignore_share=0.25, batch=3, confident_share=1.0)  # every p > 0.7
    kept = OhemCrossEntropy(thresh=0.7, min_kept=10).kept_pixels(logits.detach(), target)
    assert kept.sum().item() == 30  # 10 per image, not 10 per batch (probabilities are distinct)
    pixel = torch.nn.functional.cross_entropy(logits.detach(), target, ignore_index=255, reduction="none")
    hardest = pixel[target != 255].topk(30).values
    loss = OhemCrossEntropy(thresh=0.7, min_kept=10)(logits, target)
    assert loss.item() == pytest.approx(hardest.sum().item() / target.numel(), rel=1e-5)
    assert not math.isclose(loss.item(), hardest.mean().item())  # not the mean over the kept pixels
