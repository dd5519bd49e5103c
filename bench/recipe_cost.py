"""What a real run of each recipe costs on this GPU: peak memory and images/s at the recipe's own sizes.

Per variant, the trainer's own epoch (`cityseg.training.engine.train_one_epoch` with the recipe's model, loss,
optimizer, schedule and step context: its amp, channels-last on CUDA, colour augmentation on the device when the
recipe has one) over random uint8 batches already on the device, so no loader (bench/cli_cv.py measures that);
eager, as runs too short to repay compiling train (a compiled step needs a little less memory). A warm-up epoch
(cuDNN's algorithm search), then a timed one; its peak allocated memory is what log.jsonl's peak_memory_gb reports.

  seed     full 2048x1024 frames, batch 4, float32       strong   768x768 crops, batch 8, bf16 autocast

Each recipe runs first capped at --cap-gib (torch.cuda.set_per_process_memory_fraction: as on a 24 GB card, where
cuDNN skips algorithms whose workspace does not fit). One that does not fit runs again uncapped (its need on this
card, with the algorithms cuDNN chose under the cap), then its smaller variants capped: half the batch, --amp, a
1024x512 crop; the row says which fit.
Each rate also gives the training hours of a 5-fold Cityscapes run of the recipe (5 folds of 2380 frames and the
full fit on 2975, the recipe's epochs; validation not counted).

    python bench/recipe_cost.py                                      # CUDA: ~40 s
    python bench/recipe_cost.py --device cpu --shrink 16 --max-batch 2 --fallbacks always --no-record   # smoke
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
from typing import Any

import torch
from common import Recorder, add_common_args

from cityseg.training.config import TrainConfig

RUN_IMAGES = 5 * 2380 + 2975  # per epoch of a 5-fold Cityscapes cv and its full fit
GIB = 2**30


def input_size(config: TrainConfig, shrink: int) -> tuple[int, int]:
    """The (W, H) the network sees, each side divided by `shrink` and kept a multiple of 32."""
    width, height = config.crop or config.size or (2048, 1024)
    return max(32, width // shrink // 32 * 32), max(32, height // shrink // 32 * 32)


def measure(config: TrainConfig, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """Images/s and peak memory of the timed epoch, or "oom" when the step ran out of memory."""
    width, height = input_size(config, args.shrink)
    batch = min(config.batch_size, args.max_batch or config.batch_size)
    result: dict[str, Any] = {"size": f"{width}x{height}", "batch": batch, "amp": config.amp}
    try:
        result |= timed_epochs(config, device, args, batch, (width, height))
    except torch.cuda.OutOfMemoryError:
        result["oom"] = True
    gc.collect()  # the model, optimizer state and batches of `timed_epochs`, gone now with its frame
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def timed_epochs(
    config: TrainConfig, device: torch.device, args: argparse.Namespace, batch: int, size: tuple[int, int]
) -> dict[str, Any]:
    """A warm-up epoch and a timed one of the trainer's step over one random batch kept on the device."""
    from cityseg.data.device_augment import BatchAugment
    from cityseg.training.engine import train_one_epoch
    from cityseg.training.losses import build_loss
    from cityseg.training.model import model_of
    from cityseg.training.optim import build_optimizer, build_scheduler
    from cityseg.training.runtime import needs_grad_scaler, step_context

    torch.manual_seed(0)
    context = step_context(config, device)
    layout = torch.channels_last if context.channels_last else torch.preserve_format
    core = model_of(config).to(device, memory_format=layout)
    optimizer = build_optimizer(core, config)
    scheduler = build_scheduler(optimizer, config, args.warmup + args.steps)
    scaler = torch.amp.GradScaler(device.type, enabled=needs_grad_scaler(context))
    criterion = build_loss(config.loss, config.ohem_thresh, config.ohem_min_kept)
    width, height = size
    images = torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8).to(device)  # (B, 3, H, W)
    masks = torch.randint(0, 19, (batch, height, width), dtype=torch.uint8).to(device)  # (B, H, W)
    for epoch, steps in ((1, args.warmup), (2, args.steps)):
        if isinstance(context.augment, BatchAugment):
            context.augment.start_epoch(epoch)
        feed = ((images, masks) for _ in range(steps))
        stats = train_one_epoch(core, feed, criterion, optimizer, scheduler, scaler, context, epoch, progress=False)
    if device.type != "cuda":
        return {"images_per_s": round(stats.images_per_s, 2)}
    return {
        "images_per_s": round(stats.images_per_s, 2),
        "peak_gib": round(stats.peak_memory_bytes / GIB, 2),
        "reserved_gib": round(torch.cuda.max_memory_reserved(device) / GIB, 2),
    }


