"""Decoded ground truth for the fast engine: each split's labelIds and instanceIds PNGs decoded once.

Decoding a frame's two gtFine PNGs is most of the fast engine's time, yet the ground truth never changes
while a user scores checkpoint after checkpoint on the same split. So it is stored, already encoded for
counting (fast.encode_segments: one uint16 segment per pixel, and per frame a small table of the
(labelId, instance id) pair each segment stands for), and later evaluations decode only the predictions
and count each frame with one histogram. The entry is written by a scoring pass itself (GroundTruthBuild.read
decodes, encodes, stores and hands back each frame) rather than by a pass of its own; that still adds ~25%
to the pass, so in the default folder only a split's second evaluation builds it (the first leaves a note,
NotYet): a cache pays only when a split is scored again, and a user's first evaluation stays as fast as it
can be. A folder given explicitly is built by the first evaluation. The encoding is lossless for what the
metrics read, so results are identical to decoding the PNGs.

Layout (default `ROOT/../cityseg-cache/eval-gt`, beside the training cache; `--gt-cache DIR`):

    DIR/CITYSEG_EVAL_GT.json     marker: cityseg owns this folder (a folder without it is refused)
    DIR/<split>/segments.npy     (P,) uint16 segment per pixel, every frame flattened one after another
    DIR/<split>/tables.npy       (T, 2) int64 (labelId, instance id or 0) per segment, frames one after another
    DIR/<split>/index.json       per frame: offsets, (H, W), source paths (relative to ROOT), bytes, mtime_ns
    DIR/<split>/COMPLETE         written last; an entry without it is rebuilt, never read

2 bytes per pixel (a 500-frame val split: 2.1 GB; a disk without that much room plus 1 GB spare gets no cache,
with a note). Flat arrays rather than (N, H, W) so frames of different sizes need no special case. An entry
is built in `DIR/.tmp-<split>/` and renamed into place, so a killed build leaves nothing that is ever read.
Any source added, removed, resized or touched makes the entry stale: it is rebuilt whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cityseg.data.cache_core import (
    COMPLETE_FILE,
    INDEX_FILE,
    CacheKind,
    claim_cache_folder,
    default_cache_dir,
    free_bytes,
)
from cityseg.data.pngdecode import UnreadablePngError, image_size
from cityseg.errors import UserError
from cityseg.evaluation.fast import Pair, encode_segments, map_frames, read_ground_truth_pair
from cityseg.fileio import (
    atomic_write_bytes,
    atomic_write_text,
    folder_lock,
    source_fingerprint,
)

SEGMENTS_FILE = "segments.npy"
TABLES_FILE = "tables.npy"
GT_CACHE = CacheKind(
    marker="CITYSEG_EVAL_GT.json",
    format="cityseg-eval-gt",
    format_version=1,
    entry_files=(SEGMENTS_FILE, TABLES_FILE, INDEX_FILE, COMPLETE_FILE),
    label="ground-truth cache",
    entry_label="ground-truth cache entry",
)
MARKER, FORMAT, FORMAT_VERSION = GT_CACHE.marker, GT_CACHE.format, GT_CACHE.format_version
_SPARE_BYTES = 1 << 30  # left free for everything else
SEEN_PREFIX = ".seen-"  # DIR/.seen-<split>.json: the split was evaluated once with these sources (see NotYet)


class UncachableGroundTruth(Exception):
    """A frame the segment encoding cannot hold (over 65536 distinct pairs): evaluate from the PNGs instead."""


class _ShortOfSpace(Exception):
    """The disk cannot hold the entry: evaluate from the PNGs instead."""


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

    def info(self) -> dict[str, Any]:
        """What `evaluate` reports about the cache."""
        return {"path": str(self.path), "status": self.status, "build_s": self.build_s}

    def read(self, pair: Pair) -> tuple[np.ndarray, np.ndarray]:
        """((H, W) uint16 segments, a view into the memmap; (S, 2) table) of one frame."""
        offset, h, w, first, count = self.rows[pair.frame_id]
        return np.asarray(self.segments[offset : offset + h * w]).reshape(h, w), self.tables[first : first + count]


def open_gt_cache(out: Path, root: Path, split: str, pairs: Sequence[Pair], workers: int) -> GroundTruthCache:
    """The split's entry in `out`, built or rebuilt first (a pass of its own) unless it matches every source file now."""
    with ground_truth_source(out, root, split, pairs, workers) as source:
        if isinstance(source, GroundTruthBuild):
            map_frames(source.read, pairs, workers)
    return source if isinstance(source, GroundTruthCache) else source.result


