"""Engine: validation scores at the labels' resolution from one summed confusion matrix; training stops on NaN."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cityseg.data.transforms import normalize
from cityseg.labels import NUM_CLASSES
from cityseg.training.engine import (
    NonFiniteLossError,
    StepContext,
    to_device_batch,
    train_one_epoch,
    validate,
)
from cityseg.training.metrics import confusion_matrix, iou_per_class
from cityseg.training.optim import lr_factor

CPU = StepContext(torch.device("cpu"))


class ReadsClassFromImage(nn.Module):
    """A perfect 'model' for images whose first channel holds the class index: logits peak at that class."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(()))  # something for an optimizer to step

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        classes = torch.arange(NUM_CLASSES, dtype=image.dtype).view(1, -1, 1, 1)
        return -((image[:, :1] - classes) ** 2) + self.bias  # (B, 19, H, W)


def block_dataset(n=5, height=64, width=128, classes=5, seed=0):
    """Labels of 16x16 blocks of classes 0..classes-1 with a few ignore pixels; image channel 0 = label."""
    generator = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, classes, (n, height // 16, width // 16), generator=generator)
    labels = blocks.repeat_interleave(16, 1).repeat_interleave(16, 2)  # (N, H, W)
    images = labels.float().unsqueeze(1).repeat(1, 3, 1, 1)  # (N, 3, H, W)
    labels[:, :2, :3] = 255
    return TensorDataset(images, labels)


def test_validation_is_exact_at_full_resolution_and_skips_absent_classes():
    dataset = block_dataset(classes=5)
    result = validate(ReadsClassFromImage(), DataLoader(dataset, batch_size=2), CPU, progress=False)
    labels = dataset.tensors[1]
    assert result.confusion.sum() == (labels != 255).sum()  # every labelled pixel once, ignore left out
    assert result.confusion.trace() == result.confusion.sum()
    assert np.all(result.class_iou[:5] == 1.0) and np.isnan(result.class_iou[5:]).all()
    assert result.miou == 1.0  # absent classes (NaN) are not averaged in as zeros


def test_validation_with_size_scores_at_label_resolution():
    dataset = block_dataset(classes=5)
    result = validate(ReadsClassFromImage(), DataLoader(dataset, batch_size=2), CPU, size=(32, 16), progress=False)
    # Seen at 32x16 (4x smaller), predictions are upsampled back: scored on all 64x128 label pixels,
    # imperfect only near block edges.
    assert result.confusion.sum() == (dataset.tensors[1] != 255).sum()
    assert 0.5 < result.miou < 1.0


def test_confusion_is_summed_over_the_set_not_averaged_per_batch():
    dataset = block_dataset(n=6, classes=4, seed=1)
    noisy = ReadsClassFromImage()
    images = dataset.tensors[0].clone()
    images[0, 0, :16] += 1.0  # first image: top stripe mispredicted
    dataset = TensorDataset(images, dataset.tensors[1])
    per_image = validate(noisy, DataLoader(dataset, batch_size=1), CPU, progress=False)
    batched = validate(noisy, DataLoader(dataset, batch_size=4), CPU, progress=False)
    assert torch.equal(per_image.confusion, batched.confusion)
    preds = noisy(images).argmax(1)
    whole = confusion_matrix(preds, dataset.tensors[1])
    np.testing.assert_array_equal(per_image.class_iou, iou_per_class(whole))
    batch_means = [
        np.nanmean(iou_per_class(confusion_matrix(preds[i : i + 1], dataset.tensors[1][i : i + 1]))) for i in range(6)
    ]
    assert not math.isclose(per_image.miou, float(np.mean(batch_means)))  # the wrong reduction differs


class ScriptedLoss(nn.Module):
    """Returns the given values in turn (attached to the graph so backward works)."""

    def __init__(self, values) -> None:
        super().__init__()
        self.values = list(values)

    def forward(self, logits, target):
        return logits.sum() * 0 + self.values.pop(0)


def make_training(values):
    model = ReadsClassFromImage()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    loader = DataLoader(block_dataset(n=8), batch_size=2)
    return model, loader, ScriptedLoss(values), optimizer, scheduler, scaler


def test_train_one_epoch_reports_mean_loss_and_images():
    model, loader, loss, optimizer, scheduler, scaler = make_training([1.0, 2.0, 3.0, 6.0])
    stats = train_one_epoch(model, loader, loss, optimizer, scheduler, scaler, CPU, epoch=1, progress=False)
    assert stats.loss == pytest.approx(3.0) and stats.images == 8 and stats.lr == 0.1
    assert scheduler.last_epoch == 4  # stepped every iteration


def test_every_step_loss_reaches_on_steps_without_an_extra_host_read(monkeypatch):
    import cityseg.training.engine

    monkeypatch.setattr(
        cityseg.training.engine, "PROGRESS_EVERY", 3
    )  # 8 steps: reads after 3 and 6, the rest at the end
    values = [float(v) for v in range(1, 9)]
    reads = []
    for name in ("item", "tolist"):  # every way the loop brings a tensor value to the host
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, real=real, name=name: reads.append(name) or real(self))

    def epoch(on_steps):
        model = ReadsClassFromImage()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))  # a new lr each step
        reads.clear()
        train_one_epoch(
            model,
            DataLoader(block_dataset(n=16), batch_size=2),
            ScriptedLoss(values),
            optimizer,
            scheduler,
            torch.amp.GradScaler("cpu", enabled=False),
            CPU,
            epoch=1,
            progress=False,
            on_steps=on_steps,
        )
        return list(reads)

    calls = []
    without, with_hook = epoch(None), epoch(lambda first, losses, lrs: calls.append((first, losses, lrs)))
    assert with_hook == without  # the hook gets values the loop reads anyway
    assert [first for first, _, _ in calls] == [1, 4, 7]
    assert [loss for _, losses, _ in calls for loss in losses] == values
    assert [lr for _, _, lrs in calls for lr in lrs] == pytest.approx([0.1 / (1 + step) for step in range(8)])


