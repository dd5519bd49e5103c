"""The training cache: each split decoded once into uint8 memmaps at the training resolution, read as a Dataset.
DIR/<split>_<W>x<H|full>_<labels>/ holds images.npy, labels.npy, index.json and COMPLETE (written last); an entry is
built in `.tmp-<entry>/` and renamed into place, and a rebuild decodes only the changed frames."""

import json
import multiprocessing
import os
import shutil
import signal
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from cityseg.data.frames import check_label_source, check_same_size, list_frames, read_image, read_train_ids
from cityseg.data.labelpng import png_header
from cityseg.data.layout import DEFAULT_SCALE_RANGE
from cityseg.data.transforms import build_transform
from cityseg.errors import UserError, format_paths
from cityseg.fileio import atomic_write_text, claim_folder, source_fingerprint, sync_to_disk
from cityseg.locks import die_with_parent, wait_lock

MARKER, FORMAT, FORMAT_VERSION = "CITYSEG_CACHE.json", "cityseg-cache", 1
IMAGES_FILE, LABELS_FILE, INDEX_FILE, COMPLETE_FILE = "images.npy", "labels.npy", "index.json", "COMPLETE"
ENTRY_FILES = (IMAGES_FILE, LABELS_FILE, INDEX_FILE, COMPLETE_FILE)
_CRASH_ENV = "CITYSEG_CACHE_CRASH_AT"  # the kill tests make a build SIGKILL itself at the named step


@dataclass(frozen=True)
class CacheResult:
    """What `ensure_cache` found or did for one split."""

    split: str
    path: Path  # the entry folder
    frames: int
    decoded: int  # frames decoded from PNG in this call
    reused: int  # frames copied unchanged from a stale entry
    status: str  # "fresh" (nothing to do), "built" (new entry) or "rebuilt" (stale or partial entry replaced)


def default_cache_dir(root: Path) -> Path:
    """Beside ROOT, not inside it, so ROOT keeps the official layout and can stay read-only."""
    return Path(root).resolve().parent / "cityseg-cache"


def entry_name(split: str, size: tuple[int, int] | None, label_source: str = "trainIds") -> str:
    """Folder name of one entry: `train_1024x512_trainIds`, or `val_full_trainIds` at source size."""
    return f"{split}_{'full' if size is None else f'{size[0]}x{size[1]}'}_{label_source}"


def training_cache_size(
    size: tuple[int, int] | None, aug: Sequence[str], scale_range: tuple[float, float] | None
) -> tuple[int, int] | None:
    """`size`, or full resolution when random scaling can enlarge past it (as sharp as from PNGs)."""
    if size is not None and "scale-crop" in aug and (scale_range or DEFAULT_SCALE_RANGE)[1] > 1.0:
        return None
    return size


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
    frames: Sequence | None = None,
) -> CacheResult:
    """A fresh entry for `split` (its `frames` as listed, else listed here), built or repaired first if needed."""
    root = Path(root)
    check_label_source(label_source)
    out = Path(out) if out is not None else default_cache_dir(root)
    _check_outside_dataset(out, root)
    frames = frames if frames is not None else list_frames(root, split, label_source)
    if not frames:
        raise UserError(f"split {split!r} of {root} has no frames to cache; check ROOT and --splits.")
    records = [_frame_record(frame, root) for frame in frames]
    stamp = {"format": FORMAT, "format_version": FORMAT_VERSION, "note": "written by `cityseg cache`; safe to delete"}
    fix = "pass an empty or new folder with --out/--cache, or leave it out to use the default beside ROOT."
    claim_folder(out, MARKER, stamp, "cityseg cache", fix)
    name = entry_name(split, size, label_source)
    final = out / name
    with wait_lock(out / f".lock-{name}", f"{final}, which another process is writing"):  # DDP ranks, two notebooks
        previous = out / f".old-{name}"  # a kill between the two renames of a swap: put the complete one back
        if previous.exists() and final.exists():
            _remove_entry(previous)
        elif previous.exists():
            os.rename(previous, final)
        old = read_entry_index(final)
        if old is not None and _stale_reason(old, records, size) is None:
            return CacheResult(split, final, len(records), 0, 0, "fresh")
        status = "rebuilt" if final.exists() else "built"
        if final.exists():
            _check_only_ours(final)  # before decoding, not after an hour
        decoded, reused = _build_entry(final, old, split, frames, records, size, label_source, workers, progress)
    return CacheResult(split, final, len(records), decoded, reused, status)


