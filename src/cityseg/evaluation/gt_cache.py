"""Decoded ground truth for the fast engine: each split's labelIds and instanceIds PNGs decoded once.

Decoding a frame's two gtFine PNGs costs ~2/3 of the fast engine's time, yet the ground truth never
changes while a user scores checkpoint after checkpoint on the same split. So the first fast evaluation
decodes it once and stores it already encoded for counting (fast.encode_segments: one uint16 segment
per pixel, and per frame a small table of the (labelId, instance id) pair each segment stands for);
later evaluations decode only the predictions and count each frame with one bincount. The encoding is
lossless for what the metrics read, so results are identical to decoding the PNGs (tests check it).

Layout (default `ROOT/../cityseg-cache/eval-gt`, beside the training cache; `--gt-cache DIR`):

    DIR/CITYSEG_EVAL_GT.json     marker: cityseg owns this folder (a folder without it is refused)
    DIR/<split>/segments.npy     (P,) uint16 segment per pixel, every frame flattened one after another
    DIR/<split>/tables.npy       (T, 2) int64 (labelId, instance id or 0) per segment, frames one after another
    DIR/<split>/index.json       per frame: offsets, (H, W), source paths (relative to ROOT), bytes, mtime_ns
    DIR/<split>/COMPLETE         written last; an entry without it is rebuilt, never read

2 bytes per pixel (a 500-frame val split: 2.1 GB). Flat arrays rather than (N, H, W) so frames of
different sizes need no special case. An entry is built
in `DIR/.tmp-<split>/` and renamed into place, so a killed build leaves nothing that is ever read.
Any source added, removed, resized or touched makes the entry stale: it is rebuilt whole.
"""

from __future__ import annotations

import itertools
import json
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cityseg.cache import default_cache_dir
from cityseg.errors import UserError, format_paths
from cityseg.evaluation.fast import Pair, encode_segments, map_frames, read_ground_truth_pair
from cityseg.fileio import (
    atomic_write_bytes,
    atomic_write_text,
    claim_folder,
    folder_lock,
    read_complete_index,
    source_fingerprint,
)
from cityseg.pngdecode import UnreadablePngError, image_size

MARKER = "CITYSEG_EVAL_GT.json"
FORMAT = "cityseg-eval-gt"
FORMAT_VERSION = 1
SEGMENTS_FILE = "segments.npy"
TABLES_FILE = "tables.npy"
INDEX_FILE = "index.json"
COMPLETE_FILE = "COMPLETE"
_ENTRY_FILES = (SEGMENTS_FILE, TABLES_FILE, INDEX_FILE, COMPLETE_FILE)


class _Uncachable(Exception):
    """A frame the segment encoding cannot hold (over 65536 distinct pairs): evaluate from the PNGs instead."""


class GtCacheWarning(UserWarning):
    """The ground-truth cache could not be used; the evaluation went on from the PNGs (same results)."""


def default_gt_cache_dir(root: Path) -> Path:
    """Beside the training cache, outside ROOT, so ROOT keeps the official layout and may stay read-only."""
    return default_cache_dir(root) / "eval-gt"


@dataclass(frozen=True)
class GroundTruthCache:
    """A fresh entry, opened: reads one frame's encoded ground truth (fast.encode_segments) from the memmaps."""

    path: Path
    status: str  # "fresh" (read as found), "built" (none before) or "rebuilt" (stale or partial replaced)
    build_s: float  # seconds this call spent building (0 when fresh)
    segments: np.ndarray  # (P,) uint16 memmap
    tables: np.ndarray  # (T, 2) int64
    rows: dict[str, tuple[int, int, int, int, int]]  # frame id -> (pixel offset, H, W, table offset, S)

    def read(self, pair: Pair) -> tuple[np.ndarray, np.ndarray]:
        """((H, W) uint16 segments, a view into the memmap; (S, 2) table) of one frame."""
        offset, h, w, first, count = self.rows[pair.frame_id]
        return np.asarray(self.segments[offset : offset + h * w]).reshape(h, w), self.tables[first : first + count]


