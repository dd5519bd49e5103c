"""The two loops: one training epoch, and validation with one confusion matrix over the whole held-out set at the
labels' resolution. Running sums stay on the device until a progress update, so a CUDA step never waits."""

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from cityseg.data.transforms import mark_padding, normalize
from cityseg.errors import UserError
from cityseg.labels import IGNORE_INDEX, NUM_CLASSES
from cityseg.training.compiling import first_step
from cityseg.training.config import SIDE_MULTIPLE
from cityseg.training.dist import all_reduce_sum, is_main, world_size
from cityseg.training.losses import summed_cross_entropy
from cityseg.training.metrics import confusion_matrix, iou_per_class, mean_iou

PROGRESS_EVERY = 20  # steps between host reads of the running loss (each read is a device sync)
# At each host read: the epoch's step (1-based) of the first value, the per-step losses (mean over ranks), their lrs.
StepsCallback = Callable[[int, list[float], list[float]], None]


class NonFiniteLossError(UserError):
    """Training diverged; the caller keeps the last good checkpoint."""


@dataclass(frozen=True)
class TrainStats:
    """One epoch of training, summed over all ranks."""

    loss: float  # mean of the per-step losses
    lr: float  # learning rate of the epoch's last step (decoder group)
    images: int
    seconds: float
    data_seconds: float = 0.0  # of `seconds`, spent waiting for the loader's next batch (rank 0)
    peak_memory_bytes: int | None = None  # CUDA memory allocated at the epoch's peak (rank 0); None on CPU

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")

    @property
    def data_wait_share(self) -> float:
        """Share of the epoch the host waited for the loader: an upper estimate of the GPU's idle share."""
        return self.data_seconds / self.seconds if self.seconds > 0 else float("nan")


@dataclass(frozen=True)
class ValResult:
    """Validation over the whole held-out set: pixel-averaged loss, IoU from the summed confusion matrix."""

    loss: float
    miou: float
    class_iou: np.ndarray  # (19,), NaN for classes absent from ground truth and prediction
    confusion: Tensor  # (19, 19) int64 counts, rows = ground truth, on the CPU


@dataclass(frozen=True)
class StepContext:
    """How batches run on this device: autocast dtype (None = float32) and memory format."""

    device: torch.device
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    augment: Callable[[Tensor], Tensor] | None = None  # training-only colour ops on the uint8 batch (device_augment)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)


def to_device_batch(images: Tensor, masks: Tensor, context: StepContext, train: bool = False) -> tuple[Tensor, Tensor]:
    """Copy a uint8 batch to the device and normalise and widen it there (plus augment and padding)."""
    memory_format = torch.channels_last if context.channels_last else torch.contiguous_format
    images = images.to(context.device, non_blocking=True)  # non_blocking: the loader pins memory on CUDA
    masks = masks.to(context.device, non_blocking=True)
    if images.dtype == torch.uint8:
        if train and context.augment is not None:
            images = context.augment(images)  # (B, 3, H, W) uint8
        images = normalize(images, memory_format=memory_format)
        if train:
            images, masks = mark_padding(images, masks)
    elif context.channels_last:
        images = images.contiguous(memory_format=memory_format)
    return images, masks.long()


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    context: StepContext,
    epoch: int,
    progress: bool = True,
    on_steps: StepsCallback | None = None,
) -> TrainStats:
    """One pass over the training loader, stepping the schedule every iteration; losses read back rarely."""
    model.train()
    device = context.device
    loss_sum = torch.zeros((), device=device)
    recent_losses = torch.zeros(PROGRESS_EVERY, device=device)  # the steps since the last host read
    recent_lrs: list[float] = []
    first_bad_step = torch.full((), -1, dtype=torch.long, device=device)
    images, steps, lr = 0, 0, optimizer.param_groups[0]["lr"]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch}", unit="batch", leave=False, disable=not (progress and is_main()))
    waited, fetch_start = 0.0, time.perf_counter()
    for steps, (image, target) in enumerate(bar, start=1):
        waited += time.perf_counter() - fetch_start  # the host waiting for the loader
        image, target = to_device_batch(image, target, context, train=True)  # (B, 3, H, W) float, (B, H, W) int64

        def forward_backward(image: Tensor = image, target: Tensor = target) -> Tensor:  # loss; its gradients set
            with context.autocast():
                loss = criterion(model(image), target)  # model: (B, C, H, W) logits
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            return loss

        # a compiled model that fails to compile in its first forward or backward redoes the step eagerly
        loss = first_step(model, forward_backward)
        scaler.step(optimizer)
        scaler.update()
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()

        loss = loss.detach().float()
        loss_sum += loss
        recent_losses[(steps - 1) % PROGRESS_EVERY] = loss  # a device copy, no sync
        recent_lrs.append(lr)
        first_bad_step = torch.where((first_bad_step < 0) & ~torch.isfinite(loss), steps, first_bad_step)
        images += image.shape[0]
        if steps % PROGRESS_EVERY == 0:
            losses = _read_back(first_bad_step, recent_losses, epoch, steps)
            if on_steps is not None:
                on_steps(steps - PROGRESS_EVERY + 1, losses, recent_lrs)
            recent_lrs = []
            if not bar.disable:  # reading the loss is a second sync: only when someone sees it
                bar.set_postfix(
                    loss=f"{loss_sum.item() / steps:.4f}", img_s=f"{images / (time.perf_counter() - start):.1f}"
                )
        fetch_start = time.perf_counter()
    waited += time.perf_counter() - fetch_start  # the loader's last, empty fetch
    losses = _read_back(first_bad_step, recent_losses[: len(recent_lrs)], epoch, steps)
    if on_steps is not None and recent_lrs:
        on_steps(steps - len(recent_lrs) + 1, losses, recent_lrs)

    counts = torch.tensor([steps, images], dtype=torch.float64, device=device)
    total_loss, total_steps, total_images = all_reduce_sum(torch.cat([loss_sum.double().view(1), counts])).tolist()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return TrainStats(total_loss / max(total_steps, 1), lr, int(total_images), seconds, waited, peak)


