"""Pixel losses by name, ignoring label 255, combinable as weighted sums such as `ce+0.5*dice`.

Every loss is 0, not NaN, on an all-ignored crop (NaN would stop the run); OHEM follows mmsegmentation; the others
are smp's multiclass losses. Adding a loss is one entry in `LOSSES`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cityseg.errors import UserError
from cityseg.labels import IGNORE_INDEX


def summed_cross_entropy(logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Cross-entropy summed over the labelled pixels; on CUDA the per-pixel losses are summed (its summed nll_loss
    adds with atomics, which --deterministic refuses)."""
    reduction = "none" if logits.is_cuda else "sum"
    return F.cross_entropy(logits, target, ignore_index=ignore_index, reduction=reduction).sum()


class CrossEntropy(nn.Module):
    """Mean cross-entropy over labelled pixels (255 = ignore), like nn.CrossEntropyLoss(ignore_index=255)."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        # logits (B, C, H, W) any float dtype; target (B, H, W) int64
        total = summed_cross_entropy(logits.float(), target)
        count = (target != IGNORE_INDEX).sum().clamp_min(1)
        return total / count


class OhemCrossEntropy(nn.Module):
    """mmsegmentation's OHEMPixelSampler (with `thresh`) and CrossEntropyLoss, exactly: a labelled pixel is kept when
    its true-class p < max(thresh, the sorted p at min(min_kept x batch, n_labelled - 1)); the kept pixels' summed
    cross-entropy is divided by ALL pixels of the batch (reduction "mean", avg_non_ignore False)."""

    def __init__(self, thresh: float = 0.7, min_kept: int = 100_000) -> None:
        super().__init__()
        self.thresh, self.min_kept = thresh, min_kept

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        # logits (B, C, H, W); target (B, H, W)
        logits = logits.float()
        pixel_loss = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none")  # (B, H, W)
        with torch.no_grad():
            keep = self.kept_pixels(logits, target)
        return (pixel_loss * keep).sum() / target.numel()

    def kept_pixels(self, logits: Tensor, target: Tensor) -> Tensor:
        """The sampler's 0/1 weight per pixel (B, H, W), computed on the device without reading anything back."""
        valid = target != IGNORE_INDEX  # (B, H, W)
        safe_target = torch.where(valid, target, torch.zeros_like(target))
        prob = logits.softmax(dim=1).gather(1, safe_target.unsqueeze(1)).squeeze(1)  # (B, H, W) true-class p
        # Unlabelled pixels sort after every labelled one (p <= 1 < 2), so the first n_valid sorted entries are
        # exactly mmsegmentation's sort_prob over the labelled pixels.
        ranked = torch.where(valid, prob, torch.full_like(prob, 2.0)).flatten().sort().values
        n_valid = valid.sum()
        index = torch.clamp(n_valid - 1, min=0, max=self.min_kept * target.shape[0])  # a device tensor: no .item()
        min_threshold = torch.where(n_valid > 0, ranked.gather(0, index.reshape(1))[0], torch.zeros_like(ranked[0]))
        threshold = min_threshold.clamp_min(self.thresh)
        return (valid & (prob < threshold)).to(logits.dtype)


class SmpLoss(nn.Module):
    """smp's multiclass loss of that class name on float32 logits, ignoring 255, and 0 for a batch without labelled
    pixels (smp's focal gives NaN there, its Lovasz an empty tensor)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        from segmentation_models_pytorch import losses

        self.loss = getattr(losses, name)("multiclass", ignore_index=IGNORE_INDEX)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        value = self.loss(logits.float(), target).sum()  # the sum of one value is itself; of none, 0
        return torch.where((target != IGNORE_INDEX).any(), value, torch.zeros_like(value))


# name -> factory(ohem_thresh, ohem_min_kept); `--loss` takes NAME, WEIGHT*NAME and sums of them.
LOSSES: dict[str, Callable[[float, int], nn.Module]] = {
    "ce": lambda thresh, min_kept: CrossEntropy(),
    "ohem": lambda thresh, min_kept: OhemCrossEntropy(thresh, min_kept),
    "dice": lambda thresh, min_kept: SmpLoss("DiceLoss"),
    "focal": lambda thresh, min_kept: SmpLoss("FocalLoss"),
    "lovasz": lambda thresh, min_kept: SmpLoss("LovaszLoss"),
    "jaccard": lambda thresh, min_kept: SmpLoss("JaccardLoss"),
    "tversky": lambda thresh, min_kept: SmpLoss("TverskyLoss"),
}


def parse_loss(text: str) -> tuple[tuple[float, str], ...]:
    """'ce+0.5*dice' -> ((1.0, 'ce'), (0.5, 'dice')); anything else is a UserError listing the names."""
    terms = []
    for term in text.replace(" ", "").lower().split("+"):
        weight_text, _, name = term.rpartition("*")
        try:
            weight = float(weight_text) if weight_text else 1.0
        except ValueError:
            weight = math.nan
        if name not in LOSSES or not (math.isfinite(weight) and weight > 0):
            raise UserError(
                f"loss {text!r} (--loss): {term!r} is not NAME or WEIGHT*NAME with a positive weight; the names "
                f"are {', '.join(LOSSES)}, combined with +, e.g. ce+0.5*dice."
            )
        terms.append((weight, name))
    return tuple(terms)


def loss_text(text: str) -> str:
    """The one spelling of a loss expression ('CE + 0.50*Dice' -> 'ce+0.5*dice')."""
    return "+".join(name if weight == 1 else f"{weight!r}*{name}" for weight, name in parse_loss(text))


class WeightedSum(nn.Module):
    """sum of weight x loss over the terms of a loss expression."""

    def __init__(self, terms: list[tuple[float, nn.Module]]) -> None:
        super().__init__()
        self.weights = [weight for weight, _ in terms]
        self.losses = nn.ModuleList(loss for _, loss in terms)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return sum(weight * loss(logits, target) for weight, loss in zip(self.weights, self.losses, strict=True))


def build_loss(name: str, ohem_thresh: float = 0.7, ohem_min_kept: int = 100_000) -> nn.Module:
    """The training loss a config names: one registered loss, or a weighted sum of them."""
    terms = [(weight, LOSSES[term](ohem_thresh, ohem_min_kept)) for weight, term in parse_loss(name)]
    return terms[0][1] if len(terms) == 1 and terms[0][0] == 1 else WeightedSum(terms)
