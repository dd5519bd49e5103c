"""Losses: cross-entropy ignores 255 and never turns NaN; OHEM keeps the hard pixels and at least min_kept."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cityseg.losses import CrossEntropy, OhemCrossEntropy, build_loss


def random_batch(seed=0, ignore_share=0.2):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 19, 8, 16, generator=generator, requires_grad=True)
    target = torch.randint(0, 19, (2, 8, 16), generator=generator)
    target[torch.rand(target.shape, generator=generator) < ignore_share] = 255
    return logits, target


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


def test_ohem_with_large_min_kept_is_plain_cross_entropy():
    logits, target = random_batch(1)
    torch.testing.assert_close(OhemCrossEntropy(thresh=0.7, min_kept=10**6)(logits, target), CrossEntropy()(logits, target))


def test_ohem_drops_easy_pixels_when_enough_hard_ones():
    logits, target = random_batch(2, ignore_share=0.0)  # random logits: true-class probability ~1/19
    with torch.no_grad():
        logits[:, :, :4] = 20.0 * F.one_hot(target, 19).permute(0, 3, 1, 2)[:, :, :4]  # top rows: confidently right
    pixel = F.cross_entropy(logits, target, reduction="none")  # (2, 8, 16)
    hard = torch.exp(-pixel) <= 0.7
    assert not hard[:, :4].any() and hard.sum() > 10
    loss = OhemCrossEntropy(thresh=0.7, min_kept=10)(logits, target)
    torch.testing.assert_close(loss, pixel[hard].mean())


def test_ohem_keeps_min_kept_hardest_when_all_are_easy():
    logits, target = random_batch(3, ignore_share=0.0)
    with torch.no_grad():
        logits.copy_(torch.randn_like(logits) * 0.1)
        logits.scatter_(1, target.unsqueeze(1), 5.0 + torch.rand(2, 1, 8, 16) * 5)  # every pixel prob > 0.7
    pixel = F.cross_entropy(logits, target, reduction="none").flatten()
    assert torch.exp(-pixel).min() > 0.7
    loss = OhemCrossEntropy(thresh=0.7, min_kept=25)(logits, target)
    torch.testing.assert_close(loss, pixel.topk(25).values.mean())