def cap(device: torch.device, gib: float | None) -> None:
    """Limit (or with None, free) what torch's allocator may hold on `device`."""
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(1.0 if gib is None else min(1.0, gib * GIB / total), device)


def smaller(config: TrainConfig) -> dict[str, TrainConfig]:
    """The variants a smaller card could run instead, by what changes."""
    variants = {f"batch {config.batch_size // 2}": dataclasses.replace(config, batch_size=config.batch_size // 2)}
    if not config.amp:
        variants["--amp"] = dataclasses.replace(config, amp=True)
    width, height = config.crop or config.size or (2048, 1024)
    if width * height > 1024 * 512:
        variants["crop 1024x512"] = dataclasses.replace(config, crop=(1024, 512))
    return variants


def describe(label: str, result: dict[str, Any], capped: bool, cap_gib: float, hours: bool) -> str:
    where = f"capped at {cap_gib:g} GiB" if capped else "uncapped"
    if result.get("oom"):
        return f"{label}: does NOT fit ({where}: out of memory)"
    memory = (
        f", peak {result['peak_gib']:.1f} GiB ({result['reserved_gib']:.1f} reserved)" if "peak_gib" in result else ""
    )
    text = f"{label}: {result['images_per_s']:.4g} img/s{memory}" + (", fits" if capped and memory else "")
    return text + (f"; a 5-fold Cityscapes run {result['run_hours']:.1f} h of training" if hours else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--recipes", default="seed,strong", help="comma list of recipe names or files")
    parser.add_argument("--cap-gib", type=float, default=22.0, help="what a 24 GB card leaves torch, in GiB")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (cuDNN's algorithm search)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--fallbacks", choices=("needed", "always"), default="needed", help="smaller variants when")
    parser.add_argument("--shrink", type=int, default=1, help="divide every side by this (a CPU smoke run)")
    parser.add_argument("--max-batch", type=int, default=None, help="cap every batch (a CPU smoke run)")
    add_common_args(parser)
    args = parser.parse_args()
    from cityseg.training.config import resolve_config

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True  # as training: fixed sizes
    rec = Recorder("recipe_cost", args)
    results: dict[str, dict[str, Any]] = {}
    parts, ratios = [], []
    for recipe in args.recipes.split(","):
        config = resolve_config(
            recipe, encoder_weights=None, device=args.device, workers=0, cache=None, compile=False, gpu_aug=cuda
        )
        label = f"{recipe} ({'x'.join(map(str, input_size(config, 1)))}, batch {config.batch_size}, " + (
            "bf16" if config.amp else "float32"
        )
        cap(device, args.cap_gib)
        own = measure(config, device, args)
        entry = {"capped": own}
        too_big = bool(own.get("oom"))
        if too_big:
            cap(device, None)
            entry["uncapped"] = own = measure(config, device, args)
        if "images_per_s" in own:
            own["run_hours"] = round(config.epochs * RUN_IMAGES / own["images_per_s"] / 3600, 2)
        parts.append(describe(label + ")", own, "uncapped" not in entry, args.cap_gib, "run_hours" in own))
        if too_big or args.fallbacks == "always":
            cap(device, args.cap_gib)
            entry["smaller"] = {name: measure(variant, device, args) for name, variant in smaller(config).items()}
            for name, result in entry["smaller"].items():
                parts.append(describe(f"{recipe} {name}", result, True, args.cap_gib, False))
                if "images_per_s" in result and "images_per_s" in own:
                    ratios.append(f"{recipe} {name}/{recipe} {result['images_per_s'] / own['images_per_s']:.2f}x")
        results[recipe] = entry
    cap(device, None)
    rec.finish(
        results={"recipes": results, "cap_gib": args.cap_gib},
        figure="; ".join(parts),
        ratio=", ".join(ratios) + " (img/s, same process)" if ratios else "-",
        notes=f"{device.type}, the trainer's epoch on random uint8 batches on the device (no loader), eager, "
        f"warm-up {args.warmup} + {args.steps} timed steps; peak = torch's allocated memory in the timed epoch "
        f"(reserved: the allocator's pool); 'fits' = ran with torch limited to {args.cap_gib:g} GiB "
        "(set_per_process_memory_fraction), what a 24 GB card leaves after the CUDA context"
        + (f"; sides / {args.shrink}" if args.shrink > 1 else "")
        + (f"; batch <= {args.max_batch}" if args.max_batch else ""),
    )


if __name__ == "__main__":
    main()
