"""The machine-dependent settings of a run, resolved once at its start (rank 0 for all), printed and saved: at auto,
CUDA when visible; gpu_aug and the decoded-image cache on CUDA; compile for CUDA runs long enough to repay it
(BENCHMARKS.md, H200 train_loop rows of 2026-11-26 01:47 and 01:49)."""

import dataclasses
import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cityseg.data.cache import MARKER, cache_state, default_cache_dir, training_cache_size
from cityseg.data.device_augment import build_batch_augment
from cityseg.data.frames import ListedSplit, listed_split
from cityseg.data.layout import PIXEL_AUGMENTATIONS
from cityseg.errors import UserError
from cityseg.training.config import AUTO, TrainConfig
from cityseg.training.dist import is_distributed, is_main
from cityseg.training.engine import StepContext
from cityseg.training.model import mixed_precision_dtype, resolve_device
from cityseg.training.runfolder import CONFIG_FILE, read_config_json, write_json

COMPILE_SECONDS = 90.0
_CROP_MEGAPIXELS = 1024 * 512 / 1e6  # the benchmarked crops
COMPILE_SAVING_S_PER_MEGAPIXEL = (1 / 262.7 - 1 / 352.8) / _CROP_MEGAPIXELS  # img/s eager, compiled
COMPILE_MIN_MEGAPIXELS = COMPILE_SECONDS / COMPILE_SAVING_S_PER_MEGAPIXEL
CACHE_MARGIN_BYTES = 2**30  # the run's checkpoints and logs need room beside the cache
CACHE_MARGIN_SHARE = 0.05
CUBLAS_WORKSPACE = ":4096:8"  # what cuBLAS needs for deterministic results (CUDA's reproducibility notes)


@dataclass(frozen=True)
class Resolution:
    """A config with every machine default made concrete, and what to tell the user about it."""

    config: TrainConfig
    device: torch.device
    reasons: dict[str, str] = field(default_factory=dict)  # field -> why the machine chose its value
    warnings: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        """One line with every machine-dependent setting of the run, and why for those the machine chose, then the
        warnings: printed once at the start of a run."""
        config, device, reasons = self.config, self.device, self.reasons

        def on(name: str) -> str:
            return ("on" if getattr(config, name) else "off") + (f" ({reasons[name]})" if name in reasons else "")

        dtype = mixed_precision_dtype(device) if config.amp else None
        if dtype is None:
            amp = "float32" + (" (amp is CUDA only)" if config.amp else "")
        else:
            amp = "bf16 autocast" if dtype == torch.bfloat16 else "fp16 autocast with a gradient scaler"
        gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
        cache = config.cache if config.cache not in (None, AUTO) else "off (PNGs)"
        cache += f" ({reasons['cache']})" if "cache" in reasons else ""
        device_why = f" ({reasons['device']})" if "device" in reasons else ""
        summary = (
            f"runtime: device {device}{gpu}{device_why}, {config.workers} loader workers per process, "
            f"{amp}, compile {on('compile')}, gpu-aug {on('gpu_aug')}, cache {cache}, "
            f"deterministic {on('deterministic')}; config.json records these"
        )
        return [summary, *self.warnings]


def resolve_runtime(
    config: TrainConfig,
    split: ListedSplit | Path,
    train_images: int,
    world_size: int = 1,
    device: torch.device | None = None,
) -> Resolution:
    """Concrete values for the auto fields of `config`, for a run over `train_images` frames of the train split."""
    device = device if device is not None else resolve_device(config.device)
    cuda = device.type == "cuda"
    if config.deterministic and config.compile:
        raise UserError(
            "--compile and --deterministic exclude each other: compiled kernels are not covered by torch's "
            "deterministic mode here. Drop --compile (--deterministic runs eagerly) or --deterministic."
        )
    changes: dict[str, Any] = {}
    reasons: dict[str, str] = {}
    warnings: list[str] = []
    if config.device == "auto":
        changes["device"], reasons["device"] = device.type, "auto"
    if config.gpu_aug is None:
        colour = [name for name in config.aug if name in PIXEL_AUGMENTATIONS]
        changes["gpu_aug"] = cuda and bool(colour)
        why = (
            f"{', '.join(colour)} on the GPU" if changes["gpu_aug"] else "no colour augmentation" if cuda else "CPU run"
        )
        reasons["gpu_aug"] = f"auto: {why}"
    if config.compile is None or config.cache == AUTO:
        split = listed_split(split, "train", config.labels)
    if config.compile is None:
        megapixels = training_megapixels(config, train_images, world_size, split.image_size)
        changes["compile"] = cuda and not config.deterministic and megapixels >= COMPILE_MIN_MEGAPIXELS
        if not cuda or config.deterministic:
            reasons["compile"] = "auto: CPU run" if not cuda else "auto: --deterministic"
        else:
            reasons["compile"] = (
                f"auto: {megapixels:,.0f} training megapixels per process {'>=' if changes['compile'] else '<'} "
                f"{COMPILE_MIN_MEGAPIXELS:,.0f}, where compiling repays its ~{COMPILE_SECONDS:.0f} s"
            )
    if config.cache == AUTO:
        cached = auto_cache(config, split) if cuda else (None, "auto: CPU run", None)
        changes["cache"], reasons["cache"], warning = cached
        warnings += [warning] if warning else []
    if is_distributed():  # rank 0's choices on every rank (free disk space may change between two ranks' checks)
        box = [changes]
        torch.distributed.broadcast_object_list(box, src=0)
        changes = box[0]
    return Resolution(dataclasses.replace(config, **changes), device, reasons, tuple(warnings))


