"""Pixel losses that ignore label 255 and never force a host sync.

Cross-entropy averages over the labelled pixels (PyTorch's ignore_index mean), dividing by a count
clamped to at least one, so a crop that happens to be all ignore gives loss 0 instead of NaN (NaN
would stop the run). OHEM follows mmsegmentation, whose mean runs over every pixel of the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cityseg.labels import IGNORE_INDEX


class CrossEntropy(nn.Module):
    """Mean cross-entropy over labelled pixels (255 = ignore), like nn.CrossEntropyLoss(ignore_index=255)."""

    def __init__(self, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        # logits (B, C, H, W) any float dtype; target (B, H, W) int64
        total = F.cross_entropy(logits.float(), target, ignore_index=self.ignore_index, reduction="sum")
        count = (target != self.ignore_index).sum().clamp_min(1)
        return total / count


class OhemCrossEntropy(nn.Module):
    """mmsegmentation's OHEMPixelSampler (with `thresh`) followed by its CrossEntropyLoss, exactly.

    Sampler: with batch_kept = min_kept x batch size and p the softmax probability of the true class,
    sort p over the labelled pixels; threshold = max(thresh, p_sorted[min(batch_kept, n_labelled - 1)])
    (thresh alone when no pixel is labelled); a labelled pixel is kept when p < threshold, strictly.
    So about min_kept pixels per image are kept at least when enough are labelled (pixels tied at the
    threshold, and the most confident one when fewer are labelled, are not). Loss: CrossEntropyLoss
    (reduction "mean", avg_non_ignore False: mmsegmentation's defaults) with the kept mask as pixel
    weight, i.e. the kept pixels' summed loss divided by the number of ALL pixels of the batch, ignored
    and unkept ones included.
    """

    def __init__(self, thresh: float = 0.7, min_kept: int = 100_000, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.thresh = thresh
        self.min_kept = min_kept
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        # logits (B, C, H, W); target (B, H, W)
        logits = logits.float()
        pixel_loss = F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction="none")  # (B, H, W)
        with torch.no_grad():
            keep = self.kept_pixels(logits, target)
        return (pixel_loss * keep).sum() / target.numel()

    def kept_pixels(self, logits: Tensor, target: Tensor) -> Tensor:
        """The sampler's 0/1 weight per pixel (B, H, W), computed on the device without reading anything back."""
        valid = target != self.ignore_index  # (B, H, W)
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


def build_loss(name: str, ohem_thresh: float = 0.7, ohem_min_kept: int = 100_000) -> nn.Module:
    """The training loss a config names ("ce" or "ohem")."""
    if name == "ce":
        return CrossEntropy()
    if name == "ohem":
        return OhemCrossEntropy(thresh=ohem_thresh, min_kept=ohem_min_kept)
    raise ValueError(f"unknown loss {name!r}")  # TrainConfig validates names, so this is a bug
