"""Segmentation metrics from a confusion matrix of pixel counts: summed over the whole set (and ranks), then IoU per
class, then the mean over classes present; never an average of per-batch or per-image IoUs."""

import numpy as np
import torch

from cityseg.labels import IGNORE_INDEX, NUM_CLASSES


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(19, 19) int64 counts, rows = ground truth, columns = prediction, of (B, H, W) trainId tensors; 255 dropped."""
    valid = target != IGNORE_INDEX
    index = target[valid].long() * NUM_CLASSES + pred[valid].long()
    return torch.bincount(index, minlength=NUM_CLASSES * NUM_CLASSES).reshape(NUM_CLASSES, NUM_CLASSES)


def iou_per_class(confusion: np.ndarray | torch.Tensor) -> np.ndarray:
    """IoU per class; NaN for a class absent from both ground truth and prediction (as the official script)."""
    conf = np.asarray(confusion.cpu() if isinstance(confusion, torch.Tensor) else confusion, dtype=np.float64)
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
    conf = np.asarray(confusion.cpu() if isinstance(confusion, torch.Tensor) else confusion)
    total = conf.sum()
    return float(np.trace(conf) / total) if total else float("nan")
