"""Segmentation metrics from a confusion matrix of pixel counts.

Reduction, stated explicitly: counts are summed over the whole dataset (and across
ranks), then IoU is computed per class, then averaged over the classes that are
present. Never an average of per-batch or per-image IoUs.
"""

from __future__ import annotations

import numpy as np
import torch

from cityseg.labels import IGNORE_INDEX, NUM_CLASSES


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """(N, N) int64 counts, rows = ground truth, columns = prediction; ignore pixels dropped.

    pred, target: integer tensors of the same shape, e.g. (B, H, W), on any device.
    """
    valid = target != ignore_index
    index = target[valid].long() * num_classes + pred[valid].long()
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_per_class(confusion: np.ndarray | torch.Tensor) -> np.ndarray:
    """IoU per class; NaN for a class absent from both ground truth and prediction.

    Like the official script, a class that never occurs in the ground truth but is
    predicted gets IoU 0 (it only adds false positives).
    """
    conf = confusion.cpu().numpy() if isinstance(confusion, torch.Tensor) else np.asarray(confusion)
    conf = conf.astype(np.float64)
    tp = np.diag(conf)
    fp = conf.sum(axis=0) - tp
    fn = conf.sum(axis=1) - tp
    denom = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(denom > 0, tp / denom, np.nan)
    return iou


def mean_iou(confusion: np.ndarray | torch.Tensor) -> float:
    """Mean IoU over classes whose IoU is defined (NaN classes left out, as the official script does)."""
    iou = iou_per_class(confusion)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def pixel_accuracy(confusion: np.ndarray | torch.Tensor) -> float:
    """Fraction of non-ignored pixels predicted correctly."""
    conf = confusion.cpu().numpy() if isinstance(confusion, torch.Tensor) else np.asarray(confusion)
    total = conf.sum()
    return float(np.trace(conf) / total) if total else float("nan")
