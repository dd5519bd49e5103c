"""Decode each split once: uint8 memmaps of images and trainIds at the training resolution.

Decoding one 2048x1024 PNG costs ~33 ms of a core, reading a 512x1024 crop from a memmap ~0.1 ms, so
training epochs after the first stop paying for PNG decoding. The cache is derived data: it can always
be rebuilt from ROOT, so it lives outside ROOT's official tree (default `ROOT/../cityseg-cache`).

Layout of a cache folder (`cityseg cache ROOT --out DIR`, `--cache DIR` on train/cv):

    DIR/CITYSEG_CACHE.json              marker: cityseg owns this folder (it refuses folders without it)
    DIR/<split>_<W>x<H>_<labels>/       one entry per split, size ("full" = source size) and label source
        images.npy                      (N, H, W, 3) uint8, rows in index order
        labels.npy                      (N, H, W) uint8 trainIds, 255 = ignore
        index.json                      per frame: id, source paths (relative to ROOT), mtime_ns, bytes
        COMPLETE                        written last; an entry without it is never read
    DIR/.lock-<entry>                   flock: one builder per entry, concurrent trainers wait

An entry is built in `DIR/.tmp-<entry>/` and renamed into place only once complete, so a killed build
leaves at most a temp folder that the next run discards. A source whose path, size or mtime changed makes
the entry stale; the rebuild decodes only the changed frames and copies the rest from the old entry.
The bytes written depend only on the sources, so a rerun after SIGKILL ends equal to an uninterrupted run.

Resizing uses the evaluation transform's own `v2.Resize` (image bilinear+antialias, mask nearest), so a
cache at `--size` gives exactly the evaluation inputs of PNGs at that size. Training crops from a full-
resolution entry equal those from PNGs bit for bit; from a downsized entry they are resampled twice,
which `training_cache_size` avoids whenever random scaling could enlarge a crop.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from cityseg.data.cache_core import (
    COMPLETE_FILE,
    IMAGES_FILE,
    INDEX_FILE,
    LABELS_FILE,
    TRAINING_CACHE,
    claim_cache_folder,
    default_cache_dir,
    free_bytes,
)
from cityseg.data.layout import LABEL_SOURCES
from cityseg.errors import UserError, format_paths
from cityseg.fileio import folder_lock, source_fingerprint, sync_to_disk
from cityseg.locks import die_with_parent

MARKER, FORMAT, FORMAT_VERSION = TRAINING_CACHE.marker, TRAINING_CACHE.format, TRAINING_CACHE.format_version
# Fault injection for the kill tests: the build SIGKILLs itself at the named step (see tests/data/test_cache.py).
_CRASH_ENV = "CITYSEG_CACHE_CRASH_AT"


@dataclass(frozen=True)
class CacheResult:
    """What `ensure_cache` found or did for one split."""

    split: str
    path: Path  # the entry folder
    frames: int
    decoded: int  # frames decoded from PNG in this call
    reused: int  # frames copied unchanged from a stale entry
    status: str  # "fresh" (nothing to do), "built" (new entry) or "rebuilt" (stale or partial entry replaced)


def entry_name(split: str, size: tuple[int, int] | None, label_source: str = "trainIds") -> str:
    """Folder name of one entry: `train_1024x512_trainIds`, or `val_full_trainIds` at source size."""
    size_part = "full" if size is None else f"{size[0]}x{size[1]}"
    return f"{split}_{size_part}_{label_source}"


def resize_pair(image: np.ndarray, mask: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resize (H, W, 3) and (H, W) uint8 arrays to (W, H) with the op the evaluation transform uses.

    The same `v2.Resize` as `build_transform(train=False, size=size)` (image bilinear with antialias on
    uint8, mask nearest), so evaluating on the cache gives exactly the pixels of evaluating on PNGs.
    """
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    resize = v2.Resize((size[1], size[0]), antialias=True)
    image_t = tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1))  # (3, H, W) uint8
    image_t, mask_t = resize(image_t, tv_tensors.Mask(torch.from_numpy(mask)))
    return image_t.permute(1, 2, 0).numpy(), mask_t.numpy()


def training_cache_size(
    size: tuple[int, int] | None, aug: Sequence[str], scale_range: tuple[float, float] | None
) -> tuple[int, int] | None:
    """The entry size that loses nothing for these augmentations: `size`, or full resolution when random
    scaling can enlarge past `size` (a crop upsampled from a downsized cache would be blurrier than one
    resampled once from the source, which is what training on PNGs does)."""
    from cityseg.data.augmentations import DEFAULT_SCALE_RANGE

    if size is not None and "scale-crop" in aug and (scale_range or DEFAULT_SCALE_RANGE)[1] > 1.0:
        return None
    return size


