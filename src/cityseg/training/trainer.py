"""One training run in one folder: data, model, optimizer, schedule, epochs, logs and checkpoints.

A run folder is the truth that every later tool reads:

    config.json   {"config": TrainConfig fields (machine defaults resolved: cityseg.training.runtime), "runtime" (what
                   ran: device, workers, amp dtype, compile, gpu_aug, cache), "git", "versions", "hardware",
                   "device", "data_root", "synthetic", "started", "world_size", "run_name", "n_train", "n_val",
                   "resumed"}
    log.jsonl     one row per finished epoch: epoch, lr, train_loss, val_loss, val_miou,
                  class_iou (19 floats, null = class absent), images_per_s, data_wait_share,
                  peak_memory_gb (null on CPU), seconds
    last.pt       state after the latest finished epoch (model, optimizer, scheduler, scaler, epoch,
                  rng, config, best_metric, best_epoch, num_classes, log_row)
    best.pt       the same for the selected epoch (fold val loss or mIoU; the last epoch without validation)
    events.out.tfevents.*   TensorBoard view of the same numbers (cityseg.training.tensorboard_log)

Every epoch ends with: last.pt written atomically, copied to best.pt if the epoch is the best so far,
then the log row appended with one write + fsync. A run killed at any moment is resumed from last.pt:
the log is cut back to the checkpoint's epoch (a torn last line dropped) and the checkpoint's own row
re-added if the kill came before the append, so each epoch ends up logged exactly once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import json
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from cityseg.data.device_augment import BatchAugment
from cityseg.data.sampling import EpochKeys, KeyedDataset
from cityseg.errors import UserError, name_the_file
from cityseg.labels import NUM_CLASSES
from cityseg.locks import hold_lock
from cityseg.training import runinfo
from cityseg.training.checkpoint import atomic_write_bytes, load_checkpoint, save_checkpoint
from cityseg.training.config import SIDE_MULTIPLE, TrainConfig, config_differences
from cityseg.training.dist import (
    DistInfo,
    ShardSampler,
    barrier,
    broadcast_buffers,
    held_by_main,
    init_distributed,
    is_distributed,
    is_main,
)
from cityseg.training.engine import StepContext, json_float, train_one_epoch, validate
from cityseg.training.losses import build_loss
from cityseg.training.model import check_encoder_weights
from cityseg.training.runtime import (
    needs_grad_scaler,
    resolve_and_report,
    runtime_record,
    step_context,
    uses_cache,
)
from cityseg.training.tensorboard_log import TensorBoardLog

CONFIG_FILE = "config.json"
LOG_FILE = "log.jsonl"
LAST_FILE = "last.pt"
BEST_FILE = "best.pt"
RUN_FILES = (CONFIG_FILE, LOG_FILE, LAST_FILE, BEST_FILE)
RUN_LOCK = ".lock-run"  # held by the one process training the folder (cityseg.locks)

EpochCallback = Callable[[str, dict], None]


@dataclass(frozen=True)
class RunResult:
    """What a finished run left in its folder."""

    run_dir: Path
    rows: list[dict]
    best_epoch: int | None
    best_metric: float


# ----------------------------------------------------------------------------------------------------------
# The log
# ----------------------------------------------------------------------------------------------------------


def load_log(run_dir: Path) -> list[dict]:
    """The epoch rows of a run folder (empty if none); a torn last line from a killed run is skipped."""
    path = Path(run_dir) / LOG_FILE
    if not path.is_file():
        return []
    lines = path.read_bytes().split(b"\n")
    rows = []
    for number, line in enumerate(lines[:-1], start=1):  # the piece after the last newline is torn or empty
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UserError(
                f"line {number} of {path} is not JSON; the log was edited or damaged. Restore it, or start the run "
                "again in a new --out folder."
            ) from None
    return rows


def append_log_row(run_dir: Path, row: dict) -> None:
    """Append one row with a single write and fsync, so a kill leaves at most a torn last line."""
    data = (json.dumps(row) + "\n").encode()
    path = Path(run_dir) / LOG_FILE
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if os.write(fd, data) != len(data):  # a short write: the disk filled up; the torn line is dropped on resume
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        os.fsync(fd)
    except OSError as exc:  # os.write's error names no file
        named = name_the_file(exc, path)
        if named is exc:
            raise
        raise named from exc
    finally:
        os.close(fd)


def _rewrite_log(run_dir: Path, rows: list[dict]) -> None:
    text = "".join(json.dumps(row) + "\n" for row in rows)
    atomic_write_bytes(Path(run_dir) / LOG_FILE, lambda handle: handle.write(text.encode()))


def selection_metric(row: dict, select: str) -> float | None:
    """The number a run is selected by: val loss (lower is better) or val mIoU (higher is better; also what
    "last", which selects nothing, records)."""
    return row.get("val_loss") if select == "loss" else row.get("val_miou")


def is_better(value: float | None, best: float | None, select: str) -> bool:
    """Strict improvement, so ties keep the earlier epoch; a missing value never wins over a real one.
    With select "last" every new epoch wins: best.pt is the latest epoch."""
    if select == "last":
        return True
    if value is None or not np.isfinite(value):
        return False
    if best is None or not np.isfinite(best):
        return True
    return value < best if select == "loss" else value > best


def best_row(rows: Sequence[dict], select: str) -> dict | None:
    """The row the trainer saved as best.pt: first strict best by `select`, else (no validation, or "last") the last."""
    best = None
    for row in rows:
        if is_better(selection_metric(row, select), None if best is None else selection_metric(best, select), select):
            best = row
    return best if best is not None else (rows[-1] if rows else None)


def is_finished(run_dir: Path, epochs: int) -> bool:
    """A run is finished when its log has a row for every epoch and best.pt exists."""
    run_dir = Path(run_dir)
    logged = {row.get("epoch") for row in load_log(run_dir)}
    return (run_dir / BEST_FILE).is_file() and set(range(1, epochs + 1)) <= logged


# ----------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------


def build_datasets(
    config: TrainConfig, root: Path, train_ids: Sequence[str], val_ids: Sequence[str] | None = None
) -> tuple[Dataset, Dataset | None]:
    """The one place training and validation datasets are built: from PNGs, or from the cache with --cache.

    Validation images stay at full resolution: `engine.validate` resizes them on the device to
    `config.size` and scores at the labels' resolution.
    """
    from cityseg.data.frames import CityscapesDataset, list_frames
    from cityseg.data.transforms import build_transform

    if not train_ids:
        raise UserError("no training images were given (an empty fold?); check the folds file or the dataset.")
    frames = {frame.id: frame for frame in list_frames(root, "train", label_source=config.labels)}
    train_frames, val_frames = _frames_for(frames, train_ids, root), _frames_for(frames, val_ids or [], root)
    check_input_size(config, train_frames[0].image)
    train_transform = build_transform(
        train=True,
        aug=config.aug,
        size=config.size,
        crop=config.crop,
        scale_range=config.scale_range,
        crop_max_class_ratio=config.crop_max_class_ratio,
        pixel_ops=not config.gpu_aug,  # with --gpu-aug, step_context's augment runs them on the device
    )
    if uses_cache(config):
        return _cached_datasets(config, root, train_frames, val_frames, train_transform)
    train_set = CityscapesDataset(train_frames, transform=train_transform, label_source=config.labels)
    val_set = CityscapesDataset(val_frames, label_source=config.labels) if val_frames else None
    return train_set, val_set


def _cached_datasets(config: TrainConfig, root: Path, train_frames: Sequence, val_frames: Sequence,
                     train_transform) -> tuple[Dataset, Dataset | None]:
    """Datasets over `cityseg cache` memmaps (built or refreshed here first; DDP ranks wait on a file lock).

    Validation reads the cache only when it holds full-resolution frames; a downsized entry cannot give
    the labels' resolution that validation scores at, so it reads the PNGs then.
    """
    from cityseg.data.cache import CachedDataset, ensure_cache, training_cache_size
    from cityseg.data.frames import CityscapesDataset

    size = training_cache_size(config.size, config.aug, config.scale_range)
    entry = ensure_cache(root, "train", size, Path(config.cache), config.labels, config.workers or None, is_main())
    train_set = CachedDataset(entry.path.parent, "train", [f.id for f in train_frames], train_transform, size,
                              config.labels)
    if not val_frames:
        return train_set, None
    if size is None:
        return train_set, CachedDataset(entry.path.parent, "train", [f.id for f in val_frames], None, None, config.labels)
    return train_set, CityscapesDataset(val_frames, label_source=config.labels)


def _frames_for(frames: dict, ids: Sequence[str], root: Path) -> list:
    missing = [i for i in ids if i not in frames]
    if missing:
        raise UserError(
            f"{len(missing)} image id(s) of the folds are not in {Path(root) / 'leftImg8bit' / 'train'}, e.g. "
            f"{missing[0]}; the folds file was made for another dataset. Use its dataset, or a new --out folder."
        )
    return [frames[i] for i in ids]


def check_input_size(config: TrainConfig, image_path: Path) -> None:
    """Fail before training if the crop exceeds the (resized) image or the model would see a bad size."""
    with Image.open(image_path) as image:
        width, height = image.size
    base_w, base_h = config.size or (width, height)
    where = f"the resized image ({base_w}x{base_h}, --size)" if config.size else f"the images ({width}x{height}, e.g. {image_path})"
    if config.crop is not None and (config.crop[0] > base_w or config.crop[1] > base_h):
        raise UserError(
            f"crop {config.crop[0]}x{config.crop[1]} (--crop) is larger than {where}; use a crop that fits, "
            "e.g. --crop " + f"{min(config.crop[0], base_w)}x{min(config.crop[1], base_h)}, or a larger --size."
        )
    if config.crop is None and (base_w % SIDE_MULTIPLE or base_h % SIDE_MULTIPLE):
        raise UserError(
            f"the U-Net needs input sides divisible by {SIDE_MULTIPLE}, but {where} is not; pass --size or --crop "
            f"with such sides, e.g. --size {base_w // SIDE_MULTIPLE * SIDE_MULTIPLE}x{base_h // SIDE_MULTIPLE * SIDE_MULTIPLE}."
        )


def build_loaders(
    config: TrainConfig, train_set: Dataset, val_set: Dataset | None, info: DistInfo
) -> tuple[DataLoader, DataLoader | None, EpochKeys]:
    """Training loader (shuffled; sharded under DDP) and validation loader (each image once over all ranks).

    The training loader reads `EpochKeys` (call its `set_epoch` before each epoch) through a
    `KeyedDataset`: its order and every sample's augmentation depend only on (seed, epoch, index), so the
    batches are the same with any worker count and after a resume (`cityseg.data.sampling`).
    """
    from cityseg.data.frames import worker_init

    workers = config.workers
    if info.world_size > 1:  # N processes share the machine's cores
        from cityseg.system import default_workers

        workers = min(workers, max(1, default_workers() // info.world_size))
    common: dict[str, Any] = {"num_workers": workers, "pin_memory": info.device.type == "cuda"}
    if workers > 0:
        common.update(persistent_workers=True, prefetch_factor=4, worker_init_fn=worker_init)
    keys = EpochKeys(len(train_set), config.seed, rank=info.rank, world_size=info.world_size)
    train_loader = DataLoader(
        KeyedDataset(train_set, config.seed),
        batch_size=config.batch_size,
        sampler=keys,
        drop_last=len(keys) >= config.batch_size,  # a 1-image last batch would get a full step's weight
        # The loader draws its workers' base seed from this generator, not from the global one, whose
        # stream then does not depend on the worker count (each sample seeds itself).
        generator=torch.Generator().manual_seed(config.seed),
        **common,
    )
    val_loader = None
    if val_set is not None:
        val_loader = DataLoader(val_set, batch_size=config.batch_size, sampler=ShardSampler(len(val_set)),
                                generator=torch.Generator().manual_seed(config.seed), **common)
    return train_loader, val_loader, keys


# ----------------------------------------------------------------------------------------------------------
# Model, optimizer, schedule
# ----------------------------------------------------------------------------------------------------------


def parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """Decoder and encoder, each split into decayed weights and never-decayed 1-D parameters.

    Group 0 is the decoder's decayed weights at `lr` (the lr the log reports); the encoder runs at
    lr * encoder_lr_mult with weight_decay * encoder_weight_decay_mult (SwiftNet's fine-tuning split).
    Every 1-D parameter (BatchNorm weights, all biases) gets weight decay 0, as in timm and
    mmsegmentation: shrinking a norm's scale or a bias toward 0 regularises nothing.
    """
    encoder_ids = {id(p) for p in model.encoder.parameters()}
    decoder = [p for p in model.parameters() if id(p) not in encoder_ids]
    encoder = [p for p in model.parameters() if id(p) in encoder_ids]
    encoder_lr, encoder_decay = config.lr * config.encoder_lr_mult, config.weight_decay * config.encoder_weight_decay_mult
    groups = []
    for name, params, lr, decay in (("decoder", decoder, config.lr, config.weight_decay),
                                    ("encoder", encoder, encoder_lr, encoder_decay)):
        groups.append({"params": [p for p in params if p.ndim > 1], "lr": lr, "weight_decay": decay, "name": name})
        groups.append({"params": [p for p in params if p.ndim <= 1], "lr": lr, "weight_decay": 0.0,
                       "name": f"{name}_no_decay"})
    return [group for group in groups if group["params"]]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimizer over `parameter_groups` (Adam's and SGD's decay is coupled L2, AdamW's decoupled)."""
    groups = parameter_groups(model, config)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, betas=config.betas)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str, min_ratio: float = 0.0,
              power: float = 0.9) -> float:
    """Multiplier of the base lr at optimizer step `step` (0-based): linear warm-up, then constant/cosine/poly."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    decay = 0.5 * (1.0 + np.cos(np.pi * progress)) if schedule == "cosine" else (1.0 - progress) ** power
    return float(min_ratio + (1.0 - min_ratio) * decay)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    """A per-iteration LambdaLR over `config.schedule_length` epochs, which a shorter run stops partway through
    (its state holds only the step count, so it resumes)."""
    total = config.schedule_length * steps_per_epoch
    warmup = round(config.warmup_epochs * steps_per_epoch)
    min_ratio = config.min_lr / config.lr

    def factor(step: int) -> float:
        return lr_factor(step, total, warmup, config.schedule, min_ratio, config.poly_power)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ----------------------------------------------------------------------------------------------------------
# Random state (plain lists and tensors, so checkpoints load with weights_only=True)
# ----------------------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every generator the run draws from, as plain types."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` saved."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# ----------------------------------------------------------------------------------------------------------
# The run folder
# ----------------------------------------------------------------------------------------------------------


def _check_run_dir(run_dir: Path, config: TrainConfig, resume: bool) -> dict | None:
    """Refuse to overwrite a run; on resume, load last.pt and insist on the same experiment config."""
    present = [name for name in RUN_FILES if (run_dir / name).exists()]
    if present and not resume:
        raise UserError(
            f"{run_dir} already holds a run ({', '.join(present)}); continue it with --resume, or pass another "
            "--out folder. Nothing was overwritten."
        )
    if not present:
        return None
    state = load_checkpoint(run_dir / LAST_FILE) if (run_dir / LAST_FILE).is_file() else None
    saved = state["config"] if state is not None else _read_config_json(run_dir).get("config")
    if saved is not None:
        changed = config_differences(TrainConfig.from_dict(saved), config)
        if changed:
            raise UserError(
                f"--resume would continue {run_dir} with different settings ({'; '.join(changed)}). Resume with "
                "the run's own settings (see its config.json), or start a new run in another --out folder."
            )
    return state


def _read_config_json(run_dir: Path) -> dict:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path} is not valid JSON; restore it or start the run in a new --out folder.") from None


def _write_json(path: Path, data: dict) -> None:
    text = json.dumps(data, indent=1) + "\n"
    atomic_write_bytes(path, lambda handle: handle.write(text.encode()))


def _copy_atomic(source: Path, target: Path) -> None:
    """Make `target` a copy of `source`, never half-written: a hard link renamed into place.

    last.pt is always replaced by a new file (never rewritten in place), so the link keeps this
    epoch's bytes as best.pt for free; filesystems without hard links get a real copy.
    """
    if target.exists() and os.path.samefile(source, target):
        return  # already the same file; renaming a link onto it would do nothing and leave the link behind
    temporary = target.with_name(f".{target.name}.{os.getpid()}.link.tmp")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:
        with open(source, "rb") as src:
            atomic_write_bytes(target, lambda handle: shutil.copyfileobj(src, handle, 1 << 24))
        return
    os.replace(temporary, target)


def _repair_after_kill(run_dir: Path, state: dict | None) -> None:
    """Make the log and best.pt agree with last.pt after an interrupted run (rank 0 only)."""
    for name in RUN_FILES:  # temp files of writes a kill cut short (atomic_write_bytes / _copy_atomic names)
        for leftover in run_dir.glob(f".{name}.*.tmp"):
            leftover.unlink(missing_ok=True)
    done = state["epoch"] if state is not None else 0
    rows = {row["epoch"]: row for row in load_log(run_dir) if isinstance(row.get("epoch"), int) and row["epoch"] <= done}
    if state is not None and done not in rows and state.get("log_row") is not None:
        rows[done] = state["log_row"]  # killed after last.pt was saved but before its row was appended
    _rewrite_log(run_dir, [rows[e] for e in sorted(rows)])
    if state is not None and state.get("best_epoch") == done:
        _copy_atomic(run_dir / LAST_FILE, run_dir / BEST_FILE)  # killed between saving last.pt and best.pt


def _write_config_json(run_dir: Path, config: TrainConfig, info: DistInfo, root: Path, run_name: str,
                       n_train: int, n_val: int, resumed: bool) -> None:
    previous = _read_config_json(run_dir) if resumed else {}
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    record = {
        "config": config.to_dict(),
        "runtime": runtime_record(config, info.device, info.world_size),
        "run_name": run_name,
        **runinfo.collect(info.device, root, world_size=info.world_size),
        "device": str(info.device),
        "n_train": n_train,
        "n_val": n_val,
        "resumed": [*previous.get("resumed", []), now] if resumed else [],
    }
    if previous.get("started"):
        record["started"] = previous["started"]
    _write_json(run_dir / CONFIG_FILE, record)


# ----------------------------------------------------------------------------------------------------------
# One run
# ----------------------------------------------------------------------------------------------------------


def train_run(
    root: Path,
    run_dir: Path,
    config: TrainConfig,
    train_ids: Sequence[str],
    val_ids: Sequence[str] | None = None,
    resume: bool = False,
    on_epoch: EpochCallback | None = None,
    run_name: str | None = None,
    progress: bool = True,
) -> RunResult:
    """Train one model on `train_ids`, validating on `val_ids` every epoch (none: best.pt = last epoch).

    The run folder is locked while this runs: a second process training it stops at once, naming this one.
    """
    root, run_dir = Path(root), Path(run_dir)
    run_name = run_name or run_dir.name
    info = init_distributed(config.device)
    config = resolve_and_report(config, root, len(train_ids), info.world_size, info.device, always=False)
    if not (resume and (run_dir / LAST_FILE).is_file()):
        check_encoder_weights(config.encoder_weights)  # a missing download or file fails before anything is written
    if is_main():
        make_run_folder(run_dir)
    barrier()
    with held_by_main(lambda: lock_run_folder(run_dir)):
        return _train_locked(root, run_dir, run_name, config, info, train_ids, val_ids, resume, on_epoch, progress)


def make_run_folder(folder: Path) -> None:
    """Create a run folder (and its parents); a file in its place is the user's, not ours to replace."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {folder} is a file; pass a folder for the run (it is created if missing).")
    folder.mkdir(parents=True, exist_ok=True)