def cache_state(
    root: Path,
    split: str,
    size: tuple[int, int] | None = None,
    out: Path | None = None,
    label_source: str = "trainIds",
    frames: Sequence | None = None,
) -> str:
    """Whether an entry is usable: "fresh", "missing", "partial" or "stale: <why>" (reads no pixels)."""
    final = (Path(out) if out is not None else default_cache_dir(root)) / entry_name(split, size, label_source)
    if not final.exists():
        return "missing"
    index = read_entry_index(final)
    if index is None:
        return "partial"
    frames = frames if frames is not None else list_frames(root, split, label_source)
    records = [_frame_record(f, Path(root)) for f in frames]
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
    old_ids, new_ids = [r["id"] for r in index["frames"]], [r["id"] for r in records]
    if old_ids != new_ids:
        added, removed = sorted(set(new_ids) - set(old_ids)), sorted(set(old_ids) - set(new_ids))
        return f"frames added {format_paths(added, 3) or 'none'}, removed {format_paths(removed, 3) or 'none'}"
    changed = [new["id"] for old, new in zip(index["frames"], records, strict=True) if old != new]
    if changed:
        return f"{len(changed)} source(s) changed since the build, e.g. {format_paths(changed, 3)}"
    return None


def _build_entry(final: Path, old, split, frames, records, size, label_source, workers, progress) -> tuple[int, int]:
    """Write a whole entry into `.tmp-<name>` and swap it into place; returns (decoded, reused)."""
    tmp = final.parent / f".tmp-{final.name}"
    if tmp.exists():
        _remove_entry(tmp)  # left by a killed build: never used, start again
    tmp.mkdir()
    try:
        width, height = size or png_header(frames[0].image)[1]
        n = len(records)
        needed, free = n * height * width * 4, shutil.disk_usage(tmp).free
        if free < needed:  # fail now rather than at the last frame
            raise UserError(
                f"the cache needs {needed / 1e9:.1f} GB but {tmp.parent} has {free / 1e9:.1f} GB free; free some "
                "space, pass a smaller --size, or put the cache elsewhere with --out/--cache."
            )
        images = np.lib.format.open_memmap(tmp / IMAGES_FILE, mode="w+", dtype=np.uint8, shape=(n, height, width, 3))
        labels = np.lib.format.open_memmap(tmp / LABELS_FILE, mode="w+", dtype=np.uint8, shape=(n, height, width))
        reusable: dict[int, int] = {}  # new row -> old row, for sources unchanged since `old` was built
        if old is not None and tuple(old["shape"][1:]) == (height, width):
            old_rows = {r["id"]: (row, r) for row, r in enumerate(old["frames"])}
            reusable = {
                row: old_rows[r["id"]][0] for row, r in enumerate(records) if old_rows.get(r["id"], (0, None))[1] == r
            }
        if reusable:
            old_images, old_labels = (np.load(final / name, mmap_mode="r") for name in (IMAGES_FILE, LABELS_FILE))
            for row, old_row in reusable.items():
                images[row], labels[row] = old_images[old_row], old_labels[old_row]
            del old_images, old_labels
        del images, labels  # unmapped here; the decoders map the files themselves
        todo = [(row, str(frames[row].image), str(frames[row].label)) for row in range(n) if row not in reusable]
        _decode_into(tmp, todo, (str(tmp), size, (height, width), label_source), workers, split, progress)
        index = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "split": split,
            "label_source": label_source,
            "requested_size": list(size) if size else None,
            "shape": [n, height, width],
            "frames": records,
        }
        atomic_write_text(tmp / INDEX_FILE, json.dumps(index, indent=1, sort_keys=True) + "\n")
        _crash_point("before-complete")
        atomic_write_text(tmp / COMPLETE_FILE, "complete\n")  # last: its presence means every byte above is on disk
        _fsync_dir(tmp)
    except Exception:
        _remove_entry(tmp)  # a bad frame or a full disk: nothing half-built stays behind
        raise
    _crash_point("before-swap")
    previous = final.parent / f".old-{final.name}"
    if final.exists():
        os.rename(final, previous)  # a folder cannot be renamed over a non-empty one: two steps
        _crash_point("mid-swap")
    os.rename(tmp, final)
    _fsync_dir(final.parent)
    if previous.exists():
        _remove_entry(previous)
    return len(todo), len(reusable)


_WORKER: dict[str, Any] = {}  # per decoding process: the open memmaps (opened once, not per frame)


def _init_decoder(folder: str, size, shape_hw, label_source: str) -> None:
    """Open the temp entry's arrays in this process; one thread, since the pool already uses every core."""
    if multiprocessing.parent_process() is not None:  # a pool worker, not the one-worker path in this process
        die_with_parent()
    torch.set_num_threads(1)
    images, labels = (np.load(Path(folder) / name, mmap_mode="r+") for name in (IMAGES_FILE, LABELS_FILE))
    resize = build_transform(train=False, size=size) if size is not None else None  # as the PNG datasets resize
    _WORKER.update(images=images, labels=labels, resize=resize, shape_hw=tuple(shape_hw), label_source=label_source)