# ----------------------------------------------------------------------------------------------------------
# building


def build_cache(
    root: Path,
    splits: Sequence[str] = ("train", "val"),
    size: tuple[int, int] | None = None,
    out: Path | None = None,
    workers: int | None = None,
    label_source: str = "trainIds",
    progress: bool = True,
) -> list[CacheResult]:
    """Make every requested split's entry fresh (the `cityseg cache` command)."""
    return [ensure_cache(root, split, size, out, label_source, workers, progress) for split in splits]


def ensure_cache(
    root: Path,
    split: str,
    size: tuple[int, int] | None = None,
    out: Path | None = None,
    label_source: str = "trainIds",
    workers: int | None = None,
    progress: bool = True,
) -> CacheResult:
    """Return a fresh entry for `split`, building or repairing it first when needed (safe to call each run)."""
    from cityseg.data.frames import list_frames

    root = Path(root)
    if label_source not in LABEL_SOURCES:
        raise UserError(f"label source {label_source!r} is unknown; use one of {', '.join(LABEL_SOURCES)}.")
    out = Path(out) if out is not None else default_cache_dir(root)
    TRAINING_CACHE.check_outside_dataset(out, root, f", e.g. {default_cache_dir(root)}")
    frames = list_frames(root, split, label_source=label_source)
    if not frames:
        raise UserError(f"split {split!r} of {root} has no frames to cache; check ROOT and --splits.")
    records = [_frame_record(frame, root) for frame in frames]
    claim_cache_folder(out)
    name = entry_name(split, size, label_source)
    final = out / name
    with folder_lock(out, name):
        _recover_interrupted_swap(out, name)
        old = read_entry_index(final)
        if old is not None and _stale_reason(old, records, size) is None:
            return CacheResult(split, final, len(records), 0, 0, "fresh")
        status = "built" if not final.exists() else "rebuilt"
        if final.exists():
            TRAINING_CACHE.check_only_ours(final)  # before decoding, not after an hour
        job = _Job(split, frames, records, size, label_source, workers, progress)
        decoded, reused = _build_entry(job, final, old)
    return CacheResult(split, final, len(records), decoded, reused, status)


def cache_state(
    root: Path, split: str, size: tuple[int, int] | None = None, out: Path | None = None, label_source: str = "trainIds"
) -> str:
    """Say whether an entry is usable: "fresh", "missing", "partial" or "stale: <why>" (reads no pixels)."""
    from cityseg.data.frames import list_frames

    out = Path(out) if out is not None else default_cache_dir(root)
    final = out / entry_name(split, size, label_source)
    if not final.exists():
        return "missing"
    index = read_entry_index(final)
    if index is None:
        return "partial"
    records = [_frame_record(f, Path(root)) for f in list_frames(root, split, label_source=label_source)]
    reason = _stale_reason(index, records, size)
    return "fresh" if reason is None else f"stale: {reason}"


def _frame_record(frame, root: Path) -> dict[str, Any]:
    """What identifies a frame's sources: paths relative to ROOT (so ROOT may move), sizes and mtimes."""
    return {
        "id": frame.id,
        **source_fingerprint("image", frame.image, root),
        **source_fingerprint("label", frame.label, root),
    }


def _stale_reason(index: dict[str, Any], records: list[dict[str, Any]], size: tuple[int, int] | None) -> str | None:
    """Why an index no longer matches the sources (None when it does)."""
    if index.get("requested_size") != (list(size) if size else None):
        return f"built for size {index.get('requested_size')}, asked for {size}"
    old_ids = [r["id"] for r in index["frames"]]
    new_ids = [r["id"] for r in records]
    if old_ids != new_ids:
        added = sorted(set(new_ids) - set(old_ids))
        removed = sorted(set(old_ids) - set(new_ids))
        return f"frames added {format_paths(added, 3) or 'none'}, removed {format_paths(removed, 3) or 'none'}"
    changed = [new["id"] for old, new in zip(index["frames"], records, strict=True) if old != new]
    if changed:
        return f"{len(changed)} source(s) changed since the build, e.g. {format_paths(changed, 3)}"
    return None


@dataclass(frozen=True)
class _Job:
    """One entry to build: the split's frames, their source records and how to decode them."""

    split: str
    frames: list  # cityseg.data.frames.Frame, in index order
    records: list[dict[str, Any]]
    size: tuple[int, int] | None
    label_source: str
    workers: int | None
    progress: bool


