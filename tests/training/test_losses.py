"""Losses: cross-entropy ignores 255 and never turns NaN; OHEM is mmsegmentation's sampler and averaging; smp's
losses by name ignore 255 too; weighted sums; bad expressions name the valid losses."""

from __future__ import annotations

import math

import pytest
import segmentation_models_pytorch as smp
import torch

from cityseg.errors import UserError
from cityseg.training.config import resolve_config
from cityseg.training.losses import LOSSES, CrossEntropy, OhemCrossEntropy, build_loss, loss_text, parse_loss

SMP_LOSSES = {
    "dice": smp.losses.DiceLoss,
    "focal": smp.losses.FocalLoss,
    "lovasz": smp.losses.LovaszLoss,
    "jaccard": smp.losses.JaccardLoss,
    "tversky": smp.losses.TverskyLoss,
}


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


@pytest.mark.parametrize("name", list(SMP_LOSSES))
def test_smp_losses_by_name_are_smps_multiclass_losses_ignoring_255(name):
    logits, target = random_batch(seed=3, ignore_share=0.3)
    ours = build_loss(name)(logits, target)
    assert ours.item() == pytest.approx(SMP_LOSSES[name]("multiclass", ignore_index=255)(logits, target).item())
    # Ignoring 255 is the same as leaving those pixels out: smp's loss without ignore on the labelled pixels only.
    labelled = target != 255
    kept_logits = logits.detach().permute(1, 0, 2, 3)[:, labelled].reshape(1, 19, -1, 1)  # (1, C, N, 1)
    reference = SMP_LOSSES[name]("multiclass")(kept_logits, target[labelled].reshape(1, -1, 1))
    assert ours.item() == pytest.approx(reference.item(), rel=1e-5)


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_loss_gives_zero_and_finite_gradients_on_an_all_ignored_crop(name):
    logits, target = random_batch()
    loss = build_loss(name, 0.7, 10)(logits, torch.full_like(target, 255))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_weighted_sums_add_their_terms():
    logits, target = random_batch(seed=5)
    total = build_loss("ce + 0.5*dice + 2*focal")(logits, target)
    parts = (
        CrossEntropy()(logits, target)
        + 0.5 * smp.losses.DiceLoss("multiclass", ignore_index=255)(logits, target)
        + 2 * smp.losses.FocalLoss("multiclass", ignore_index=255)(logits, target)
    )
    assert total.item() == pytest.approx(parts.item(), rel=1e-6)
    assert isinstance(build_loss("ce"), CrossEntropy)  # the default is the plain module, as before
    assert parse_loss("CE+0.5*Dice") == ((1.0, "ce"), (0.5, "dice")) and loss_text(" CE + 0.50*dice") == "ce+0.5*dice"
    assert resolve_config("seed", loss="Dice + 2*CE").loss == "dice+2.0*ce"


@pytest.mark.parametrize("bad", ["dic", "ce+", "ce+-1*dice", "0*ce", "nan*dice", "ce*0.5", "inf*ce", "ce++dice"])
def test_bad_loss_expressions_name_the_valid_losses(bad):
    with pytest.raises(UserError, match="ce, ohem, dice, focal, lovasz, jaccard, tversky.*ce\\+0.5\\*dice"):
        resolve_config("seed", loss=bad)
