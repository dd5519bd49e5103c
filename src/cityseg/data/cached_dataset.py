"""The training cache read as a torch Dataset: rows of the memmaps by frame id, checked fresh against ROOT."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from cityseg.data.cache import entry_name, read_entry_index
from cityseg.data.cache_core import (
    IMAGES_FILE,
    LABELS_FILE,
)
from cityseg.errors import UserError, format_paths
from cityseg.fileio import source_fingerprint


class CachedDataset(Dataset):
    """The items of `cityseg.data.frames.CityscapesDataset` (uint8 image (3, H, W), uint8 mask (H, W)), read from a
    cache entry instead of PNGs.

    `transform` is the same callable (from `cityseg.data.transforms.build_transform`; None = evaluation
    transform, as there); with a cache built at the training size its resize step is a no-op. `size` and
    `label_source` pick the entry, as in `cityseg cache`. With `root`, the sources are re-stat'ed and a
    stale cache is refused. The memmaps open lazily in each DataLoader worker and are dropped when
    pickled, so workers never receive a copy of the arrays.
    """

    def __init__(
        self,
        cache_dir: Path,
        split: str,
        ids: Sequence[str] | None = None,
        transform: Callable[[np.ndarray, np.ndarray], tuple[torch.Tensor, torch.Tensor]] | None = None,
        size: tuple[int, int] | None = None,
        label_source: str = "trainIds",
        root: Path | None = None,
    ) -> None:
        self.entry = Path(cache_dir) / entry_name(split, size, label_source)
        index = read_entry_index(self.entry)
        if index is None:
            raise UserError(
                f"no complete cache at {self.entry}; build it with `cityseg cache ROOT --out {cache_dir} --splits "
                f"{split}" + (f" --size {size[0]}x{size[1]}" if size else "") + f" --labels {label_source}`."
            )
        if root is not None:  # re-stat the sources (no walk, no decoding): a stale cache must not train
            records = [_source_record_from_index(r, Path(root)) for r in index["frames"]]
            changed = [new["id"] for old, new in zip(index["frames"], records, strict=True) if old != new]
            if changed:
                raise UserError(
                    f"cache {self.entry} is stale: {len(changed)} source(s) changed since it was built, e.g. "
                    f"{format_paths(changed, 3)}; rerun `cityseg cache` (it re-decodes only those)."
                )
        rows = {record["id"]: row for row, record in enumerate(index["frames"])}
        self.ids = list(rows) if ids is None else list(ids)
        missing = [i for i in self.ids if i not in rows]
        if missing:
            raise UserError(
                f"cache {self.entry} has no frames {format_paths(missing)}; they are not in split {split!r} "
                "of the ROOT it was built from. Rebuild it with `cityseg cache` for that ROOT."
            )
        self.rows = [rows[i] for i in self.ids]
        if transform is None:
            from cityseg.data.transforms import build_transform

            transform = build_transform(train=False)  # what CityscapesDataset does without one
        self.transform = transform
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self._open()
        row = self.rows[index]
        image, mask = images[row], labels[row]  # (H, W, 3), (H, W) uint8 views: only touched pages are read
        return self.transform(image, mask)

    def _open(self) -> tuple[np.ndarray, np.ndarray]:
        # Copy-on-write: writable views (torch.from_numpy warns on read-only ones), disk never modified.
        if self._arrays is None:
            self._arrays = (
                np.load(self.entry / IMAGES_FILE, mmap_mode="c"),
                np.load(self.entry / LABELS_FILE, mmap_mode="c"),
            )
        return self._arrays

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"] = None  # each worker maps the files itself
        return state


def _source_record_from_index(record: dict[str, Any], root: Path) -> dict[str, Any]:
    """Re-stat the sources an index names (cheap: no directory walk, no decoding)."""
    fresh: dict[str, Any] = {"id": record["id"]}
    for key in ("image", "label"):
        fresh.update(source_fingerprint(key, root / record[key], root))
        fresh[key] = record[key]  # as written, so an unchanged source compares equal
    return fresh
