"""Sampling keyed by (seed, epoch, index): the order and every sample's draws are functions of those alone."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from cityseg.data.dataset import worker_init
from cityseg.data.sampling import EpochKeys, KeyedDataset, sample_seed
from cityseg.data.transforms import build_transform


def test_epoch_keys_shuffle_by_seed_and_epoch_like_distributed_sampler():
    keys = EpochKeys(10, seed=3)
    keys.set_epoch(2)
    epoch_2 = list(keys)
    assert {epoch for epoch, _ in epoch_2} == {2} and sorted(i for _, i in epoch_2) == list(range(10))
    reference = DistributedSampler(range(10), num_replicas=1, rank=0, shuffle=True, seed=3)
    reference.set_epoch(2)
    assert [i for _, i in epoch_2] == list(reference)
    fresh = EpochKeys(10, seed=3)
    fresh.set_epoch(2)
    assert list(fresh) == epoch_2  # a resumed run's sampler gives the same epoch
    keys.set_epoch(3)
    assert [i for _, i in keys] != [i for _, i in epoch_2]


def test_epoch_keys_shard_one_permutation_over_ranks():
    shards = []
    for rank in range(2):
        keys = EpochKeys(9, seed=0, rank=rank, world_size=2)
        keys.set_epoch(1)
        shards.append([i for _, i in keys])
    assert len(shards[0]) == len(shards[1]) == 5  # DistributedSampler pads the odd one out
    whole = EpochKeys(9, seed=0)
    whole.set_epoch(1)
    permutation = [i for _, i in whole]
    padded = permutation + permutation[:1]
    assert shards[0] == padded[0::2] and shards[1] == padded[1::2]


class _Noise(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.rand(3)


def test_keyed_samples_depend_on_the_key_only_and_leave_the_global_stream_alone():
    dataset = KeyedDataset(_Noise(), seed=7)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first = dataset[(1, 2)]
    assert torch.equal(torch.get_rng_state(), state)
    dataset[(1, 3)]
    torch.manual_seed(99)
    assert torch.equal(dataset[(1, 2)], first)
    assert not torch.equal(dataset[(2, 2)], first) and not torch.equal(dataset[(1, 1)], first)
    assert not torch.equal(KeyedDataset(_Noise(), seed=8)[(1, 2)], first)
    assert sample_seed(0, 1, 2) != sample_seed(0, 2, 1) and 0 <= sample_seed(0, 1, 2) < 2**64


class _Frames(Dataset):
    """Eight colourful frames through the training transform (random scale, crop, flip, photometric)."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.images = rng.integers(0, 256, (8, 64, 128, 3), dtype=np.uint8)
        self.masks = rng.integers(0, 19, (8, 64, 128), dtype=np.uint8)
        self.transform = build_transform(
            True, ("flip", "scale-crop", "photometric"), crop=(64, 32), scale_range=(0.25, 2.0)
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.transform(self.images[index], self.masks[index])


def test_loader_batches_are_identical_with_zero_and_two_workers():
    def epochs(workers: int) -> list[torch.Tensor]:
        keys = EpochKeys(8, seed=5)
        extra = {"persistent_workers": True, "worker_init_fn": worker_init} if workers else {}
        loader = DataLoader(
            KeyedDataset(_Frames(), seed=5),
            batch_size=3,
            sampler=keys,
            num_workers=workers,
            generator=torch.Generator().manual_seed(5),
            **extra,
        )
        batches = []
        for epoch in (1, 2):
            keys.set_epoch(epoch)
            batches += [torch.cat([images.flatten(), masks.flatten()]) for images, masks in loader]
        return batches

    torch.manual_seed(0)
    without = epochs(0)
    torch.manual_seed(1)  # the main process's stream is not what the samples draw from
    with_workers = epochs(2)
    assert len(without) == len(with_workers) == 6
    assert all(torch.equal(a, b) for a, b in zip(without, with_workers, strict=True))
    assert not torch.equal(without[0], without[3])  # epoch 2 is another shuffle with other draws


@pytest.mark.slow  # a child python
def test_loader_workers_start_after_parallel_opencv_work_in_the_parent():
    """OpenCV's thread pool does not survive a fork: workers forked after a parallel OpenCV call in the parent (a
    cache build, an evaluation in the same notebook kernel) hung in worker_init. In a child python, so that a hang
    fails this test (by its timeout) instead of stopping the suite."""
    code = (
        "import cv2, numpy as np\n"
        "from torch.utils.data import DataLoader\n"
        "from cityseg.data.dataset import worker_init\n"
        "big = np.random.default_rng(0).integers(0, 255, (1024, 2048, 3), dtype=np.uint8)\n"
        "for _ in range(8):\n"
        "    cv2.GaussianBlur(big, (31, 31), 0)\n"  # parallel unless cityseg set OpenCV to one thread
        "    loader = DataLoader(list(range(4)), batch_size=2, num_workers=2, worker_init_fn=worker_init)\n"
        "    assert sum(len(batch) for batch in loader) == 4\n"
        "print('done')\n"
    )
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr[-3000:]