def resolve_and_report(
    config: TrainConfig,
    split: ListedSplit | Path,
    train_images: int,
    world_size: int,
    device: torch.device,
    always: bool = True,
) -> TrainConfig:
    """`resolve_runtime`'s config, its lines printed by rank 0 (`always` False: only if something was still auto)."""
    resolution = resolve_runtime(config, split, train_images, world_size, device)
    if is_main() and (always or resolution.reasons):
        print("\n".join(resolution.lines()), flush=True)
    return resolution.config


def apply_determinism(config: TrainConfig) -> None:
    """Set torch's switches for `config.deterministic` before the run's first CUDA call."""
    if config.deterministic:
        if os.environ.get("CUBLAS_WORKSPACE_CONFIG") != CUBLAS_WORKSPACE:
            if torch.cuda.is_initialized():
                raise UserError(
                    f"--deterministic needs CUBLAS_WORKSPACE_CONFIG={CUBLAS_WORKSPACE} before CUDA starts, but CUDA "
                    "already runs in this process (a notebook that trained before?). Restart the kernel or the "
                    f"process, or set CUBLAS_WORKSPACE_CONFIG={CUBLAS_WORKSPACE} before starting Python."
                )
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
    torch.backends.cudnn.deterministic = config.deterministic
    torch.backends.cudnn.benchmark = not config.deterministic  # fixed input sizes: cuDNN picks its fastest kernels
    torch.use_deterministic_algorithms(config.deterministic)


def training_megapixels(
    config: TrainConfig, train_images: int, world_size: int, image_size: tuple[int, int] | None
) -> float:
    """Pixels one process trains on over the whole run, in millions: epochs x steps x batch x input pixels."""
    width, height = config.crop or config.size or image_size or (2048, 1024)
    steps = max(1, train_images // max(1, world_size) // config.batch_size)  # drop_last, as the loader
    return config.epochs * steps * config.batch_size * width * height / 1e6


def auto_cache(config: TrainConfig, split: ListedSplit) -> tuple[str | None, str, str | None]:
    """(folder or None, reason, warning line or None) for cache "auto" on a CUDA machine."""
    folder = default_cache_location(split.root)
    if folder is None:
        first, second = default_cache_candidates(split.root)
        warning = f"decoded-image cache: off, training reads the PNGs: neither {first} nor {second} is writable; "
        return None, "auto: no writable folder", warning + "pass --cache DIR (a writable folder) to use it."
    size = training_cache_size(config.size, config.aug, config.scale_range)
    if folder.is_dir() and cache_state(split.root, "train", size, folder, config.labels, split.frames) == "fresh":
        return str(folder), "auto: reused", None
    frames = len(split.frames)
    width, height = size or split.image_size
    entry = frames * height * width * 4  # per frame an (H, W, 3) uint8 image and an (H, W) uint8 label map
    needed = entry + max(CACHE_MARGIN_BYTES, int(CACHE_MARGIN_SHARE * entry))
    free = shutil.disk_usage(_existing_ancestor(folder)).free
    if free < needed:
        warning = (
            f"decoded-image cache: off, training reads the PNGs (slower): the cache of {frames} train frames at "
            f"{width}x{height} needs {needed / 1e9:.1f} GB with a margin in {folder}, which has {free / 1e9:.1f} GB "
            "free; free some space there or pass --cache DIR on a disk with room (--cache none hides this line)."
        )
        return None, "auto: no room", warning
    return str(folder), f"auto: {entry / 1e9:.1f} GB, built on first use", None


def default_cache_candidates(root: Path) -> tuple[Path, Path]:
    """Where cache "auto" goes: beside ROOT, then the user's cache folder, per dataset."""
    resolved = Path(root).resolve()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:8]
    return default_cache_dir(root), base / "cityseg" / f"{resolved.name}-{digest}"


def default_cache_location(root: Path) -> Path | None:
    """The first candidate cityseg may write a cache into: writable, and new, empty or already a cityseg cache."""
    for folder in default_cache_candidates(root):
        if folder.exists():
            ours = (folder / MARKER).is_file() or (folder.is_dir() and not any(folder.iterdir()))
            if folder.is_dir() and ours and os.access(folder, os.W_OK | os.X_OK):
                return folder
        elif os.access(_existing_ancestor(folder), os.W_OK | os.X_OK):
            return folder
    return None


def _existing_ancestor(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def runtime_record(config: TrainConfig, device: torch.device, world_size: int = 1) -> dict[str, Any]:
    """What config.json's "runtime" holds: the machine-dependent settings as they ran."""
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
        "deterministic": config.deterministic,
    }


def note_compile_fallback(run_dir: Path, reason: str) -> None:
    """Record in the run's config.json that compiling failed and the run trained eagerly (rank 0 only)."""
    record = read_config_json(Path(run_dir))
    if record:
        record.setdefault("runtime", {}).update(compile=False, compile_failed=reason)
        write_json(Path(run_dir) / CONFIG_FILE, record)


def step_context(config: TrainConfig, device: torch.device, rank: int = 0) -> StepContext:
    """Autocast and channels-last on CUDA (float32 on CPU); with `gpu_aug` the batch augmentations."""
    augment = build_batch_augment(config.aug, config.seed, rank) if config.gpu_aug else None
    dtype = mixed_precision_dtype(device) if config.amp else None  # None off CUDA
    return StepContext(device, amp_dtype=dtype, channels_last=device.type == "cuda", augment=augment)


def needs_grad_scaler(context: StepContext) -> bool:
    """fp16 gradients underflow without loss scaling; bf16 has float32's range."""
    return context.amp_dtype == torch.float16