def _build_entry(job: _Job, final: Path, old: dict[str, Any] | None) -> tuple[int, int]:
    """Write a whole entry into `.tmp-<name>` and swap it into place; returns (decoded, reused)."""
    tmp = final.parent / f".tmp-{final.name}"
    if tmp.exists():
        TRAINING_CACHE.remove_entry(tmp)  # left by a killed build: never used, start again
    tmp.mkdir()
    try:
        decoded, reused = _fill_entry(job, tmp, final, old)
    except Exception:
        TRAINING_CACHE.remove_entry(tmp)  # a bad frame or a full disk: nothing half-built stays behind
        raise
    _crash_point("before-swap")
    _swap_into_place(tmp, final)
    return decoded, reused


def _fill_entry(job: _Job, tmp: Path, final: Path, old: dict[str, Any] | None) -> tuple[int, int]:
    """Write arrays, index and (last) the complete flag into the temp folder; returns (decoded, reused)."""
    records, frames = job.records, job.frames
    height, width = _stored_shape(frames[0].image, job.size)
    n = len(records)
    _check_disk_space(tmp, n * height * width * 4)
    images = np.lib.format.open_memmap(tmp / IMAGES_FILE, mode="w+", dtype=np.uint8, shape=(n, height, width, 3))
    labels = np.lib.format.open_memmap(tmp / LABELS_FILE, mode="w+", dtype=np.uint8, shape=(n, height, width))
    reusable = _reusable_rows(old, records, (height, width))
    if reusable:
        old_images = np.load(final / IMAGES_FILE, mmap_mode="r")
        old_labels = np.load(final / LABELS_FILE, mmap_mode="r")
        for row, old_row in reusable.items():
            images[row] = old_images[old_row]
            labels[row] = old_labels[old_row]
        del old_images, old_labels
    del images, labels  # unmapped here; the decoders map the files themselves
    todo = [(row, str(frames[row].image), str(frames[row].label)) for row in range(n) if row not in reusable]
    _decode_into(job, tmp, todo, (height, width))
    index = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "split": job.split,
        "label_source": job.label_source,
        "requested_size": list(job.size) if job.size else None,
        "shape": [n, height, width],
        "frames": records,
    }
    _write_synced(tmp / INDEX_FILE, json.dumps(index, indent=1, sort_keys=True).encode() + b"\n")
    _crash_point("before-complete")
    _write_synced(tmp / COMPLETE_FILE, b"complete\n")  # last: its presence means every byte above is on disk
    _fsync_dir(tmp)
    return len(todo), len(reusable)


def _stored_shape(first_image: Path, size: tuple[int, int] | None) -> tuple[int, int]:
    """(H, W) of every stored frame: the requested size, else the first image's (from its header only)."""
    if size is not None:
        return size[1], size[0]
    from PIL import Image

    with Image.open(first_image) as image:
        width, height = image.size
    return height, width


def _swap_into_place(tmp: Path, final: Path) -> None:
    """Replace `final` by the complete `tmp`; a kill in between is repaired by `_recover_interrupted_swap`."""
    previous = final.parent / f".old-{final.name}"
    if final.exists():
        os.rename(final, previous)  # a folder cannot be renamed over a non-empty one: two steps
        _crash_point("mid-swap")
    os.rename(tmp, final)
    _fsync_dir(final.parent)
    if previous.exists():
        TRAINING_CACHE.remove_entry(previous)


def _reusable_rows(old: dict[str, Any] | None, records, shape_hw) -> dict[int, int]:
    """Rows of the new entry whose sources are unchanged in the old one (new row -> old row)."""
    if old is None or tuple(old["shape"][1:]) != tuple(shape_hw):
        return {}
    old_rows = {r["id"]: (row, r) for row, r in enumerate(old["frames"])}
    return {row: old_rows[r["id"]][0] for row, r in enumerate(records) if old_rows.get(r["id"], (0, None))[1] == r}


# Per-process state of decode workers: the open memmaps (opened once, not per frame).
_WORKER: dict[str, Any] = {}


def _init_decoder(folder: str, size, shape_hw, label_source: str) -> None:
    """Open the temp entry's arrays in this process; one thread, since the pool already uses every core."""
    if multiprocessing.parent_process() is not None:  # a pool worker, not the one-worker path in this process
        die_with_parent()
    torch.set_num_threads(1)
    _WORKER.update(
        images=np.load(Path(folder) / IMAGES_FILE, mmap_mode="r+"),
        labels=np.load(Path(folder) / LABELS_FILE, mmap_mode="r+"),
        size=size,
        shape_hw=tuple(shape_hw),
        label_source=label_source,
    )