def _read_back(first_bad_step: Tensor, recent_losses: Tensor, epoch: int, steps: int) -> list[float]:
    """The loop's rare host read: raise on all ranks on a NaN/inf loss, else the mean recent losses."""
    packed = torch.cat([(first_bad_step >= 0).to(recent_losses.dtype).view(1), recent_losses])  # (1 + n,)
    bad, *loss_sums = all_reduce_sum(packed).tolist()
    if bad == 0:
        ranks = world_size()
        return [value / ranks for value in loss_sums]
    step = int(first_bad_step.item())
    where = f"step {step}" if step >= 0 else f"a step up to {steps}"
    raise NonFiniteLossError(
        f"training diverged: the loss became NaN or infinite in epoch {epoch}, {where}. The run stopped and "
        "last.pt/best.pt still hold the last good epoch. Lower the learning rate (--lr), or turn mixed precision "
        "off (--no-amp), then start a new run (or --resume, which restarts this epoch)."
    )


@torch.no_grad()
def validate(
    model: nn.Module, loader: Iterable, context: StepContext, size: tuple[int, int] | None = None, progress: bool = True
) -> ValResult:
    """Loss and IoU on a held-out loader at the labels' resolution, summed over all ranks."""
    model.eval()
    device = context.device
    confusion = torch.zeros((NUM_CLASSES, NUM_CLASSES), dtype=torch.long, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    pixels = torch.zeros((), dtype=torch.long, device=device)
    for image, target in tqdm(loader, desc="validate", unit="batch", leave=False, disable=not (progress and is_main())):
        image, target = to_device_batch(image, target, context)  # (B, 3, H, W) float, (B, H, W) int64
        with context.autocast():
            logits = full_resolution_logits(model, image, target.shape[-2:], size)  # (B, C, H, W) float32
        loss_sum += summed_cross_entropy(logits, target).double()
        pixels += (target != IGNORE_INDEX).sum()
        confusion += confusion_matrix(logits.argmax(dim=1), target)
    for total in (confusion, loss_sum, pixels):
        all_reduce_sum(total)
    n_pixels = int(pixels.item())
    return ValResult(
        loss=float(loss_sum.item()) / n_pixels if n_pixels else float("nan"),
        miou=mean_iou(confusion),
        class_iou=iou_per_class(confusion),
        confusion=confusion.cpu(),
    )


def full_resolution_logits(
    model: nn.Module, image: Tensor, label_hw: tuple[int, int], size: tuple[int, int] | None = None
) -> Tensor:
    """Logits (B, C, H, W) at the label's (H, W) of the input resized to `size` and padded to a multiple of 32."""
    if size is not None and tuple(image.shape[-2:]) != (size[1], size[0]):
        image = F.interpolate(image, size=(size[1], size[0]), mode="bilinear", align_corners=False, antialias=True)
    height, width = image.shape[-2:]
    pad_h, pad_w = -height % SIDE_MULTIPLE, -width % SIDE_MULTIPLE
    if pad_h or pad_w:
        image = F.pad(image, (0, pad_w, 0, pad_h))  # zeros = the mean colour after normalisation
    logits = model(image)[..., :height, :width].float()  # (B, C, h, w)
    if tuple(logits.shape[-2:]) != tuple(label_hw):
        logits = F.interpolate(logits, size=tuple(label_hw), mode="bilinear", align_corners=False)
    return logits


def json_float(value: float) -> float | None:
    """JSON has no NaN: absent classes and missing metrics become null."""
    return None if value is None or not math.isfinite(value) else float(value)
