"""Pixel losses that ignore label 255 and never force a host sync.

Both losses average over the pixels that count, dividing by a count clamped to at least one,
so a crop that happens to be all ignore gives loss 0 instead of NaN (NaN would stop the run).
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
    """Cross-entropy over the hard pixels only: those whose true-class probability is below a threshold.

    As in mmsegmentation's OHEMPixelSampler: the threshold is raised to the `min_kept`-th smallest
    true-class probability in the batch when fewer than `min_kept` pixels fall below `thresh`, so
    every batch trains on at least `min_kept` pixels (or all of them, when the batch is smaller).
    """

    def __init__(self, thresh: float = 0.7, min_kept: int = 100_000, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.thresh = thresh
        self.min_kept = min_kept
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        # logits (B, C, H, W); target (B, H, W)
        pixel_loss = F.cross_entropy(logits.float(), target, ignore_index=self.ignore_index, reduction="none")
        valid = target != self.ignore_index  # (B, H, W)
        with torch.no_grad():
            # true-class probability; ignored pixels get 2 so they sort last and are never kept
            prob = torch.where(valid, torch.exp(-pixel_loss), torch.full_like(pixel_loss, 2.0)).flatten()
            kth = torch.clamp(valid.sum() - 1, max=self.min_kept - 1).clamp_min(0)  # device tensor, no .item()
            kth_prob = torch.sort(prob).values.gather(0, kth.reshape(1))[0]
            threshold = kth_prob.clamp_min(self.thresh)  # a Python scalar: no host-to-device copy, no sync
            keep = valid & (prob.reshape(valid.shape) <= threshold)
        return (pixel_loss * keep).sum() / keep.sum().clamp_min(1)


def build_loss(name: str, ohem_thresh: float = 0.7, ohem_min_kept: int = 100_000) -> nn.Module:
    """The training loss a config names ("ce" or "ohem")."""
    if name == "ce":
        return CrossEntropy()
    if name == "ohem":
        return OhemCrossEntropy(thresh=ohem_thresh, min_kept=ohem_min_kept)
    raise ValueError(f"unknown loss {name!r}")  # TrainConfig validates names, so this is a bug