@contextlib.contextmanager
def ground_truth_source(
    out: Path, root: Path, split: str, pairs: Sequence[Pair], workers: int, build_now: bool = True
) -> Iterator[GroundTruthCache | GroundTruthBuild | NotYet]:
    """The split's entry in `out`: opened if it matches every source file now, else a GroundTruthBuild that the
    caller's scoring pass fills frame by frame (through `read`), completed when the block ends without error.

    A build holds the entry's lock for the whole pass, so a second evaluation waits and then finds it fresh;
    an error in the pass leaves nothing behind. Raises UncachableGroundTruth when the encoding cannot hold
    a frame (the caller then scores from the PNGs). With `build_now` False, a split not evaluated before
    (with these very files) only gets a note of that, NotYet, and the next evaluation builds: the cache
    pays only when a split is scored again, and the first evaluation stays as fast as it can be.
    """
    out = Path(out)
    GT_CACHE.check_outside_dataset(out, root, f" with --gt-cache, e.g. {default_gt_cache_dir(root)}")
    _claim_folder(out)
    records = [_pair_record(pair, root) for pair in pairs]
    entry = out / split
    with folder_lock(out, split):
        fresh = _open_if_matching(entry, root, records)
        if fresh is None and not build_now and not _seen_before(out, split, root, records):
            fresh = NotYet(entry)
        elif fresh is None:
            if entry.exists():
                GT_CACHE.check_only_ours(entry)
            build = GroundTruthBuild(
                out, split, root, pairs, records, workers, "rebuilt" if entry.exists() else "built"
            )
            try:
                yield build
            except BaseException:
                build.abort()  # a bad frame must not leave gigabytes behind until the next run
                raise
            build.finish(entry)
    if fresh is not None:
        yield fresh  # outside the lock: a concurrent rebuild replaces the files, the open memmap stays valid


def open_if_fresh(out: Path, root: Path, split: str, pairs: Sequence[Pair]) -> GroundTruthCache | None:
    """The split's entry if it matches every source file now, else None; never builds (for `predict --score`,
    which decodes the ground truth itself rather than make a prediction wait for a cache)."""
    return _open_if_matching(Path(out) / split, root, [_pair_record(pair, root) for pair in pairs])


def _open_if_matching(entry: Path, root: Path, records: list[dict[str, Any]]) -> GroundTruthCache | None:
    index = _read_gt_index(entry)
    if index is None or index["root"] != str(Path(root).resolve()) or index["frames"] != records:
        return None
    return _open(entry, index, "fresh", 0.0)


@dataclass(frozen=True)
class NotYet:
    """The first evaluation of a split (with these files): scored from the PNGs; the next one builds the entry."""

    path: Path
    read = None  # no segments: the caller decodes the ground truth itself

    def info(self) -> dict[str, Any]:
        """What `evaluate` reports about the cache."""
        return {"path": str(self.path), "status": "next run", "build_s": 0.0}


def _seen_before(out: Path, split: str, root: Path, records: list[dict[str, Any]]) -> bool:
    """Whether this split, with exactly these source files, was evaluated before; notes it if not."""
    digest = hashlib.sha256(json.dumps([str(Path(root).resolve()), records]).encode()).hexdigest()
    note = out / f"{SEEN_PREFIX}{split}.json"
    try:
        if json.loads(note.read_text()).get("sources") == digest:
            return True
    except (OSError, ValueError, AttributeError):
        pass
    atomic_write_text(
        note, json.dumps({"sources": digest, "note": "evaluated once; the next evaluation builds the cache"}) + "\n"
    )
    return False


def forget_split(out: Path, split: str) -> None:
    """Delete a split's entry and its note of an earlier evaluation (only files cityseg wrote): the next
    evaluation is a first one again (bench/evaluate.py times first runs this way)."""
    out = Path(out)
    if (out / split).exists():
        GT_CACHE.remove_entry(out / split)
    (out / f"{SEEN_PREFIX}{split}.json").unlink(missing_ok=True)


def gt_cache_folder(setting: Path | bool | None, root: Path) -> Path | None:
    """Where `evaluate`'s gt_cache argument puts the cache: None (off), the default folder (True) or a Path."""
    if setting is False or setting is None:
        return None
    return default_gt_cache_dir(root) if setting is True else Path(setting)


