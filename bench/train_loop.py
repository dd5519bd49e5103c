"""End-to-end training throughput: the project's loader feeding the real training step, vs batches in memory.

Every variant runs `cityseg.training.engine.train_one_epoch` with what the trainer builds for the "strong" recipe
(Adam, cosine schedule, cross-entropy, `trainer.step_context`: bf16 autocast + channels-last on CUDA,
float32 on CPU) on random crops (scale 0.5-2.0, flip, photometric distortion) of synthetic 2048x1024
frames. Same initial weights, crop, batch, steps and workers for all; each is reported as a ratio to (0):

  (0) memory         a few distinct batches collated once from the cache dataset (uint8, pinned on CUDA) and
                     cycled: the step alone (plus the host-to-device copy), the ceiling a loader can reach
  (1) cache          DataLoader over CachedDataset (`cityseg cache`), colour ops in the loader workers
  (2) cache+gpu-aug  the same with `gpu_aug`: the workers only crop and flip; photometric distortion runs on
                     the batch on the device (`device_augment.build_batch_augment` via StepContext.augment)
  (3) png            DataLoader over CityscapesDataset (PNG decode), colour ops in the workers (--no-png skips)
  defaults           what a notebook user gets: the strong recipe with every machine field left at auto, resolved
                     by `cityseg.training.runtime.resolve_runtime` as for a run over --run-images training frames (a
                     Cityscapes fold by default): device, loader workers, compile, gpu_aug and the cache in its
                     default folder, built there on first use (the build is timed, outside the epochs)
  best               the best explicit flags: --cache DIR --gpu-aug --compile with --workers

--variants picks which run (default: (0)-(3)); `--variants memory,defaults,best` is the check that the plain
defaults reach the best flags (ratio defaults/best). Compiled variants share one compiled model (compiled
with the trainer's fallback, `cityseg.training.compiling`); its first step, forward and backward at the run's shapes,
is timed apart and reported as the compile time.

Datasets and transforms come from `trainer.build_datasets`; the loaders are configured like the trainer's
(pin_memory on CUDA, persistent workers, prefetch 4, `worker_init`) but draw with replacement from a seeded
sampler whose length is set per epoch: a warm-up epoch of --warmup steps (workers start, cuDNN picks its
kernels, --compile compiles) then the timed epoch of --steps. Like every training epoch, the timed one
starts with an empty prefetch queue; that costs about one batch's worth of worker time at its start, so
raise --steps when a loader variant is close to (0). Per variant: images/s, the share of the epoch the
host waited for data (TrainStats.data_wait_share), CUDA peak memory and, on CUDA, the model FLOP
utilisation (MFU: forward+backward FLOPs from FlopCounterMode over the GPU's dense bf16 peak).

--check-syncs (CUDA) counts the host-device syncs of the timed epochs of (0) and (2) (the step, and the
step with the batched colour augmentation) with torch's sync debug mode; the
epoch reads the loss every 20 steps and once at its end by design (the trainer's per-iteration TensorBoard
scalars are written from those same reads, and run here too), anything more is a sync in the step.

    python bench/train_loop.py                  # CUDA: batch 16, 1024x512, 60 steps; CPU: ~2 min smoke-sized
    python bench/train_loop.py --compile --check-syncs --no-record
    python bench/train_loop.py --steps 200 --no-png    # steadier loader figures
    python bench/train_loop.py --variants memory,defaults,best --steps 100   # plain defaults vs best flags
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from common import (
    Recorder,
    add_common_args,
    add_data_args,
    count_flops,
    peak_flops,
    synthetic_root,
    usable_cores,
)
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from cityseg.cli.common import size_type
from cityseg.training.config import TrainConfig
from cityseg.training.engine import TrainStats

TARGET_IMAGES_PER_S = 300  # the performance goal: crops/s at 1024x512 bf16 on one H100/H200
TARGET_DEFAULTS_RATIO = 0.9  # the plain defaults reach at least this share of the best flags
VARIANTS = ("memory", "cache", "cache+gpu-aug", "png", "defaults", "best")
# (batch, crop, workers, steps, warmup, frames) when not given
DEFAULTS = {"cuda": (16, (1024, 512), max(1, usable_cores() - 2), 60, 10, 64), "cpu": (2, (512, 256), 2, 3, 1, 8)}


class EpochSampler(Sampler[int]):
    """Seeded random indices with replacement, `length` per epoch (set before each): epochs of any size."""

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n = n
        self.length = 0
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        return iter(torch.randint(self.n, (self.length,), generator=self.generator).tolist())


Feed = Callable[[int], Iterable]  # steps -> an epoch of that many (image, mask) batches


def loader_feed(dataset: Dataset, config: TrainConfig, device: torch.device) -> Feed:
    """Epochs from a DataLoader set up like `trainer.build_loaders`, over an `EpochSampler`."""
    from cityseg.data.dataset import worker_init

    sampler = EpochSampler(len(dataset))
    extra: dict[str, Any] = {}
    if config.workers > 0:
        extra = {"persistent_workers": True, "prefetch_factor": 4, "worker_init_fn": worker_init}
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        **extra,
    )

    def feed(steps: int) -> Iterable:
        sampler.length = steps * config.batch_size
        return loader

    return feed


def memory_feed(batches: list) -> Feed:
    """Epochs cycling through batches loaded once: no loader cost at all."""
    return lambda steps: (batches[i % len(batches)] for i in range(steps))


@dataclass
class Runner:
    """What all variants share: one model (compiled once, when a variant asks), its initial weights, the loss and
    the schedule length."""

    core: nn.Module  # the bare network: optimizer groups and weight resets
    initial: dict[str, Tensor]
    criterion: nn.Module
    device: torch.device
    warmup: int
    steps: int
    compiled: nn.Module | None = None  # `core` compiled with the trainer's fallback, made by the first compiled variant
    compile_s: float | None = None  # seconds of the compiled model's first step (forward + backward): compiling

    def model_for(self, config: TrainConfig, sample: tuple[Tensor, Tensor]) -> nn.Module:
        """`core`, or its compiled version (compiled at its first use, on `sample`: a uint8 (images, masks) batch)."""
        if not config.compile:
            return self.core
        if self.compiled is None:
            from cityseg.training.compiling import CompiledOrEager, first_step
            from cityseg.training.engine import to_device_batch
            from cityseg.training.runtime import step_context

            self.compiled = CompiledOrEager(self.core)
            context = step_context(config, self.device)
            self.compiled.train()
            image, target = to_device_batch(*sample, context)  # the shapes, dtypes and layout of the real steps

            def forward_backward() -> None:
                self.core.zero_grad(set_to_none=True)
                with context.autocast():
                    self.criterion(self.compiled(image), target).backward()

            start = time.perf_counter()
            first_step(self.compiled, forward_backward)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.compile_s = time.perf_counter() - start
            self.core.zero_grad(set_to_none=True)
            progress(
                f"compiled in {self.compile_s:.1f} s"
                + (f" (FAILED: {self.compiled.failure}; eager)" if self.compiled.failure else "")
            )
        return self.compiled

    def run(
        self, config: TrainConfig, feed: Feed, sample: tuple[Tensor, Tensor], check_syncs: bool = False
    ) -> tuple[TrainStats, list[str]]:
        """A warm-up epoch, then the timed epoch, from the initial weights with a fresh optimizer and schedule."""
        from cityseg.training.engine import train_one_epoch
        from cityseg.training.optim import build_optimizer, build_scheduler
        from cityseg.training.runtime import needs_grad_scaler, step_context
        from cityseg.training.tensorboard_log import TensorBoardLog

        model = self.model_for(config, sample)
        self.core.load_state_dict(self.initial)  # in place: a compiled model keeps its graphs
        context = step_context(config, self.device)
        optimizer = build_optimizer(self.core, config)
        scheduler = build_scheduler(optimizer, config, self.warmup + self.steps)
        scaler = torch.amp.GradScaler(self.device.type, enabled=needs_grad_scaler(context))

        with tempfile.TemporaryDirectory(prefix="cityseg-bench-events-") as events:
            # The trainer's per-iteration TensorBoard scalars ride along, so their cost and syncs are measured too.
            board = TensorBoardLog(Path(events), self.warmup + self.steps, epochs=2)

            def epoch(number: int, steps: int) -> TrainStats:
                return train_one_epoch(
                    model,
                    feed(steps),
                    self.criterion,
                    optimizer,
                    scheduler,
                    scaler,
                    context,
                    epoch=number,
                    progress=False,
                    on_steps=board.step_writer(number + 1),
                )

            epoch(0, self.warmup)
            with sync_warnings(check_syncs) as syncs:
                stats = epoch(1, self.steps)
            board.close()
        return stats, syncs


@contextlib.contextmanager
def sync_warnings(enabled: bool) -> Iterator[list[str]]:
    """Collect 'file:line: message' for each host-device sync a CUDA op makes inside the block."""
    found: list[str] = []
    if not enabled:
        yield found
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield found
        finally:
            torch.cuda.set_sync_debug_mode("default")
    found.extend(
        f"{Path(w.filename).name}:{w.lineno}: {str(w.message).splitlines()[0]}"
        for w in caught
        if "synchroniz" in str(w.message)
    )


def parse_args() -> argparse.Namespace:
    """Options, with defaults per device filled in (None = the device's default)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: 16 on CUDA, 2 on CPU)")
    parser.add_argument("--crop", type=size_type, default=None, help="WxH crop (default: 1024x512 CUDA, 512x256 CPU)")
    parser.add_argument("--workers", type=int, default=None, help="loader workers (default: cores-2 CUDA, 2 CPU)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per variant (default: 60 CUDA, 3 CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per variant first (10 CUDA, 1 CPU)")
    parser.add_argument("--memory-batches", type=int, default=8, help="distinct batches variant (0) cycles through")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model in (0)-(3) (compiled once)")
    parser.add_argument("--no-png", action="store_true", help="skip variant (3), PNG decoding in the workers")
    parser.add_argument(
        "--variants",
        type=lambda text: [v for v in text.split(",") if v],
        default=None,
        help=f"comma list of {', '.join(VARIANTS)} (default: memory,cache,cache+gpu-aug,png); "
        "memory always runs first, as the baseline",
    )
    parser.add_argument(
        "--run-images",
        type=int,
        default=2380,
        help="training frames of the run `defaults` is resolved for (compile's threshold): a "
        "Cityscapes fold by default",
    )
    parser.add_argument(
        "--check-syncs", action="store_true", help="count host-device syncs in the timed epochs of (0) and (2) (CUDA)"
    )
    parser.add_argument("--cache", type=Path, default=None, help="cache folder (default: a temp folder, removed)")
    add_data_args(parser, frames=None)
    add_common_args(parser)
    args = parser.parse_args()
    cuda = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    args.device = "cuda" if cuda else "cpu"
    for name, default in zip(
        ("batch", "crop", "workers", "steps", "warmup", "frames"), DEFAULTS[args.device], strict=True
    ):
        if getattr(args, name) is None:
            setattr(args, name, default)
    chosen = args.variants or [name for name in VARIANTS[:4] if not (args.no_png and name == "png")]
    unknown = sorted(set(chosen) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    args.variants = ["memory"] + [name for name in chosen if name != "memory"]
    return args


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main() -> None:
    args = parse_args()
    from cityseg.data.cache import ensure_cache
    from cityseg.data.frames import list_frames
    from cityseg.training.config import resolve_config
    from cityseg.training.datasets import build_datasets
    from cityseg.training.losses import build_loss
    from cityseg.training.model import build_model
    from cityseg.training.runtime import step_context

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the trainer: fixed input sizes
    root = synthetic_root(args.data, args.frames, prepared=True)
    rec = Recorder("train_loop", args)
    ids = [frame.id for frame in list_frames(root, "train")]

    def config(**changes: Any) -> TrainConfig:
        values = {
            "crop": args.crop,
            "batch_size": args.batch,
            "encoder_weights": None,
            "device": args.device,
            "workers": args.workers,
            "compile": args.compile,
            "gpu_aug": False,
            "cache": None,
        }
        return resolve_config("strong", **(values | changes))

    torch.manual_seed(0)
    core = build_model(encoder_weights=None)
    flops = count_flops(core, args.batch, args.crop, train=True)
    base = config()
    channels_last = step_context(base, device).channels_last
    core.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    runner = Runner(
        core=core,
        initial={k: v.clone() for k, v in core.state_dict().items()},
        criterion=build_loss(base.loss, base.ohem_thresh, base.ohem_min_kept),
        device=device,
        warmup=args.warmup,
        steps=args.steps,
    )
    with tempfile.TemporaryDirectory(prefix="cityseg-bench-cache-") as tmp:
        cache_dir = args.cache or Path(tmp) / "cache"
        start = time.perf_counter()
        ensure_cache(root, "train", None, cache_dir, workers=args.workers, progress=False)
        build_s = time.perf_counter() - start
        progress(f"cache of {len(ids)} frames ready in {build_s:.1f} s")
        configs = variant_configs(args, config, cache_dir, root)
        stats: dict[str, TrainStats] = {}
        syncs: dict[str, list[str]] = {}
        setup_s: dict[str, float] = {}
        sample = None
        for name in args.variants:
            cfg = configs[name]
            start = time.perf_counter()
            dataset = build_datasets(cfg, root, ids)[0]  # the trainer's dataset and transform (defaults: cache built)
            setup_s[name] = round(time.perf_counter() - start, 2)
            if name == "memory":
                batches = list(loader_feed(dataset, cfg, device)(args.memory_batches))  # uint8, pinned on CUDA
                feed, sample = memory_feed(batches), batches[0]
            else:
                feed = loader_feed(dataset, cfg, device)
            check = args.check_syncs and name in ("memory", "cache+gpu-aug") and device.type == "cuda"
            stats[name], found = runner.run(cfg, feed, sample, check_syncs=check)
            if check:
                syncs[name] = found
            del feed  # the loader's persistent workers stop before the next variant's start
            progress(
                f"{name}: {stats[name].images_per_s:.1f} img/s, data wait {100 * stats[name].data_wait_share:.0f}%"
            )
    extra = {
        "compile_s": None if runner.compile_s is None else round(runner.compile_s, 1),
        "setup_s": setup_s,
        "compile_failed": getattr(runner.compiled, "failure", None),
        "settings": {
            name: {key: getattr(configs[name], key) for key in ("workers", "compile", "gpu_aug", "cache")}
            for name in args.variants
        },
    }
    report(rec, args, stats, flops, peak_flops(device), syncs, build_s, len(ids), extra)


def variant_configs(
    args: argparse.Namespace, config: Callable[..., TrainConfig], cache_dir: Path, root: Path
) -> dict[str, TrainConfig]:
    """The TrainConfig of each variant; `defaults` is resolved here (its line printed) as a notebook run would be."""
    from cityseg.training.config import resolve_config
    from cityseg.training.runtime import resolve_runtime

    cached = config(cache=str(cache_dir))
    configs = {
        # compiled when `best` runs, so that best/memory is the loader's share of the same step
        "memory": config(cache=str(cache_dir), compile=args.compile or "best" in args.variants),
        "cache": cached,
        "cache+gpu-aug": config(cache=str(cache_dir), gpu_aug=True),
        "png": config(cache=None),  # CityscapesDataset over the PNGs
        "best": config(cache=str(cache_dir), gpu_aug=True, compile=True),
    }
    if "defaults" in args.variants:
        plain = resolve_config("strong", crop=args.crop, batch_size=args.batch, encoder_weights=None)  # nothing else
        resolution = resolve_runtime(plain, root, args.run_images)
        for line in resolution.lines():
            progress(line)
        configs["defaults"] = resolution.config
    return configs


def report(
    rec: Recorder,
    args: argparse.Namespace,
    stats: dict[str, TrainStats],
    flops: int,
    peak: float | None,
    syncs: dict[str, list[str]],
    build_s: float,
    frames: int,
    extra: dict[str, Any],
) -> None:
    """Write the record: per variant images/s, ratio to memory, data wait, peak memory, MFU."""
    baseline = stats["memory"].images_per_s
    rows = {
        name: {
            "images_per_s": round(s.images_per_s, 2),
            "ratio": round(s.images_per_s / baseline, 3),
            "data_wait_share": round(s.data_wait_share, 4),
            "seconds": round(s.seconds, 2),
            "loss": round(s.loss, 4),
            "peak_memory_gib": None if s.peak_memory_bytes is None else round(s.peak_memory_bytes / 2**30, 2),
            "mfu": round(s.images_per_s / args.batch * flops / peak, 4) if peak else None,
        }
        for name, s in stats.items()
    }
    results: dict[str, Any] = {
        "variants": rows,
        "gflop_per_step": round(flops / 1e9, 1),
        "peak_bf16_flops": peak,
        "batch": args.batch,
        "crop": list(args.crop),
        "workers": args.workers,
        "steps": args.steps,
        "warmup": args.warmup,
        "frames": frames,
        "cache_build_s": round(build_s, 1),
        "compile": args.compile,
        **extra,
    }
    if syncs:
        results["syncs_per_step"] = {name: round(len(found) / args.steps, 3) for name, found in syncs.items()}
        results["sync_sites"] = {
            name: [f"{site} (x{n})" for site, n in Counter(found).most_common(3)] for name, found in syncs.items()
        }
    figure = "img/s: " + ", ".join(
        f"{name} {r['images_per_s']:.4g} (data wait {100 * r['data_wait_share']:.0f}%)" for name, r in rows.items()
    )
    if args.device == "cuda":
        figure += "; peak mem GiB: " + ", ".join(f"{name} {r['peak_memory_gib']}" for name, r in rows.items())
    if peak:
        figure += "; MFU: " + ", ".join(f"{name} {100 * r['mfu']:.1f}%" for name, r in rows.items())
    if "syncs_per_step" in results:
        figure += "; syncs/step " + ", ".join(f"{name} {n}" for name, n in results["syncs_per_step"].items())
    ratio = ", ".join(f"{name}/memory {r['ratio']:.2f}x" for name, r in rows.items() if name != "memory")
    ratio += f" (wall time; {args.workers} loader workers each, defaults its own)"
    if "defaults" in rows and "best" in rows:
        ratio += (
            f"; defaults/best {rows['defaults']['images_per_s'] / rows['best']['images_per_s']:.2f}x "
            f"(target >= {TARGET_DEFAULTS_RATIO})"
        )
    if args.device == "cuda" and tuple(args.crop) == (1024, 512):
        best = max(r["images_per_s"] for name, r in rows.items() if name != "memory")
        ratio += f"; best loader/target {TARGET_IMAGES_PER_S} img/s {best / TARGET_IMAGES_PER_S:.2f}x"
        if "defaults" in rows:
            ratio += f"; defaults/target {rows['defaults']['images_per_s'] / TARGET_IMAGES_PER_S:.2f}x"
    if extra["compile_s"] is not None:
        figure += f"; first compiled step (compiling) {extra['compile_s']:.0f} s"
        if extra["compile_failed"]:
            figure += f" FAILED, ran eagerly: {extra['compile_failed']}"
    if "defaults" in rows:
        resolved = extra["settings"]["defaults"]
        figure += (
            f"; defaults resolved to {resolved['workers']} workers, compile {resolved['compile']}, gpu_aug "
            f"{resolved['gpu_aug']}, cache {'default folder' if resolved['cache'] else 'off'} (set-up "
            f"{extra['setup_s']['defaults']:.0f} s incl. its cache build)"
        )
    crop = f"{args.crop[0]}x{args.crop[1]}"
    rec.finish(
        results=results,
        figure=figure,
        ratio=ratio,
        notes=f"{args.device}, strong recipe (scale 0.5-2.0 + {crop} crop, flip, photometric), batch {args.batch}, "
        f"{args.workers} workers (defaults: its own), warmup {args.warmup} + {args.steps} timed steps, {frames} "
        f"synthetic 2048x1024 frames, compiled: "
        f"{', '.join(n for n in args.variants if extra['settings'][n]['compile']) or 'none'}, "
        f"{flops / 1e9:.0f} GFLOP/step (FlopCounterMode); "
        f"target >= {TARGET_IMAGES_PER_S} img/s at 1024x512 bf16 on one H100/H200",
    )


if __name__ == "__main__":
    main()
