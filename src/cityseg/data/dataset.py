"""The torch Dataset over Cityscapes frames read from their PNGs, and the loader workers' set-up."""

from collections.abc import Iterable

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from cityseg.data.frames import Frame, check_label_source, check_same_size, read_image, read_train_ids
from cityseg.data.transforms import build_transform
from cityseg.labels import IGNORE_INDEX

# OpenCV's thread pool does not survive a fork: a loader worker forked while the pool's threads exist (after any
# parallel OpenCV call here: a cache build, an evaluation in the same notebook kernel) hangs in its first OpenCV call.
# cityseg runs its own processes and threads, so every process that builds a loader runs OpenCV on one thread.
cv2.setNumThreads(1)


def worker_init(worker_id: int) -> None:
    """DataLoader worker set-up: one torch and one OpenCV thread each, so N workers do not fight over the cores."""
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    np.random.seed(torch.initial_seed() % 2**32)  # torch seeds each worker differently; numpy follows suit


class CityscapesDataset(Dataset):
    """(image (3, H, W), mask (H, W) trainIds) uint8 pairs from the PNGs; no labels: all 255."""

    def __init__(self, frames: Iterable[Frame], transform=None, label_source: str = "trainIds") -> None:
        check_label_source(label_source)
        self.frames: list[Frame] = list(frames)
        self.transform = transform if transform is not None else build_transform(train=False)
        self.label_source = label_source

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        frame = self.frames[index]
        image = read_image(frame.image)  # (H, W, 3) uint8
        if frame.label is None:
            mask = np.full(image.shape[:2], IGNORE_INDEX, dtype=np.uint8)
        else:
            mask = read_train_ids(frame.label, self.label_source)  # (H, W) uint8
            check_same_size(image, mask, frame.image, frame.label)
        return self.transform(image, mask)