@contextlib.contextmanager
def gt_cache_or_none(
    setting: Path | bool, root: Path, split: str, pairs: Sequence[Pair], workers: int
) -> Iterator[GroundTruthCache | GroundTruthBuild | NotYet | None]:
    """ground_truth_source for `evaluate`'s gt_cache argument: None when off, or (with a GtCacheWarning) when the
    default folder is unwritable or short of space; an explicit folder that is unwritable is a UserError. The
    default folder (True) is built by the second evaluation of a split, an explicit one by the first."""
    out = gt_cache_folder(setting, root)
    if out is None:
        yield None
        return
    with contextlib.ExitStack() as stack:
        try:
            if setting is True:
                _claim_training_cache(out.parent)
            # the default folder builds from the second evaluation of a split on; a folder given explicitly, now
            opened = stack.enter_context(
                ground_truth_source(out, root, split, pairs, workers, build_now=setting is not True)
            )
        except OSError as exc:  # read-only dataset mount, no permission, disk full
            if setting is not True:
                raise UserError(
                    f"cannot write the ground-truth cache {out} ({exc.strerror}); pick a writable "
                    "folder with --gt-cache DIR, or pass --no-gt-cache."
                ) from None
            _note(f"cannot write {out} ({exc.strerror})")
            opened = None
        except _ShortOfSpace as exc:
            _note(str(exc))
            opened = None
        yield opened  # an error in the caller's block reaches the build here, which then removes its temp entry


def _note(reason: str) -> None:
    warnings.warn(f"ground-truth cache not used: {reason}; decoding PNGs instead.", GtCacheWarning, stacklevel=4)


def warn_uncachable(exc: UncachableGroundTruth) -> None:
    """The note printed when a frame could not be cached and the pass was redone from the PNGs."""
    _note(str(exc))


# ------------------------------------------------------------------------------------------------------
# Building
# ------------------------------------------------------------------------------------------------------


class GroundTruthBuild:
    """An entry being written during a scoring pass: `read` decodes a frame's ground truth, encodes it, stores it
    in a temp entry and hands it back for counting; `finish` swaps the complete entry into place."""

    def __init__(
        self,
        out: Path,
        split: str,
        root: Path,
        pairs: Sequence[Pair],
        records: list[dict[str, Any]],
        workers: int,
        status: str,
    ) -> None:
        self.status = status
        self.root, self.split, self.records = Path(root), split, records
        self.shapes = map_frames(_png_shape, pairs, workers)  # (H, W) from headers, to size the memmap
        self.offsets = [0, *itertools.accumulate(h * w for h, w in self.shapes)]
        self.position = {pair.frame_id: i for i, pair in enumerate(pairs)}
        self.tables: list[np.ndarray | None] = [None] * len(pairs)
        self.build_s = 0.0  # seconds spent encoding and storing, summed over threads
        self.result: GroundTruthCache | None = None
        _check_free_space(out, 2 * self.offsets[-1])
        self.tmp = out / f".tmp-{split}"
        if self.tmp.exists():
            GT_CACHE.remove_entry(self.tmp)  # a killed build's leftovers
        self.tmp.mkdir()
        self.segments = np.lib.format.open_memmap(
            self.tmp / SEGMENTS_FILE, mode="w+", dtype=np.uint16, shape=(self.offsets[-1],)
        )

    def read(self, pair: Pair) -> tuple[np.ndarray, np.ndarray]:
        """((H, W) uint16 segments, (S, 2) table) of one frame, decoded from its PNGs and stored on the way."""
        i = self.position[pair.frame_id]
        gt, inst = read_ground_truth_pair(pair)
        started = time.perf_counter()
        if gt.shape != self.shapes[i]:
            raise UserError(f"ground truth {pair.label_ids} changed while the cache was built; rerun.")
        try:
            segments, table = encode_segments(gt, inst, pair.label_ids, pair.instance_ids)
        except ValueError as exc:
            raise UncachableGroundTruth(str(exc)) from None
        self.segments[self.offsets[i] : self.offsets[i + 1]] = segments.ravel()
        self.tables[i] = table
        self.build_s += time.perf_counter() - started  # a float add under the GIL: safe across threads
        return segments, table

    def info(self) -> dict[str, Any]:
        """What `evaluate` reports about the cache (build_s: encoding and writing, summed over threads)."""
        return {
            "path": str(self.result.path if self.result else self.tmp),
            "status": self.status,
            "build_s": self.build_s,
        }

    def finish(self, entry: Path) -> None:
        """Write the tables, the index and COMPLETE (last), then rename the temp entry into place."""
        started = time.perf_counter()
        missing = [self.records[i]["id"] for i, table in enumerate(self.tables) if table is None]
        if missing:
            raise RuntimeError(f"ground-truth cache build ended with {len(missing)} frame(s) never read: {missing[:3]}")
        self.segments.flush()
        tables = [table for table in self.tables if table is not None]
        firsts = [0, *itertools.accumulate(len(t) for t in tables)]
        table_array = np.concatenate(tables) if tables else np.zeros((0, 2), dtype=np.int64)
        atomic_write_bytes(self.tmp / TABLES_FILE, lambda handle: np.save(handle, table_array))
        index = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "root": str(self.root.resolve()),
            "split": self.split,
            "rows": [
                [offset, h, w, first, len(table)]
                for offset, (h, w), first, table in zip(
                    self.offsets[:-1], self.shapes, firsts[:-1], tables, strict=True
                )
            ],
            "frames": self.records,
        }
        atomic_write_text(self.tmp / INDEX_FILE, json.dumps(index) + "\n")
        atomic_write_text(self.tmp / COMPLETE_FILE, "complete\n")  # last: an entry without it is never read
        del self.segments  # close the memmap before the rename
        if entry.exists():
            GT_CACHE.remove_entry(entry)
        os.rename(self.tmp, entry)
        self.build_s += time.perf_counter() - started
        self.result = _open(entry, index, self.status, self.build_s)

    def abort(self) -> None:
        """Remove the temp entry (the pass failed; the next run builds again)."""
        self.segments = None
        if self.tmp.exists():
            GT_CACHE.remove_entry(self.tmp)


