"""Random numbers that depend only on (seed, epoch, sample): the same run whatever the worker count, and after any
kill. `EpochKeys` shuffles from (seed, epoch) (DistributedSampler's permutation) and yields (epoch, index) keys;
`KeyedDataset` loads sample `index` with torch's generator seeded by (seed, epoch, index).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler


def sample_seed(*parts: int) -> int:
    """A 64-bit seed mixed from integers by NumPy's SeedSequence: nearby keys give unrelated streams."""
    return int(np.random.SeedSequence([int(part) for part in parts]).generate_state(1, np.uint64)[0])


class EpochKeys(Sampler[tuple[int, int]]):
    """(epoch, index) keys of one rank's share of an epoch, shuffled from (seed, epoch); `set_epoch` each epoch."""

    def __init__(self, length: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True) -> None:
        self.order = DistributedSampler(range(length), num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.order.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, index) for index in self.order)

    def __len__(self) -> int:
        return len(self.order)


class KeyedDataset(Dataset):
    """`dataset[index]` loaded with torch's RNG seeded by (seed, epoch, index), for keys from `EpochKeys`; forked
    around the sample, so loading in the main process (`--workers 0`) leaves its own stream untouched."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, epoch, index))
            return self.dataset[index]
