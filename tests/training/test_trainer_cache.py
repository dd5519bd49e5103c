"""Training with --cache: the run reads the decoded-image cache, builds it on first use, and learns exactly
what it learns from the PNGs."""

from __future__ import annotations

import pytest
import torch

from cityseg.data.cache import COMPLETE_FILE, CachedDataset, entry_name
from cityseg.data.dataset import CityscapesDataset
from cityseg.data.frames import list_frames
from cityseg.training.config import resolve_config
from cityseg.training.datasets import build_datasets
from cityseg.training.folds import fold_ids, make_folds
from cityseg.training.trainer import train_run

COMPARED = ("epoch", "lr", "train_loss", "val_loss", "val_miou", "class_iou")


def small_config(**overrides):
    """Full-resolution 128x64 frames, random crops with flips and colour changes, no worker processes."""
    values = {
        "encoder_weights": None,
        "workers": 0,
        "device": "cpu",
        "epochs": 2,
        "lr": 1e-3,
        "aug": ("flip", "scale-crop", "photometric"),
        "crop": (64, 32),
        "scale_range": (0.5, 1.5),
    }
    return resolve_config("seed", **(values | overrides))


def fold0(root):
    return fold_ids(make_folds(list_frames(root, "train"), k=5, seed=0), 0)


@pytest.mark.trains
def test_cached_run_logs_the_same_numbers_as_a_png_run(synth_root, tmp_path):
    torch.set_num_threads(1)
    train_ids, val_ids = fold0(synth_root)
    train_ids, val_ids = train_ids[:8], val_ids[:2]  # two steps of 4 an epoch; two epochs, whose draws differ
    cache_dir = tmp_path / "cache"
    assert not cache_dir.exists()
    plain = train_run(synth_root, tmp_path / "plain", small_config(), train_ids, val_ids, progress=False)
    cached_config = small_config(cache=str(cache_dir))
    cached = train_run(synth_root, tmp_path / "cached", cached_config, train_ids, val_ids, progress=False)

    # Random scaling may enlarge crops, so the entry is full resolution; built by the run itself.
    assert (cache_dir / entry_name("train", None) / COMPLETE_FILE).is_file()
    train_set, val_set = build_datasets(cached_config, synth_root, train_ids, val_ids)
    assert isinstance(train_set, CachedDataset) and isinstance(val_set, CachedDataset)
    assert train_set.ids == list(train_ids) and val_set.ids == list(val_ids)
    assert len(plain.rows) == len(cached.rows) == 2
    for png_row, cache_row in zip(plain.rows, cached.rows, strict=True):
        assert {k: png_row[k] for k in COMPARED} == {k: cache_row[k] for k in COMPARED}


def test_downsized_cache_trains_from_memmaps_and_validates_on_pngs(synth_root, tmp_path):
    train_ids, val_ids = fold0(synth_root)
    config = small_config(size=(64, 32), aug=("flip",), crop=None, scale_range=None, cache=str(tmp_path / "cache"))
    train_set, val_set = build_datasets(config, synth_root, train_ids, val_ids)
    assert isinstance(train_set, CachedDataset) and train_set.entry.name == entry_name("train", (64, 32))
    # Validation scores at the labels' resolution, which a 64x32 entry does not hold.
    assert isinstance(val_set, CityscapesDataset) and val_set[0][1].shape == (64, 128)
    png_config = small_config(size=(64, 32), aug=("flip",), crop=None, scale_range=None)
    png_train, _ = build_datasets(png_config, synth_root, train_ids)
    for i in (0, 5):
        torch.manual_seed(i)
        expected = png_train[i]
        torch.manual_seed(i)
        image, mask = train_set[i]
        assert image.shape == (3, 32, 64) and image.dtype == mask.dtype == torch.uint8
        assert torch.equal(image, expected[0]) and torch.equal(mask, expected[1])