def _check_free_space(out: Path, needed: int) -> None:
    """Refuse to start a build the disk cannot hold (a memmap write to a full disk kills the process)."""
    free = free_bytes(out)
    if free < needed + _SPARE_BYTES:
        raise _ShortOfSpace(
            f"{out} has {free / 1e9:.1f} GB free, the split needs {needed / 1e9:.1f} GB "
            f"(+{_SPARE_BYTES / 1e9:.1f} GB spare); free some space or pass --gt-cache DIR"
        )


def _png_shape(pair: Pair) -> tuple[int, int]:
    """(H, W) of the labelIds PNG from its header, to size the memmaps before decoding."""
    try:
        width, height = image_size(pair.label_ids)
    except UnreadablePngError as exc:
        raise UserError(f"cannot read ground truth {pair.label_ids} ({exc.detail}); restore it from gtFine.") from None
    return height, width


def _pair_record(pair: Pair, root: Path) -> dict[str, Any]:
    """What identifies a frame's ground truth: paths relative to ROOT, sizes and mtimes."""
    return {
        "id": pair.frame_id,
        **source_fingerprint("label_ids", pair.label_ids, root),
        **source_fingerprint("instance_ids", pair.instance_ids, root),
    }


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


def _read_gt_index(entry: Path) -> dict[str, Any] | None:
    """The entry's index if it is complete and its arrays have the recorded length, else None (rebuild)."""
    return GT_CACHE.read_index(entry, _segments_match_index)


def _segments_match_index(entry: Path, index: dict[str, Any]) -> bool:
    offset, h, w, first, count = index["rows"][-1] if index["rows"] else (0, 0, 0, 0, 0)
    segments = np.load(entry / SEGMENTS_FILE, mmap_mode="r")
    tables = np.load(entry / TABLES_FILE, mmap_mode="r")
    return segments.shape == (offset + h * w,) and segments.dtype == np.uint16 and tables.shape == (first + count, 2)


def _claim_training_cache(parent: Path) -> None:
    """Mark the shared default folder as the training cache's, so `cityseg cache`/train accept it later."""
    try:
        claim_cache_folder(parent)
    except UserError:
        raise UserError(
            f"{parent} (the default cache folder beside ROOT) is not empty and was not written by cityseg, so the "
            "ground truth is not cached there; pass --gt-cache DIR or --no-gt-cache."
        ) from None


def _claim_folder(out: Path) -> None:
    """Create the ground-truth cache folder with its marker, or check the marker."""
    GT_CACHE.claim(
        out,
        "written by `cityseg evaluate` (decoded ground truth); safe to delete, it is rebuilt from ROOT",
        "cityseg ground-truth cache",
        "pass an empty or new folder with --gt-cache DIR, or --no-gt-cache.",
    )