def lock_run_folder(run_dir: Path):
    """The lock one trainer of `run_dir` holds (see cityseg.locks); a second one is refused before it writes."""
    return hold_lock(run_dir / RUN_LOCK, f"run folder {run_dir}",
                     "two processes must not train one run folder. Wait for that one to finish (a stopped run "
                     "continues with --resume), or pass another --out folder. Nothing was written.")


def _train_locked(root: Path, run_dir: Path, run_name: str, config: TrainConfig, info: DistInfo,
                  train_ids: Sequence[str], val_ids: Sequence[str] | None, resume: bool,
                  on_epoch: EpochCallback | None, progress: bool) -> RunResult:
    state = _check_run_dir(run_dir, config, resume)  # every rank checks before rank 0 writes anything
    barrier()
    if is_main() and resume:
        _repair_after_kill(run_dir, state)
    barrier()
    done = state["epoch"] if state is not None else 0
    if done >= config.epochs and is_finished(run_dir, config.epochs):
        return RunResult(run_dir, load_log(run_dir), state.get("best_epoch"), float(state["best_metric"]))

    train_set, val_set = build_datasets(config, root, train_ids, val_ids)
    if is_main():
        _write_config_json(run_dir, config, info, root, run_name, len(train_set), len(val_set or []), resumed=state is not None)
    try:
        return _train_epochs(run_dir, run_name, config, info, train_set, val_set, state, on_epoch, progress)
    except torch.cuda.OutOfMemoryError:
        raise UserError(
            f"the GPU ran out of memory training {run_name} (batch size {config.batch_size}, crop "
            f"{_size_text(config.crop)}, size {_size_text(config.size)}). Lower --batch-size, use a smaller --crop, "
            f"or train at a lower resolution with --size (e.g. 1024x512); --amp (mixed precision) also saves memory "
            f"and may be added on --resume, which continues from the last finished epoch in {run_dir}."
        ) from None


