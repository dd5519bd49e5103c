"""The data one run reads: training and validation datasets (PNGs or the training cache) and their loaders."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from cityseg.data.cache import CachedDataset, ensure_cache, training_cache_size
from cityseg.data.dataset import CityscapesDataset, worker_init
from cityseg.data.frames import Frame, ListedSplit, listed_split
from cityseg.data.sampling import EpochKeys, KeyedDataset
from cityseg.data.transforms import build_transform
from cityseg.errors import UserError
from cityseg.system import default_workers
from cityseg.training.config import AUTO, TrainConfig
from cityseg.training.dist import DistInfo, ShardSampler, is_main
from cityseg.training.model_names import model_title_of, size_multiple


def build_datasets(
    config: TrainConfig, split: ListedSplit | Path, train_ids: Sequence[str], val_ids: Sequence[str] | None = None
) -> tuple[Dataset, Dataset | None]:
    """Training and validation datasets of the train split, from PNGs or the cache; validation at full resolution."""
    split = listed_split(split, "train", config.labels)
    if not train_ids:
        raise UserError("no training images were given (an empty fold?); check the folds file or the dataset.")
    train_frames, val_frames = _frames_for(split, train_ids), _frames_for(split, val_ids or [])
    check_input_size(config, split)
    train_transform = build_transform(
        train=True,
        aug=config.aug,
        size=config.size,
        crop=config.crop,
        scale_range=config.scale_range,
        crop_max_class_ratio=config.crop_max_class_ratio,
        pixel_ops=not config.gpu_aug,  # with --gpu-aug, step_context's augment runs them on the device
    )
    val_set = CityscapesDataset(val_frames, label_source=config.labels) if val_frames else None
    if config.cache in (None, AUTO):  # no cache folder, or "auto" that no cv or train run resolved
        return CityscapesDataset(train_frames, transform=train_transform, label_source=config.labels), val_set
    # The cache's memmaps, made fresh first (DDP ranks wait on its lock); validation reads it only when it holds
    # full-resolution frames, the labels' resolution it scores at.
    size = training_cache_size(config.size, config.aug, config.scale_range)
    folder = Path(config.cache)
    ensure_cache(split.root, "train", size, folder, config.labels, config.workers or None, is_main(), split.frames)
    train_set = CachedDataset(folder, "train", [f.id for f in train_frames], train_transform, size, config.labels)
    if val_frames and size is None:
        val_set = CachedDataset(folder, "train", [f.id for f in val_frames], None, None, config.labels)
    return train_set, val_set


def _frames_for(split: ListedSplit, ids: Sequence[str]) -> list[Frame]:
    missing = [i for i in ids if i not in split.by_id]
    if missing:
        raise UserError(
            f"{len(missing)} image id(s) of the folds are not in {split.root / 'leftImg8bit' / 'train'}, e.g. "
            f"{missing[0]}; the folds file was made for another dataset. Use its dataset, or a new --out folder."
        )
    return [split.by_id[i] for i in ids]


def check_input_size(config: TrainConfig, split: ListedSplit) -> None:
    """Fail before training if the crop exceeds the images or the model would see a bad size."""
    width, height = split.image_size
    if config.size is not None:  # TrainConfig checked --size against --crop and the model
        return
    where = f"the images ({width}x{height}, e.g. {split.frames[0].image})"
    if config.crop is not None and (config.crop[0] > width or config.crop[1] > height):
        raise UserError(
            f"crop {config.crop[0]}x{config.crop[1]} (--crop) is larger than {where}; use a crop that fits, "
            "e.g. --crop " + f"{min(config.crop[0], width)}x{min(config.crop[1], height)}, or a larger --size."
        )
    multiple = size_multiple(config.arch, config.encoder)
    if config.crop is None and (width % multiple or height % multiple):
        raise UserError(
            f"{model_title_of(config)} needs input sides divisible by {multiple}, but {where} is not; pass --size or "
            f"--crop with such sides, e.g. --size {width // multiple * multiple}x{height // multiple * multiple}."
        )


def build_loaders(
    config: TrainConfig, train_set: Dataset, val_set: Dataset | None, info: DistInfo
) -> tuple[DataLoader, DataLoader | None, EpochKeys]:
    """Training loader (sharded, keyed by (seed, epoch, index)) and validation loader (each image once)."""
    workers = config.workers
    if info.world_size > 1:  # N processes share the machine's cores
        workers = min(workers, max(1, default_workers() // info.world_size))
    common: dict[str, Any] = {"batch_size": config.batch_size, "num_workers": workers}
    common["pin_memory"] = info.device.type == "cuda"
    if workers > 0:
        common.update(persistent_workers=True, prefetch_factor=4, worker_init_fn=worker_init)
    keys = EpochKeys(len(train_set), config.seed, rank=info.rank, world_size=info.world_size)
    train_loader = DataLoader(
        KeyedDataset(train_set, config.seed),
        sampler=keys,
        drop_last=len(keys) >= config.batch_size,  # a 1-image last batch would get a full step's weight
        # The workers' base seed from this generator: the global stream then does not depend on the worker count.
        generator=torch.Generator().manual_seed(config.seed),
        **common,
    )
    val_loader = None
    if val_set is not None:
        generator = torch.Generator().manual_seed(config.seed)
        val_loader = DataLoader(val_set, sampler=ShardSampler(len(val_set)), generator=generator, **common)
    return train_loader, val_loader, keys