def open_gt_cache(out: Path, root: Path, split: str, pairs: Sequence[Pair], workers: int) -> GroundTruthCache:
    """The split's entry in `out`, built or rebuilt first unless it matches every source file now."""
    out = Path(out)
    _check_outside_dataset(out, root)
    _claim_folder(out)
    records = [_source_record(pair, root) for pair in pairs]
    entry = out / split
    with folder_lock(out, split):
        index = _read_entry_index(entry)
        if index is not None and index["root"] == str(Path(root).resolve()) and index["frames"] == records:
            return _open(entry, index, "fresh", 0.0)
        status = "built" if not entry.exists() else "rebuilt"
        if entry.exists():
            _check_only_ours(entry)
        started = time.perf_counter()
        index = _build(out, entry, split, root, pairs, records, workers)
        return _open(entry, index, status, time.perf_counter() - started)


def gt_cache_or_none(setting: Path | bool, root: Path, split: str, pairs: Sequence[Pair], workers: int) -> GroundTruthCache | None:
    """Resolve `evaluate`'s gt_cache argument: False = off; True = default folder, skipped with a warning if unwritable."""
    if setting is False or setting is None:
        return None
    out = default_gt_cache_dir(root) if setting is True else Path(setting)
    try:
        if setting is True:
            _claim_training_cache(out.parent)
        return open_gt_cache(out, root, split, pairs, workers)
    except _Uncachable as exc:
        warnings.warn(f"ground-truth cache not used: {exc}; decoding PNGs instead.", GtCacheWarning, stacklevel=3)
        return None
    except OSError as exc:  # read-only dataset mount, no permission, disk full
        if setting is not True:
            raise UserError(f"cannot write the ground-truth cache {out} ({exc.strerror}); pick a writable folder "
                            "with --gt-cache DIR, or pass --no-gt-cache.") from None
        warnings.warn(f"ground-truth cache not used: cannot write {out} ({exc.strerror}); decoding PNGs instead.",
                      GtCacheWarning, stacklevel=3)
        return None


# ------------------------------------------------------------------------------------------------------
# Building
# ------------------------------------------------------------------------------------------------------


def _build(out: Path, entry: Path, split: str, root: Path, pairs: Sequence[Pair], records: list[dict[str, Any]],
           workers: int) -> dict[str, Any]:
    """Decode every frame's ground truth into a temp entry, then swap it into place."""
    tmp = out / f".tmp-{split}"
    if tmp.exists():
        _remove_entry(tmp)  # a killed build's leftovers
    tmp.mkdir()
    try:
        index = _fill_entry(tmp, split, root, pairs, records, workers)
    except BaseException:
        _remove_entry(tmp)  # a bad frame must not leave gigabytes behind until the next run
        raise
    if entry.exists():
        _remove_entry(entry)
    os.rename(tmp, entry)
    return index


def _fill_entry(tmp: Path, split: str, root: Path, pairs: Sequence[Pair], records: list[dict[str, Any]],
                workers: int) -> dict[str, Any]:
    """Write the arrays, the index and COMPLETE (last) into the temp entry `tmp`."""
    shapes = map_frames(_png_shape, pairs, workers)
    offsets = [0, *itertools.accumulate(h * w for h, w in shapes)]
    segments = np.lib.format.open_memmap(tmp / SEGMENTS_FILE, mode="w+", dtype=np.uint16, shape=(offsets[-1],))

    def fill(i: int) -> np.ndarray:
        gt, inst = read_ground_truth_pair(pairs[i])
        if gt.shape != shapes[i]:
            raise UserError(f"ground truth {pairs[i].label_ids} changed while the cache was built; rerun.")
        try:
            frame_segments, table = encode_segments(gt, inst, pairs[i].label_ids, pairs[i].instance_ids)
        except ValueError as exc:
            raise _Uncachable(str(exc)) from None
        segments[offsets[i] : offsets[i + 1]] = frame_segments.ravel()
        return table  # (S, 2)

    tables = map_frames(fill, range(len(pairs)), workers)
    segments.flush()
    firsts = [0, *itertools.accumulate(len(t) for t in tables)]
    table_array = np.concatenate(tables) if tables else np.zeros((0, 2), dtype=np.int64)
    atomic_write_bytes(tmp / TABLES_FILE, lambda handle: np.save(handle, table_array))
    index = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "root": str(Path(root).resolve()),
        "split": split,
        "rows": [
            [offset, h, w, first, len(table)]
            for offset, (h, w), first, table in zip(offsets[:-1], shapes, firsts[:-1], tables, strict=True)
        ],
        "frames": records,
    }
    atomic_write_text(tmp / INDEX_FILE, json.dumps(index) + "\n")
    atomic_write_text(tmp / COMPLETE_FILE, "complete\n")  # last: an entry without it is never read
    return index