def _decode_one(task: tuple[int, str, str]) -> int:
    """Decode, check and resize one frame into its row; returns the row."""
    from cityseg.data.frames import check_same_size, read_image, read_train_ids

    row, image_path, label_path = task
    image = read_image(Path(image_path))  # (H, W, 3) uint8
    mask = read_train_ids(Path(label_path), label_source=_WORKER["label_source"])  # (H, W) uint8
    check_same_size(image, mask, image_path, label_path)  # before a resize would make any pair agree
    if _WORKER["size"] is not None:
        image, mask = resize_pair(image, mask, _WORKER["size"])
    if image.shape[:2] != _WORKER["shape_hw"] or mask.shape != image.shape[:2]:
        h, w = _WORKER["shape_hw"]
        raise UserError(
            f"{image_path} is {image.shape[1]}x{image.shape[0]} (label {mask.shape[1]}x{mask.shape[0]}) but the "
            f"cache stores {w}x{h}; frames of different sizes need a common --size WxH."
        )
    _WORKER["images"][row] = image
    _WORKER["labels"][row] = mask
    return row


def _decode_into(job: _Job, folder: Path, todo: list[tuple[int, str, str]], shape_hw: tuple[int, int]) -> None:
    """Fill the rows in `todo`, in worker processes when asked, then flush the arrays to disk."""
    workers = min(job.workers or os.cpu_count() or 1, max(1, len(todo)))
    init_args = (str(folder), job.size, shape_hw, job.label_source)
    bar = tqdm(total=len(todo), desc=f"cache {job.split}", unit="img", disable=not job.progress, dynamic_ncols=True)
    crash_at = max(1, len(todo) // 2)
    with bar:
        for done, _row in enumerate(_map_rows(todo, workers, init_args), start=1):
            bar.update()
            if done == crash_at:
                _crash_point("mid-decode")
    for name in (IMAGES_FILE, LABELS_FILE):
        with open(folder / name, "rb+") as handle:
            sync_to_disk(handle.fileno())


def _map_rows(todo, workers: int, init_args) -> Iterator[int]:
    """Run `_decode_one` over the tasks, in this process for one worker (no pool start-up cost)."""
    if workers <= 1:
        saved = torch.get_num_threads()
        _init_decoder(*init_args)
        try:
            yield from map(_decode_one, todo)
        finally:
            _WORKER.clear()  # drop the memmaps so the files are flushed and closed
            torch.set_num_threads(saved)
        return
    pool = ProcessPoolExecutor(workers, initializer=_init_decoder, initargs=init_args)
    try:
        yield from pool.map(_decode_one, todo, chunksize=4)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # after a bad frame, do not decode the rest


# ----------------------------------------------------------------------------------------------------------
# folder safety


def _recover_interrupted_swap(out: Path, name: str) -> None:
    """A kill between the two renames of a swap leaves only `.old-<name>`: put it back (it was complete)."""
    final, previous = out / name, out / f".old-{name}"
    if previous.exists():
        if final.exists():
            TRAINING_CACHE.remove_entry(previous)
        else:
            os.rename(previous, final)


def read_entry_index(entry: Path) -> dict[str, Any] | None:
    """The entry's index if it is complete and its arrays have the recorded shape, else None."""
    return TRAINING_CACHE.read_index(entry, _images_match_index)


def _images_match_index(entry: Path, index: dict[str, Any]) -> bool:
    n, h, w = index["shape"]
    images = np.load(entry / IMAGES_FILE, mmap_mode="r")
    labels = np.load(entry / LABELS_FILE, mmap_mode="r")
    return images.shape == (n, h, w, 3) and labels.shape == (n, h, w) and images.dtype == np.uint8


def _check_disk_space(out: Path, needed: int) -> None:
    """Fail before decoding for an hour rather than at the last frame."""
    free = free_bytes(out)
    if free < needed:
        raise UserError(
            f"the cache needs {needed / 1e9:.1f} GB but {out} has {free / 1e9:.1f} GB free; free some space, "
            "pass a smaller --size, or put the cache elsewhere with --out/--cache."
        )


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        sync_to_disk(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        sync_to_disk(fd)
    finally:
        os.close(fd)


def _crash_point(name: str) -> None:
    """Let the tests SIGKILL a real build at a chosen step (nothing happens unless the variable is set)."""
    if os.environ.get(_CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


# ----------------------------------------------------------------------------------------------------------
# reading