def _size_text(size: tuple[int, int] | None) -> str:
    return "full resolution" if size is None else f"{size[0]}x{size[1]}"


@dataclass
class _Training:
    """Everything one run holds while it trains; `run_epoch` is the body of the epoch loop."""

    run_dir: Path
    run_name: str
    config: TrainConfig
    core: nn.Module  # the bare network: what checkpoints store
    model: nn.Module  # what runs: the network, maybe wrapped in DDP and torch.compile
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    context: StepContext
    train_loader: DataLoader
    val_loader: DataLoader | None
    sampler: EpochKeys
    board: TensorBoardLog
    best_metric: float = float("nan")
    best_epoch: int | None = None
    saved_epoch: int = 0

    def run_epoch(self, epoch: int, progress: bool, on_epoch: EpochCallback | None) -> None:
        """Train, validate, then save last.pt, best.pt (if improved) and the log row, in that order."""
        self.sampler.set_epoch(epoch)  # the shuffle and every sample's draws follow (seed, epoch)
        if isinstance(self.context.augment, BatchAugment):
            self.context.augment.start_epoch(epoch)  # --gpu-aug draws follow (seed, epoch, step, rank)
        started = time.perf_counter()
        stats = train_one_epoch(self.model, self.train_loader, self.criterion, self.optimizer, self.scheduler,
                                self.scaler, self.context, epoch, progress, on_steps=self.board.step_writer(epoch))
        val = None
        if self.val_loader is not None:
            broadcast_buffers(self.core)  # validate exactly the model rank 0 saves
            # The bare network: compiling would build a second graph (eval mode, full-resolution shapes) per run.
            val = validate(self.core, self.val_loader, self.context, size=self.config.size, progress=progress)
        row = _log_row(epoch, stats, val, time.perf_counter() - started)
        metric = selection_metric(row, self.config.select) if val is not None else None
        improved = val is None or self.best_epoch is None or is_better(metric, self.best_metric, self.config.select)
        if improved:
            self.best_metric, self.best_epoch = (float("nan") if metric is None else float(metric)), epoch
        if is_main():
            self.board.log_epoch(epoch, row, self.core, self.context, self.config.size)  # flushed before last.pt
            with _disk_full_is_a_user_error(self.run_dir, epoch, self.saved_epoch):
                save_checkpoint(self.run_dir / LAST_FILE, self.checkpoint(epoch, row))
                self.saved_epoch = epoch
                if improved:
                    _copy_atomic(self.run_dir / LAST_FILE, self.run_dir / BEST_FILE)
                append_log_row(self.run_dir, row)
            if progress:
                marked = improved and val is not None and self.config.select != "last"
                tqdm.write(_summary_line(self.run_name, self.config.epochs, row, marked))
            if on_epoch is not None:
                on_epoch(self.run_name, row)
        barrier()

    def checkpoint(self, epoch: int, row: dict) -> dict[str, Any]:
        """The state a run resumes from; tensors and plain types only."""
        return {
            "model": self.core.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": epoch,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "rng": rng_state(),
            "config": self.config.to_dict(),
            "num_classes": NUM_CLASSES,
            "log_row": row,
        }

    def restore(self, state: dict, rank: int) -> None:
        """Continue where last.pt left off: same optimizer moments, schedule step and random streams."""
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except ValueError:  # another number or size of parameter groups
            raise UserError(
                f"{self.run_dir / LAST_FILE} holds optimizer state for other parameter groups: the run was started "
                "by an older cityseg (before norm weights and biases got their own groups without weight decay). "
                "Finish it with that version, or start it again in a new --out folder."
            ) from None
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.best_metric, self.best_epoch = float(state["best_metric"]), state.get("best_epoch")
        self.saved_epoch = state["epoch"]
        if rank == 0:
            set_rng_state(state["rng"])
        else:
            seed_everything(self.config.seed + rank + 1000 * state["epoch"])  # only rank 0's streams are saved