def test_non_finite_loss_stops_with_epoch_and_step():
    model, loader, loss, optimizer, scheduler, scaler = make_training([1.0, 1.0, float("nan"), 1.0])
    with pytest.raises(NonFiniteLossError, match=r"epoch 7, step 3.*--lr.*--no-amp"):
        train_one_epoch(model, loader, loss, optimizer, scheduler, scaler, CPU, epoch=7, progress=False)


def test_lr_schedules():
    total, warmup = 100, 10
    warm = [lr_factor(s, total, warmup, "cosine") for s in range(warmup)]
    assert warm == sorted(warm) and warm[-1] == 1.0 and warm[0] == pytest.approx(0.1)
    for schedule in ("cosine", "poly"):
        after = [lr_factor(s, total, warmup, schedule, min_ratio=0.01) for s in range(warmup, total + 1)]
        assert after[0] == 1.0 and after[-1] == pytest.approx(0.01)
        assert all(a >= b for a, b in zip(after, after[1:], strict=False))
    assert lr_factor(50, total, 0, "constant") == 1.0
    assert lr_factor(50, total, 0, "cosine") == pytest.approx(0.5)
    assert lr_factor(50, total, 0, "poly", power=1.0) == pytest.approx(0.5)


def test_uint8_batches_are_normalised_and_widened_on_the_device():
    images = torch.randint(0, 256, (2, 3, 32, 64), dtype=torch.uint8)  # (B, 3, H, W), as loaders collate
    masks = torch.randint(0, 19, (2, 32, 64), dtype=torch.uint8)  # (B, H, W)
    image, target = to_device_batch(images, masks, CPU)
    assert image.dtype == torch.float32 and torch.equal(image, normalize(images)) and image.is_contiguous()
    assert target.dtype == torch.int64 and torch.equal(target, masks.long())
    image, _ = to_device_batch(images, masks, StepContext(torch.device("cpu"), channels_last=True))
    assert image.is_contiguous(memory_format=torch.channels_last) and torch.equal(image, normalize(images))
    ready = torch.randn(2, 3, 32, 64)  # float batches are taken as model-ready
    assert torch.equal(to_device_batch(ready, masks, CPU)[0], ready)


class SlowLoader:
    """Batches of `block_dataset` that each take `delay` seconds to arrive, like a starved data pipeline."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.batches = list(DataLoader(block_dataset(n=6), batch_size=2))

    def __iter__(self):
        for batch in self.batches:
            time.sleep(self.delay)
            yield batch


def test_data_wait_counts_the_time_spent_waiting_for_batches():
    model, _, loss, optimizer, scheduler, scaler = make_training([1.0] * 3)
    stats = train_one_epoch(model, SlowLoader(0.05), loss, optimizer, scheduler, scaler, CPU, epoch=1, progress=False)
    assert stats.data_seconds >= 3 * 0.05  # sleep never returns early
    assert stats.data_seconds <= stats.seconds and 0 < stats.data_wait_share <= 1
    assert stats.peak_memory_bytes is None  # CPU


def test_training_batches_get_the_context_augment_and_validation_batches_do_not():
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    masks = torch.zeros(2, 8, 8, dtype=torch.uint8)
    invert = StepContext(torch.device("cpu"), augment=lambda batch: 255 - batch)
    assert torch.equal(to_device_batch(images, masks, invert, train=True)[0], normalize(255 - images))
    assert torch.equal(to_device_batch(images, masks, invert)[0], normalize(images))
