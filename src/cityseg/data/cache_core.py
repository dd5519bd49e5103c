"""What every cityseg cache folder shares: a marker that makes the folder ours, entry folders of known files
that are the only thing ever deleted, a complete-index check, the dataset tree kept out, free space asked first.

The training cache (`cityseg.data.cache`) is one `CacheKind` and lives beside ROOT by default
(`default_cache_dir`). No torch here.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cityseg.errors import UserError, format_paths
from cityseg.fileio import claim_folder, read_complete_index

DATASET_TREES = ("leftImg8bit", "gtFine", "gtCoarse")
# Every entry of every kind has these two: the index of what it holds, and COMPLETE, written last.
INDEX_FILE = "index.json"
COMPLETE_FILE = "COMPLETE"


def default_cache_dir(root: Path) -> Path:
    """Cache beside ROOT, not inside it, so ROOT keeps the official layout and can stay read-only."""
    return Path(root).resolve().parent / "cityseg-cache"


@dataclass(frozen=True)
class CacheKind:
    """One kind of cache folder: its marker file, format stamp and the files of each of its entries."""

    marker: str
    format: str
    format_version: int
    entry_files: tuple[str, ...]
    label: str  # how messages name the folder: "cache folder"
    entry_label: str  # ... and one entry of it: "cache entry"

    def check_outside_dataset(self, out: Path, root: Path, instead: str) -> None:
        """Keep cache files out of the official tree, where dataset walkers would find them."""
        out_r, root_r = Path(out).resolve(), Path(root).resolve()
        for sub in DATASET_TREES:
            if out_r == root_r / sub or (root_r / sub) in out_r.parents:
                raise UserError(
                    f"{self.label} {out} is inside the dataset's {sub}/ tree; pick a folder outside "
                    f"it{instead} (the default)."
                )

    def claim(self, out: Path, note: str, owner: str, fix: str) -> None:
        """Create the folder with its marker, or check the marker; never write into someone else's folder."""
        stamp = {"format": self.format, "format_version": self.format_version, "note": note}
        claim_folder(out, self.marker, stamp, owner, fix)

    def is_ours(self, name: str) -> bool:
        """An entry file, or the temp file an atomic write of one leaves if killed."""
        return name in self.entry_files or (
            name.endswith(".tmp") and any(name.startswith(f".{f}.") for f in self.entry_files)
        )

    def check_only_ours(self, path: Path) -> None:
        """Refuse to replace an entry folder that holds files cityseg did not write."""
        others = sorted(p.name for p in path.iterdir() if not self.is_ours(p.name))
        if others or not path.is_dir():
            raise UserError(
                f"{self.entry_label} {path} holds files cityseg did not write ({format_paths(others)}); "
                "move them away and rerun, cityseg deletes only its own files."
            )

    def remove_entry(self, path: Path) -> None:
        """Delete an entry folder cityseg wrote, file by known file (never a recursive delete)."""
        self.check_only_ours(path)
        for child in path.iterdir():
            child.unlink()  # all ours, checked above
        path.rmdir()

    def read_index(self, entry: Path, arrays_match: Callable[[Path, dict[str, Any]], bool]) -> dict[str, Any] | None:
        """The entry's index if it is complete and `arrays_match` its arrays, else None (rebuild rather than
        trust a truncated or hand-edited entry)."""
        index = read_complete_index(entry, self.format, self.format_version)
        if index is None:
            return None
        try:
            return index if arrays_match(entry, index) else None
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return None


def free_bytes(folder: Path) -> int:
    """Free space where `folder` lives, asked before a build so it fails at once rather than at the last frame."""
    return shutil.disk_usage(folder).free


# The default folder beside ROOT is the training cache's (its marker).
IMAGES_FILE = "images.npy"
LABELS_FILE = "labels.npy"
TRAINING_CACHE = CacheKind(
    marker="CITYSEG_CACHE.json",
    format="cityseg-cache",
    format_version=1,
    entry_files=(IMAGES_FILE, LABELS_FILE, INDEX_FILE, COMPLETE_FILE),
    label="cache folder",
    entry_label="cache entry",
)


def claim_cache_folder(out: Path) -> None:
    """Create the cache folder with its marker, or check the marker; never write into someone else's folder."""
    TRAINING_CACHE.claim(
        out,
        "written by `cityseg cache`; safe to delete, it is rebuilt from ROOT",
        "cityseg cache",
        "pass an empty or new folder with --out/--cache, or leave it out to use the default beside ROOT.",
    )