def _png_shape(pair: Pair) -> tuple[int, int]:
    """(H, W) of the labelIds PNG from its header, to size the memmaps before decoding."""
    try:
        width, height = image_size(pair.label_ids)
    except UnreadablePngError as exc:
        raise UserError(f"cannot read ground truth {pair.label_ids} ({exc.detail}); restore it from gtFine.") from None
    return height, width


def _source_record(pair: Pair, root: Path) -> dict[str, Any]:
    """What identifies a frame's ground truth: paths relative to ROOT, sizes and mtimes."""
    return {"id": pair.frame_id, **source_fingerprint("label_ids", pair.label_ids, root),
            **source_fingerprint("instance_ids", pair.instance_ids, root)}


# ------------------------------------------------------------------------------------------------------
# Reading and ownership
# ------------------------------------------------------------------------------------------------------


def _open(entry: Path, index: dict[str, Any], status: str, build_s: float) -> GroundTruthCache:
    rows = {record["id"]: tuple(row) for record, row in zip(index["frames"], index["rows"], strict=True)}
    return GroundTruthCache(
        path=entry,
        status=status,
        build_s=build_s,
        segments=np.load(entry / SEGMENTS_FILE, mmap_mode="r"),
        tables=np.load(entry / TABLES_FILE),
        rows=rows,
    )


def _read_entry_index(entry: Path) -> dict[str, Any] | None:
    """The entry's index if it is complete and its arrays have the recorded length, else None (rebuild)."""
    index = read_complete_index(entry, FORMAT, FORMAT_VERSION)
    if index is None:
        return None
    try:
        offset, h, w, first, count = index["rows"][-1] if index["rows"] else (0, 0, 0, 0, 0)
        segments = np.load(entry / SEGMENTS_FILE, mmap_mode="r")
        tables = np.load(entry / TABLES_FILE, mmap_mode="r")
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None  # truncated or edited by hand: rebuild rather than trust it
    if segments.shape != (offset + h * w,) or segments.dtype != np.uint16 or tables.shape != (first + count, 2):
        return None
    return index


def _claim_training_cache(parent: Path) -> None:
    """Mark the shared default folder as the training cache's, so `cityseg cache`/train accept it later."""
    from cityseg import cache as training_cache

    try:
        training_cache.claim_cache_folder(parent)
    except UserError:
        raise UserError(
            f"{parent} (the default cache folder beside ROOT) is not empty and was not written by cityseg, so the "
            "ground truth is not cached there; pass --gt-cache DIR or --no-gt-cache."
        ) from None


def _check_outside_dataset(out: Path, root: Path) -> None:
    """Keep cache files out of the official tree, where dataset walkers would find them."""
    out_r, root_r = out.resolve(), Path(root).resolve()
    for sub in ("leftImg8bit", "gtFine", "gtCoarse"):
        if out_r == root_r / sub or (root_r / sub) in out_r.parents:
            raise UserError(f"ground-truth cache {out} is inside the dataset's {sub}/ tree; pick a folder outside it "
                            f"with --gt-cache, e.g. {default_gt_cache_dir(root)} (the default).")


def _claim_folder(out: Path) -> None:
    """Create the ground-truth cache folder with its marker, or check the marker."""
    note = "written by `cityseg evaluate` (decoded ground truth); safe to delete, it is rebuilt from ROOT"
    claim_folder(out, MARKER, {"format": FORMAT, "format_version": FORMAT_VERSION, "note": note},
                 "cityseg ground-truth cache", "pass an empty or new folder with --gt-cache DIR, or --no-gt-cache.")


def _ours(name: str) -> bool:
    """An entry file, or the temp file atomic_write_text leaves if killed while writing one."""
    return name in _ENTRY_FILES or (name.endswith(".tmp") and any(name.startswith(f".{f}.") for f in _ENTRY_FILES))


def _check_only_ours(path: Path) -> None:
    """Refuse to replace an entry folder that holds files cityseg did not write."""
    others = sorted(p.name for p in path.iterdir() if not _ours(p.name))
    if others or not path.is_dir():
        raise UserError(f"ground-truth cache entry {path} holds files cityseg did not write ({format_paths(others)}); "
                        "move them away and rerun, cityseg deletes only its own files.")


def _remove_entry(path: Path) -> None:
    """Delete an entry folder cityseg wrote, file by known file (never a recursive delete)."""
    _check_only_ours(path)
    for child in path.iterdir():
        child.unlink()  # all ours, checked above
    path.rmdir()
