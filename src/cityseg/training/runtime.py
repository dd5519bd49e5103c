"""The machine-dependent defaults of a training run: resolved once at its start, printed, saved as resolved.

A notebook user who changes nothing should get the fast path. TrainConfig leaves these to the machine:

    device    "auto": CUDA when a GPU is visible, else the CPU
    gpu_aug   None (auto): on CUDA when the recipe has colour augmentations (photometric, color-jitter,
              gaussian-blur). In the loader workers they cost CPU time per crop (photometric: ~5 ms per
              768x768) and left an H200 waiting for data (BENCHMARKS.md: data wait 66% from PNGs with the
              older, slower colour ops; 3% with the cache and the ops on the GPU)
    cache     "auto": on CUDA, the decoded-image cache (cityseg.data.cache) in ROOT/../cityseg-cache, or under the
              user's cache folder ($XDG_CACHE_HOME/cityseg, else ~/.cache/cityseg) when that is not writable,
              built on first use and shared by every fold and the full fit, if the disk has room for the
              entry (`cache_bytes` plus a margin); else the PNGs, with one line saying why
    compile   None (auto): on CUDA when the run is long enough to repay compiling (`COMPILE_MIN_MEGAPIXELS`);
              a failure to compile falls back to eager (cityseg.training.compiling)
    workers   one loader process per core, at most 8 (set when the config is made)
    amp       a recipe field; its dtype follows the GPU (bf16 where native, else fp16 with a GradScaler)

`resolve_runtime` returns the config with concrete values (what config.json and checkpoints record, so a
resumed run and `cityseg report` see what really ran) and the lines to print. A config still holding
auto values behaves like the CPU choices everywhere (no cache, colour ops in the workers, eager), so no
code path guesses; `run_cv` and `train_run` resolve before building anything. Under torchrun rank 0
decides and every rank takes its answer, so all ranks build the same datasets and graphs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cityseg.training.config import AUTO, TrainConfig
from cityseg.training.engine import StepContext

# torch.compile pays off when the time it saves exceeds the time it takes. Saving: the H200 rows of
# BENCHMARKS.md (bench/train_loop.py, strong recipe, batch 16 at 1024x512, bf16, fed from memory) ran
# 262.7 img/s eager and 352.8 img/s compiled, i.e. (1/262.7 - 1/352.8) s per 0.524 MP image = 1.85 ms per
# training megapixel. Cost: ~90 s per run to compile the U-Net's forward and backward graphs (a cold
# inductor compile on a 16-core host; scripts/gpu_check.sh measures it as the compiled warm-up's extra
# time). A run compiles by default from 90 / 1.85e-3 = ~48,600 training megapixels on: ~5,800 steps of 16
# crops at 1024x512; a `strong` fold (200 epochs of 2380 768x768 crops, ~280,000 MP) by far, a `seed`
# fold (10 epochs of 2380 full images, ~49,900 MP) just.
COMPILE_SECONDS = 90.0
COMPILE_SAVING_S_PER_MEGAPIXEL = 1.85e-3
COMPILE_MIN_MEGAPIXELS = COMPILE_SECONDS / COMPILE_SAVING_S_PER_MEGAPIXEL
# Free space a cache must leave on its disk: the checkpoints and logs of the run (hundreds of MB each) need it.
CACHE_MARGIN_BYTES = 2**30
CACHE_MARGIN_SHARE = 0.05
RUNTIME_KEY = "runtime"  # config.json's record of what ran


@dataclass(frozen=True)
class Resolution:
    """A config with every machine default made concrete, and what to tell the user about it."""

    config: TrainConfig
    device: torch.device
    reasons: dict[str, str] = field(default_factory=dict)  # field -> why the machine chose its value
    warnings: tuple[str, ...] = ()  # one line each (e.g. no room for the cache)

    @property
    def resolved_any(self) -> bool:
        """True when at least one field was left at auto (a run that set everything prints nothing)."""
        return bool(self.reasons)

    def lines(self) -> list[str]:
        """The summary line, then the warnings: printed once at the start of a run."""
        return [summary_line(self.config, self.device, self.reasons), *self.warnings]


def resolve_runtime(
    config: TrainConfig, root: Path, train_images: int, world_size: int = 1, device: torch.device | None = None
) -> Resolution:
    """Concrete values for the auto fields of `config`, for a run over `train_images` training frames of ROOT
    (per run: a fold's training part under `cityseg cv`), on `device` (default: what config.device names)."""
    from cityseg.training.model import resolve_device

    device = device if device is not None else resolve_device(config.device)
    cuda = device.type == "cuda"
    changes: dict[str, Any] = {}
    reasons: dict[str, str] = {}
    warnings: list[str] = []
    if config.device == "auto":
        changes["device"] = device.type
        reasons["device"] = "auto"
    if config.gpu_aug is None:
        colour = [name for name in config.aug if name in _colour_augmentations()]
        changes["gpu_aug"] = cuda and bool(colour)
        reasons["gpu_aug"] = (
            f"auto: {', '.join(colour)} on the GPU"
            if changes["gpu_aug"]
            else "auto: " + ("no colour augmentation" if cuda else "CPU run")
        )
    image_size = _image_size(root, config.labels) if config.compile is None or config.cache == AUTO else None
    if config.compile is None:
        megapixels = training_megapixels(config, train_images, world_size, image_size)
        changes["compile"] = cuda and megapixels >= COMPILE_MIN_MEGAPIXELS
        reasons["compile"] = (
            "auto: CPU run"
            if not cuda
            else f"auto: {megapixels:,.0f} training megapixels per process "
            f"{'>=' if changes['compile'] else '<'} {COMPILE_MIN_MEGAPIXELS:,.0f}, where compiling "
            f"repays its ~{COMPILE_SECONDS:.0f} s"
        )
    if config.cache == AUTO:
        if cuda:
            changes["cache"], reasons["cache"], warning = auto_cache(config, root, image_size)
            warnings += [warning] if warning else []
        else:
            changes["cache"], reasons["cache"] = None, "auto: CPU run"
    changes = _agreed(changes)
    return Resolution(dataclasses.replace(config, **changes), device, reasons, tuple(warnings))


def resolve_and_report(
    config: TrainConfig, root: Path, train_images: int, world_size: int, device: torch.device, always: bool = True
) -> TrainConfig:
    """`resolve_runtime`'s config, its lines printed once by rank 0: always, or (`always` False, a run inside
    `cityseg cv`, whose config is resolved already) only when something was still auto."""
    from cityseg.training.dist import is_main

    resolution = resolve_runtime(config, root, train_images, world_size, device)
    if is_main() and (always or resolution.resolved_any):
        print("\n".join(resolution.lines()), flush=True)
    return resolution.config


def training_megapixels(
    config: TrainConfig, train_images: int, world_size: int, image_size: tuple[int, int] | None
) -> float:
    """Pixels one process trains on over the whole run, in millions: epochs x steps x batch x input pixels."""
    width, height = config.crop or config.size or image_size or (2048, 1024)
    steps = max(1, train_images // max(1, world_size) // config.batch_size)  # drop_last, as the loader
    return config.epochs * steps * config.batch_size * width * height / 1e6


# ----------------------------------------------------------------------------------------------------------
# The cache: where, and whether the disk has room
# ----------------------------------------------------------------------------------------------------------


def auto_cache(
    config: TrainConfig, root: Path, image_size: tuple[int, int] | None
) -> tuple[str | None, str, str | None]:
    """(folder or None, reason, warning line or None) for cache "auto" on a CUDA machine."""
    from cityseg.data.cache import cache_state, training_cache_size
    from cityseg.data.frames import list_frames

    folder = default_cache_location(root)
    if folder is None:
        return (
            None,
            "auto: no writable folder",
            (
                f"decoded-image cache: off, training reads the PNGs: neither {default_cache_candidates(root)[0]} nor "
                f"{default_cache_candidates(root)[1]} is writable; pass --cache DIR (a writable folder) to use it."
            ),
        )
    size = training_cache_size(config.size, config.aug, config.scale_range)
    if folder.is_dir() and cache_state(root, "train", size, folder, config.labels) == "fresh":
        return str(folder), "auto: reused", None
    frames = len(list_frames(root, "train", label_source=config.labels))
    width, height = size or image_size or (2048, 1024)
    entry = cache_bytes(frames, (width, height))
    needed = entry + max(CACHE_MARGIN_BYTES, int(CACHE_MARGIN_SHARE * entry))
    free = free_bytes(folder)
    if free < needed:
        return (
            None,
            "auto: no room",
            (
                f"decoded-image cache: off, training reads the PNGs (slower): the cache of {frames} train frames at "
                f"{width}x{height} needs {needed / 1e9:.1f} GB with a margin in {folder}, which has {free / 1e9:.1f} GB "
                "free; free some space there or pass --cache DIR on a disk with room (--cache none hides this line)."
            ),
        )
    return str(folder), f"auto: {entry / 1e9:.1f} GB, built on first use", None


def cache_bytes(frames: int, size: tuple[int, int]) -> int:
    """Bytes of one cache entry: per frame, an (H, W, 3) uint8 image and an (H, W) uint8 label map."""
    width, height = size
    return frames * height * width * 4


def default_cache_candidates(root: Path) -> tuple[Path, Path]:
    """Where cache "auto" goes, in order: beside ROOT (cityseg.data.cache's default), then the user's cache folder,
    in a subfolder per dataset (entries are named by split and size, so two datasets must not share one)."""
    from cityseg.data.cache_core import default_cache_dir

    resolved = Path(root).resolve()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:8]
    return default_cache_dir(root), base / "cityseg" / f"{resolved.name}-{digest}"


def default_cache_location(root: Path) -> Path | None:
    """The first candidate cityseg may write a cache into: writable, and new, empty or already a cityseg cache."""
    from cityseg.data.cache_core import TRAINING_CACHE

    for folder in default_cache_candidates(root):
        if folder.exists():
            ours = (folder / TRAINING_CACHE.marker).is_file() or (folder.is_dir() and not any(folder.iterdir()))
            if folder.is_dir() and ours and os.access(folder, os.W_OK | os.X_OK):
                return folder
        elif os.access(_existing_ancestor(folder), os.W_OK | os.X_OK):
            return folder
    return None


def free_bytes(folder: Path) -> int:
    """Free bytes on the disk that holds (or will hold) `folder`."""
    return shutil.disk_usage(_existing_ancestor(folder)).free


def _existing_ancestor(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _image_size(root: Path, labels: str) -> tuple[int, int] | None:
    """(width, height) of the first train image, from its header; None without train images."""
    from PIL import Image

    from cityseg.data.frames import list_frames

    frames = list_frames(root, "train", label_source=labels)
    if not frames:
        return None
    with Image.open(frames[0].image) as image:
        return image.size


def _colour_augmentations() -> tuple[str, ...]:
    from cityseg.data.augmentations import PIXEL_AUGMENTATIONS

    return PIXEL_AUGMENTATIONS


def _agreed(changes: dict[str, Any]) -> dict[str, Any]:
    """Rank 0's choices on every rank (free disk space may change between two ranks' checks)."""
    from cityseg.training.dist import is_distributed

    if not is_distributed():
        return changes
    box = [changes]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


# ----------------------------------------------------------------------------------------------------------
# What ran: printed once, and saved in config.json
# ----------------------------------------------------------------------------------------------------------


def amp_text(config: TrainConfig, device: torch.device) -> str:
    """The precision a run trains in, as the step context will set it up."""
    from cityseg.training.model import mixed_precision_dtype

    dtype = mixed_precision_dtype(device) if config.amp else None
    if dtype is None:
        return "float32" + (" (amp is CUDA only)" if config.amp else "")
    return "bf16 autocast" if dtype == torch.bfloat16 else "fp16 autocast with a gradient scaler"


def summary_line(config: TrainConfig, device: torch.device, reasons: dict[str, str]) -> str:
    """One line: every machine-dependent setting of the run, and why, for the fields the machine chose."""

    def why(name: str) -> str:
        return f" ({reasons[name]})" if name in reasons else ""

    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    cache = config.cache if config.cache not in (None, AUTO) else "off (PNGs)"
    return (
        f"runtime: device {device}{gpu}{why('device')}, {config.workers} loader workers per process, "
        f"{amp_text(config, device)}, compile {_on(config.compile)}{why('compile')}, gpu-aug "
        f"{_on(config.gpu_aug)}{why('gpu_aug')}, cache {cache}{why('cache')}; config.json records these"
    )


def runtime_record(config: TrainConfig, device: torch.device, world_size: int = 1) -> dict[str, Any]:
    """What config.json's "runtime" holds: the machine-dependent settings as they ran."""
    from cityseg.training.dist import is_distributed
    from cityseg.training.model import mixed_precision_dtype

    dtype = mixed_precision_dtype(device) if config.amp else None
    return {
        "device": str(device),
        "world_size": world_size,
        "process_group": torch.distributed.get_backend() if is_distributed() else None,  # DDP ran (nccl/gloo)
        "workers": config.workers,
        "amp_dtype": None if dtype is None else str(dtype).removeprefix("torch."),
        "channels_last": device.type == "cuda",
        "compile": bool(config.compile),
        "gpu_aug": bool(config.gpu_aug),
        "cache": config.cache if config.cache != AUTO else None,
    }


def note_compile_fallback(run_dir: Path, reason: str) -> None:
    """Record in the run's config.json that compiling failed and the run trained eagerly (rank 0 only)."""
    from cityseg.training.runfolder import CONFIG_FILE, read_config_json, write_json

    record = read_config_json(Path(run_dir))
    if not record:
        return
    record.setdefault(RUNTIME_KEY, {}).update(compile=False, compile_failed=reason)
    write_json(Path(run_dir) / CONFIG_FILE, record)


def _on(value: bool | None) -> str:
    return "on" if value else "off"


# ----------------------------------------------------------------------------------------------------------
# How batches run on the device
# ----------------------------------------------------------------------------------------------------------


def step_context(config: TrainConfig, device: torch.device, rank: int = 0) -> StepContext:
    """With `amp`: bf16 autocast where the GPU has it natively, else fp16 (with a GradScaler); channels-last on
    CUDA; float32 on CPU. With `gpu_aug` the colour augmentations run here on the batch (on CPU: in the main
    process), with draws seeded by (config.seed, epoch, step, rank)."""
    from cityseg.data.device_augment import build_batch_augment
    from cityseg.training.model import mixed_precision_dtype

    augment = build_batch_augment(config.aug, config.seed, rank) if config.gpu_aug else None
    if device.type != "cuda":
        return StepContext(device, augment=augment)
    dtype = mixed_precision_dtype(device) if config.amp else None
    return StepContext(device, amp_dtype=dtype, channels_last=True, augment=augment)


def needs_grad_scaler(context: StepContext) -> bool:
    """fp16 gradients underflow without loss scaling; bf16 has float32's range and float32 needs none."""
    return context.amp_dtype == torch.float16


def uses_cache(config: TrainConfig) -> bool:
    """True when datasets read a cache folder: an explicit one, or "auto" once resolved to one."""
    return config.cache not in (None, AUTO)


__all__ = [
    "COMPILE_MIN_MEGAPIXELS",
    "Resolution",
    "amp_text",
    "auto_cache",
    "cache_bytes",
    "default_cache_candidates",
    "default_cache_location",
    "free_bytes",
    "needs_grad_scaler",
    "note_compile_fallback",
    "resolve_and_report",
    "resolve_runtime",
    "runtime_record",
    "step_context",
    "summary_line",
    "training_megapixels",
    "uses_cache",
]