def _decode_one(task: tuple[int, str, str]) -> int:
    """Decode, check and resize one frame into its row; returns the row."""
    row, image_path, label_path = task
    image = read_image(Path(image_path))  # (H, W, 3) uint8
    mask = read_train_ids(Path(label_path), label_source=_WORKER["label_source"])  # (H, W) uint8
    check_same_size(image, mask, image_path, label_path)  # before a resize would make any pair agree
    if _WORKER["resize"] is not None:
        image_t, mask_t = _WORKER["resize"](image, mask)  # (3, H', W'), (H', W')
        image, mask = image_t.permute(1, 2, 0).numpy(), mask_t.numpy()
    if image.shape[:2] != _WORKER["shape_hw"]:
        h, w = _WORKER["shape_hw"]
        raise UserError(
            f"{image_path} is {image.shape[1]}x{image.shape[0]} but the cache stores {w}x{h}; frames of different "
            "sizes need a common --size WxH."
        )
    _WORKER["images"][row], _WORKER["labels"][row] = image, mask
    return row


def _decode_into(folder: Path, todo: list, init_args: tuple, workers: int | None, split: str, progress: bool) -> None:
    """Fill the rows in `todo` (in worker processes when more than one), then flush the arrays to disk."""
    workers = min(workers or os.cpu_count() or 1, max(1, len(todo)))
    with tqdm(total=len(todo), desc=f"cache {split}", unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for done, _row in enumerate(_map_rows(todo, workers, init_args), start=1):
            bar.update()
            if done == max(1, len(todo) // 2):
                _crash_point("mid-decode")
    for name in (IMAGES_FILE, LABELS_FILE):
        with open(folder / name, "rb+") as handle:
            sync_to_disk(handle.fileno())


def _map_rows(todo: list, workers: int, init_args: tuple) -> Iterator[int]:
    """`_decode_one` over the tasks, in this process for one worker (no pool start-up cost)."""
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


def _check_outside_dataset(out: Path, root: Path) -> None:
    """Keep cache files out of the official tree, where dataset walkers would find them."""
    out_r, root_r = Path(out).resolve(), Path(root).resolve()
    for sub in ("leftImg8bit", "gtFine", "gtCoarse"):
        if out_r == root_r / sub or (root_r / sub) in out_r.parents:
            raise UserError(
                f"cache folder {out} is inside the dataset's {sub}/ tree; pick a folder outside it, e.g. "
                f"{default_cache_dir(root)} (the default)."
            )


def _check_only_ours(path: Path) -> None:
    """Refuse to replace an entry folder holding files cityseg did not write (entry files, or their temp files)."""
    others = sorted(
        p.name
        for p in path.iterdir()
        if p.name not in ENTRY_FILES
        and not (p.name.endswith(".tmp") and any(p.name.startswith(f".{f}.") for f in ENTRY_FILES))
    )
    if others or not path.is_dir():
        raise UserError(
            f"cache entry {path} holds files cityseg did not write ({format_paths(others)}); move them away and "
            "rerun, cityseg deletes only its own files."
        )


def _remove_entry(path: Path) -> None:
    """Delete an entry folder cityseg wrote, file by known file (never a recursive delete)."""
    _check_only_ours(path)
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


def read_entry_index(entry: Path) -> dict[str, Any] | None:
    """The index of a COMPLETE entry whose format and array shapes match, else None (rebuilt)."""
    try:
        index = json.loads((entry / INDEX_FILE).read_text()) if (entry / COMPLETE_FILE).is_file() else None
        stamp = (index.get("format"), index.get("format_version")) if isinstance(index, dict) else None
        if stamp != (FORMAT, FORMAT_VERSION):
            return None
        n, h, w = index["shape"]
        images = np.load(entry / IMAGES_FILE, mmap_mode="r")
        labels = np.load(entry / LABELS_FILE, mmap_mode="r")
        ok = images.shape == (n, h, w, 3) and labels.shape == (n, h, w) and images.dtype == np.uint8
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    return index if ok else None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        sync_to_disk(fd)
    finally:
        os.close(fd)


def _crash_point(name: str) -> None:
    if os.environ.get(_CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


class CachedDataset(Dataset):
    """`CityscapesDataset`'s items from a cache entry; memmaps open lazily in each loader worker."""

    def __init__(
        self,
        cache_dir: Path,
        split: str,
        ids: Sequence[str] | None = None,
        transform: Callable[[np.ndarray, np.ndarray], tuple[torch.Tensor, torch.Tensor]] | None = None,
        size: tuple[int, int] | None = None,
        label_source: str = "trainIds",
    ) -> None:
        self.entry = Path(cache_dir) / entry_name(split, size, label_source)
        index = read_entry_index(self.entry)
        if index is None:
            raise UserError(
                f"no complete cache at {self.entry}; build it with `cityseg cache ROOT --out {cache_dir} --splits "
                f"{split}" + (f" --size {size[0]}x{size[1]}" if size else "") + f" --labels {label_source}`."
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
        self.transform = transform if transform is not None else build_transform(train=False)
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._arrays is None:  # copy-on-write: writable views (torch warns on read-only ones), disk untouched
            self._arrays = tuple(np.load(self.entry / name, mmap_mode="c") for name in (IMAGES_FILE, LABELS_FILE))
        images, labels = self._arrays
        row = self.rows[index]
        return self.transform(images[row], labels[row])  # (H, W, 3), (H, W) views: only touched pages are read

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}  # each worker maps the files itself
