"""TensorBoard event files beside log.jsonl, for a live view of a run (`tensorboard --logdir RUNS`).

Each run folder gets its own event files, so TensorBoard shows every fold and the full fit as separate
runs. The x axis of every scalar is the training iteration (1-based, counted over the whole run):

    train/loss, train/lr           every iteration (written at the engine's existing host reads)
    epoch/train_loss, epoch/val_loss, epoch/val_miou, epoch/images_per_s, epoch/data_wait_share,
    epoch/peak_memory_gb, val_class_iou/<class>
                                   once per epoch, at the epoch's last iteration (the log.jsonl values)
    val_frames/<frame id>          image | ground truth | prediction for a few fixed val frames, in
                                   the first, every IMAGES_EVERY-th and the last epoch

log.jsonl stays the source of truth; these files are a view. An epoch's events are flushed before its
last.pt is written, and a resumed run opens its writer with `purge_step` at the first iteration after
last.pt, so TensorBoard hides whatever an interrupted attempt wrote past that point: one stream, no
duplicated steps. Only rank 0 writes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from cityseg.labels import CLASS_NAMES, colorize_train_ids
from cityseg.training.engine import StepContext, StepsCallback, full_resolution_logits, to_device_batch

EVENTS_GLOB = "events.out.tfevents.*"
IMAGES_EVERY = 5  # epochs between val frame images (they cost a forward pass and some disk)
IMAGE_FRAMES = 3  # fixed val frames shown, spread over the val set
IMAGE_MAX_WIDTH = 512  # per panel; full 2048x1024 frames would bloat the event files
FLUSH_SECONDS = 10  # how stale the live view may get within an epoch
EPOCH_SCALARS = ("train_loss", "val_loss", "val_miou", "lr", "images_per_s", "data_wait_share", "peak_memory_gb")


class TensorBoardLog:
    """The run's SummaryWriter (rank 0) or a no-op (other ranks): the trainer calls it at three points."""

    def __init__(
        self,
        run_dir: Path | None,
        steps_per_epoch: int,
        epochs: int,
        done_epochs: int = 0,
        val_set: Dataset | None = None,
    ) -> None:
        """run_dir None: write nothing (ranks other than 0). done_epochs: epochs last.pt already holds."""
        self.steps_per_epoch = steps_per_epoch
        self.epochs = epochs
        self.writer = None
        self.frames = _image_frames(val_set) if run_dir is not None else []
        if run_dir is None:
            return
        from torch.utils.tensorboard import SummaryWriter

        run_dir = Path(run_dir)
        earlier = any(run_dir.glob(EVENTS_GLOB))
        # Everything an interrupted attempt wrote after last.pt's epoch is hidden by TensorBoard from here.
        purge_step = done_epochs * steps_per_epoch + 1 if earlier else None
        self.writer = SummaryWriter(str(run_dir), purge_step=purge_step, flush_secs=FLUSH_SECONDS)

    def global_step(self, epoch: int, step: int) -> int:
        """Iteration number over the whole run of `step` (1-based) in `epoch` (1-based)."""
        return (epoch - 1) * self.steps_per_epoch + step

    def step_writer(self, epoch: int) -> StepsCallback | None:
        """The engine's `on_steps` callback for this epoch (None on ranks that write nothing)."""
        if self.writer is None:
            return None
        writer = self.writer

        def write(first_step: int, losses: list[float], lrs: list[float]) -> None:
            for offset, (loss, lr) in enumerate(zip(losses, lrs, strict=True)):
                step = self.global_step(epoch, first_step + offset)
                writer.add_scalar("train/loss", loss, step)
                writer.add_scalar("train/lr", lr, step)

        return write

    def log_epoch(
        self, epoch: int, row: dict[str, Any], model: nn.Module, context: StepContext, size: tuple[int, int] | None
    ) -> None:
        """Write the epoch's log row (and, some epochs, the val frames), then flush: call before last.pt."""
        if self.writer is None:
            return
        step = self.global_step(epoch, self.steps_per_epoch)
        for key in EPOCH_SCALARS:
            if _is_number(row.get(key)):
                self.writer.add_scalar(f"epoch/{key}", row[key], step)
        for name, value in zip(CLASS_NAMES, row.get("class_iou") or (), strict=False):
            if _is_number(value):
                self.writer.add_scalar(f"val_class_iou/{name}", value, step)
        if self.frames and (epoch == 1 or epoch % IMAGES_EVERY == 0 or epoch == self.epochs):
            for frame_id, image, truth in self.frames:
                prediction = predict_frame(model, image, truth.shape, context, size)
                self.writer.add_image(
                    f"val_frames/{frame_id}", frame_strip(image, truth, prediction), step, dataformats="HWC"
                )
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file (safe to call twice)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _image_frames(val_set: Dataset | None) -> list[tuple[str, torch.Tensor, np.ndarray]]:
    """(frame id, (3, H, W) uint8 image, (H, W) uint8 trainIds) of IMAGE_FRAMES val frames spread over the set."""
    if val_set is None or len(val_set) == 0:
        return []
    n = len(val_set)
    count = min(n, IMAGE_FRAMES)
    indices = [round(i * (n - 1) / max(1, count - 1)) for i in range(count)]  # distinct, as count <= n
    ids = _frame_ids(val_set)
    frames = []
    for index in indices:
        image, mask = val_set[index]
        frames.append((ids[index] if ids else f"frame_{index}", torch.as_tensor(image), np.asarray(mask)))
    return frames


def _frame_ids(dataset: Dataset) -> Sequence[str] | None:
    """Frame ids of a CityscapesDataset (`frames`) or a CachedDataset (`ids`), when the dataset has them."""
    frames = getattr(dataset, "frames", None)
    if frames is not None:
        return [frame.id for frame in frames]
    return getattr(dataset, "ids", None)


@torch.no_grad()
def predict_frame(
    model: nn.Module,
    image: torch.Tensor,
    label_shape: tuple[int, int],
    context: StepContext,
    size: tuple[int, int] | None,
) -> np.ndarray:
    """(H, W) uint8 trainIds the model predicts for one (3, H, W) uint8 image, as validation scores it."""
    was_training = model.training
    model.eval()
    try:
        batch, _ = to_device_batch(image[None], torch.zeros(1, *label_shape, dtype=torch.uint8), context)
        with context.autocast():
            logits = full_resolution_logits(model, batch, label_shape, size)  # (1, C, H, W)
        return logits.argmax(dim=1)[0].to(torch.uint8).cpu().numpy()
    finally:
        model.train(was_training)


def frame_strip(image: torch.Tensor, truth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """(h, 3w + 2 gaps, 3) uint8: image | ground truth | prediction in the Cityscapes palette, downsized."""
    rgb = torch.as_tensor(image).permute(1, 2, 0).numpy()  # (H, W, 3)
    step = max(1, math.ceil(rgb.shape[1] / IMAGE_MAX_WIDTH))  # nearest subsampling keeps label ids valid
    panels = [
        rgb[::step, ::step],
        colorize_train_ids(truth)[::step, ::step],
        colorize_train_ids(prediction)[::step, ::step],
    ]
    gap = np.full((panels[0].shape[0], 4, 3), 255, dtype=np.uint8)
    return np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)
