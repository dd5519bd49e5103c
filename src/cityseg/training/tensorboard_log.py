"""TensorBoard events beside log.jsonl, a live view of a run (`tensorboard --logdir RUNS`); only rank 0 writes.

x axis: the training iteration. train/loss and train/lr every iteration; epoch/<log key> and val_class_iou/<class>
at each epoch's end; val_frames/<id> (image | truth | prediction) every IMAGES_EVERY-th epoch. An epoch's events
are flushed before its last.pt, and a resumed run purges what was written past last.pt (`purge_step`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from cityseg.labels import CLASS_NAMES, colorize_train_ids
from cityseg.training.engine import StepContext, StepsCallback, full_resolution_logits, to_device_batch

IMAGES_EVERY = 5  # epochs between val frame images (they cost a forward pass and some disk)
IMAGE_FRAMES = 3  # fixed val frames shown, spread over the val set
IMAGE_MAX_WIDTH = 512  # per panel; full 2048x1024 frames would bloat the event files
EPOCH_SCALARS = ("train_loss", "val_loss", "val_miou", "lr", "images_per_s", "data_wait_share", "peak_memory_gb")


class TensorBoardLog:
    """The run's SummaryWriter (rank 0) or a no-op (run_dir None: other ranks)."""

    def __init__(
        self,
        run_dir: Path | None,
        steps_per_epoch: int,
        epochs: int,
        done_epochs: int = 0,
        val_set: Dataset | None = None,
        title: str = "",
    ) -> None:
        """done_epochs: the epochs last.pt holds already; title: the run and its model ('fold_0: U-Net / resnet34')."""
        self.steps_per_epoch, self.epochs, self.writer = steps_per_epoch, epochs, None
        if run_dir is None:
            return
        from torch.utils.tensorboard import SummaryWriter

        # (frame id, (3, H, W) uint8 image, (H, W) trainIds) of IMAGE_FRAMES val frames spread over the set
        self.frames: list[tuple[str, torch.Tensor, np.ndarray]] = []
        n = len(val_set) if val_set is not None else 0
        count = min(n, IMAGE_FRAMES)
        # CityscapesDataset has `frames`, CachedDataset `ids`
        ids = [f.id for f in val_set.frames] if hasattr(val_set, "frames") else getattr(val_set, "ids", None)
        for index in sorted({round(i * (n - 1) / max(1, count - 1)) for i in range(count)}):
            image, mask = val_set[index]
            self.frames.append((ids[index] if ids else f"frame_{index}", torch.as_tensor(image), np.asarray(mask)))
        earlier = any(Path(run_dir).glob("events.out.tfevents.*"))
        purge_step = done_epochs * steps_per_epoch + 1 if earlier else None
        self.writer = SummaryWriter(str(run_dir), purge_step=purge_step, flush_secs=10)
        if title and not earlier:
            self.writer.add_text("run", title, 0)

    def global_step(self, epoch: int, step: int) -> int:
        """The iteration over the whole run of `step` in `epoch` (both 1-based)."""
        return (epoch - 1) * self.steps_per_epoch + step

    def step_writer(self, epoch: int) -> StepsCallback | None:
        """The engine's `on_steps` callback for this epoch (None on ranks that write nothing)."""
        if self.writer is None:
            return None

        def write(first_step: int, losses: list[float], lrs: list[float]) -> None:
            for offset, (loss, lr) in enumerate(zip(losses, lrs, strict=True)):
                step = self.global_step(epoch, first_step + offset)
                self.writer.add_scalar("train/loss", loss, step)
                self.writer.add_scalar("train/lr", lr, step)

        return write

    def log_epoch(
        self, epoch: int, row: dict[str, Any], model: nn.Module, context: StepContext, size: tuple[int, int] | None
    ) -> None:
        """Write the epoch's log row (and, some epochs, the val frames), then flush: call before last.pt."""
        if self.writer is None:
            return
        step = self.global_step(epoch, self.steps_per_epoch)
        values = [(f"epoch/{key}", row.get(key)) for key in EPOCH_SCALARS]
        values += [(f"val_class_iou/{n}", v) for n, v in zip(CLASS_NAMES, row.get("class_iou") or (), strict=False)]
        for tag, value in values:
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(tag, value, step)
        if self.frames and (epoch == 1 or epoch % IMAGES_EVERY == 0 or epoch == self.epochs):
            for frame_id, image, truth in self.frames:
                strip = frame_strip(model, image, truth, context, size)
                self.writer.add_image(f"val_frames/{frame_id}", strip, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


@torch.no_grad()
def frame_strip(
    model: nn.Module, image: torch.Tensor, truth: np.ndarray, context: StepContext, size: tuple[int, int] | None
) -> np.ndarray:
    """(h, 3w + 8, 3) uint8: image | ground truth | the model's prediction, in the Cityscapes palette, downsized."""
    was_training = model.training
    model.eval()
    try:
        batch, _ = to_device_batch(image[None], torch.zeros(1, *truth.shape, dtype=torch.uint8), context)
        with context.autocast():
            logits = full_resolution_logits(model, batch, truth.shape, size)  # (1, C, H, W)
        prediction = logits.argmax(dim=1)[0].to(torch.uint8).cpu().numpy()
    finally:
        model.train(was_training)
    rgb = torch.as_tensor(image).permute(1, 2, 0).numpy()  # (H, W, 3)
    step = max(1, math.ceil(rgb.shape[1] / IMAGE_MAX_WIDTH))  # nearest subsampling keeps label ids valid
    panels = [rgb, colorize_train_ids(truth), colorize_train_ids(prediction)]
    panels = [panel[::step, ::step] for panel in panels]
    gap = np.full((panels[0].shape[0], 4, 3), 255, dtype=np.uint8)
    return np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)