@contextlib.contextmanager
def _disk_full_is_a_user_error(run_dir: Path, epoch: int, saved_epoch: int) -> Iterator[None]:
    """A full disk at the end of an epoch: say which file, and that --resume continues from what is intact."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = Path(exc.filename).name if exc.filename else "the run's files"
        kept = (f"the files of epoch {saved_epoch} are intact" if saved_epoch
                else "nothing of this run was saved yet, so it starts again")
        raise UserError(
            f"the disk holding {run_dir} is full ({exc.strerror}): {where} of epoch {epoch} could not be written "
            f"to {exc.filename or run_dir}. Free some space (a checkpoint needs a few hundred MB), then rerun with "
            f"--resume: {kept}."
        ) from None


def _setup(run_dir: Path, run_name: str, config: TrainConfig, info: DistInfo, train_set: Dataset,
           val_set: Dataset | None, state: dict | None) -> _Training:
    """Build loaders, model (DDP/SyncBN/compile as configured), optimizer, schedule and loss."""
    from cityseg.training.compiling import compile_with_fallback
    from cityseg.training.model import build_model
    from cityseg.training.runtime import note_compile_fallback

    device = info.device
    seed_everything(config.seed + info.rank)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
    train_loader, val_loader, sampler = build_loaders(config, train_set, val_set, info)
    context = step_context(config, device, info.rank)
    # A resumed run loads its weights below, so it needs no download.
    core = build_model(encoder_weights=None if state is not None else config.encoder_weights)
    if config.sync_bn and info.world_size > 1 and device.type == "cuda":
        core = nn.SyncBatchNorm.convert_sync_batchnorm(core)
    if state is not None:
        core.load_state_dict(state["model"])
    core.to(device, memory_format=torch.channels_last if context.channels_last else torch.preserve_format)
    model: nn.Module = core
    if is_distributed():  # also a one-process torchrun job: the multi-GPU path on one GPU
        model = nn.parallel.DistributedDataParallel(core, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        model = compile_with_fallback(model, lambda reason: note_compile_fallback(run_dir, reason) if is_main() else None)
    optimizer = build_optimizer(core, config)
    training = _Training(
        run_dir=run_dir,
        run_name=run_name,
        config=config,
        core=core,
        model=model,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, config, len(train_loader)),
        scaler=torch.amp.GradScaler(device.type, enabled=needs_grad_scaler(context)),
        criterion=build_loss(config.loss, config.ohem_thresh, config.ohem_min_kept),
        context=context,
        train_loader=train_loader,
        val_loader=val_loader,
        sampler=sampler,
        board=TensorBoardLog(run_dir if is_main() else None, len(train_loader), config.epochs,
                             done_epochs=state["epoch"] if state is not None else 0, val_set=val_set),
    )
    if state is not None:
        training.restore(state, info.rank)
        state.clear()  # the loaded tensors (hundreds of MB) now live in the model and optimizer
    return training


def _train_epochs(run_dir: Path, run_name: str, config: TrainConfig, info: DistInfo, train_set: Dataset,
                  val_set: Dataset | None, state: dict | None, on_epoch: EpochCallback | None,
                  progress: bool) -> RunResult:
    resumed_from = state["epoch"] if state is not None else 0  # _setup empties `state`
    training = None
    try:
        training = _setup(run_dir, run_name, config, info, train_set, val_set, state)
        for epoch in range(training.saved_epoch + 1, config.epochs + 1):
            training.run_epoch(epoch, progress, on_epoch)
    except KeyboardInterrupt:
        if is_main():
            saved_epoch = training.saved_epoch if training is not None else resumed_from
            if saved_epoch:
                said = f"{run_dir / LAST_FILE} holds epoch {saved_epoch} of {run_name}; continue with --resume."
            else:
                said = (f"{run_name} stopped before its first epoch ended, so no checkpoint was saved in {run_dir}; "
                        "--resume starts it again from epoch 1.")
            tqdm.write(f"interrupted: {said}", file=sys.stderr)
        raise
    finally:
        if training is not None:
            training.board.close()
    return RunResult(run_dir, load_log(run_dir), training.best_epoch, training.best_metric)


def _log_row(epoch: int, stats, val, seconds: float) -> dict:
    return {
        "epoch": epoch,
        "lr": stats.lr,
        "train_loss": json_float(stats.loss),
        "val_loss": json_float(val.loss) if val is not None else None,
        "val_miou": json_float(val.miou) if val is not None else None,
        "class_iou": [json_float(v) for v in val.class_iou] if val is not None else None,
        "images_per_s": json_float(stats.images_per_s),
        "data_wait_share": json_float(round(stats.data_wait_share, 4)),
        "peak_memory_gb": None if stats.peak_memory_bytes is None else round(stats.peak_memory_bytes / 2**30, 3),
        "seconds": round(seconds, 3),
    }


def _summary_line(run_name: str, epochs: int, row: dict, improved: bool) -> str:
    def show(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    miou = None if row["val_miou"] is None else 100 * row["val_miou"]
    wait = None if row.get("data_wait_share") is None else 100 * row["data_wait_share"]
    return (
        f"{run_name} epoch {row['epoch']}/{epochs}  lr {row['lr']:.2e}  train_loss {show(row['train_loss'], '.4f')}  "
        f"val_loss {show(row['val_loss'], '.4f')}  mIoU {show(miou, '.2f')}  {show(row['images_per_s'], '.1f')} img/s  "
        f"data wait {show(wait, '.0f')}%  {row['seconds']:.0f}s" + ("  *best" if improved else "")
    )


def finished_result(run_dir: Path, config: TrainConfig) -> RunResult:
    """Result of an already finished run, read from its log (cv --resume skips such runs)."""
    rows = load_log(run_dir)
    best = best_row(rows, config.select)
    metric = selection_metric(best, config.select) if best else None
    return RunResult(run_dir=Path(run_dir), rows=rows, best_epoch=best["epoch"] if best else None,
                     best_metric=float("nan") if metric is None else float(metric))


def read_run_config(run_dir: Path) -> TrainConfig | None:
    """The TrainConfig a run folder was trained with (None if it has no config.json yet)."""
    saved = _read_config_json(Path(run_dir)).get("config")
    return TrainConfig.from_dict(saved) if saved is not None else None


def with_epochs(config: TrainConfig, epochs: int) -> TrainConfig:
    """The same config and the same lr schedule, stopped after `epochs` (the full fit after cross-validation).

    The schedule keeps its length (the folds' epochs), so at every point of training the lr is the one the
    folds had there: the full fit's weights at its last epoch follow the trajectory that produced each
    fold's score at that epoch, not a cosine squeezed into fewer epochs.
    """
    return dataclasses.replace(config, epochs=epochs, schedule_epochs=config.schedule_length)


__all__ = [
    "EpochCallback", "RunResult", "append_log_row", "best_row", "build_datasets", "build_loaders", "build_optimizer",
    "needs_grad_scaler", "parameter_groups",
    "build_scheduler", "check_input_size", "finished_result", "is_better", "is_finished", "load_log",
    "lr_factor", "read_run_config", "rng_state", "selection_metric", "set_rng_state", "step_context", "train_run",
    "with_epochs",
]
