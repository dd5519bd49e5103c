"""Training-loader throughput: the reference's naive pipeline vs cityseg's loader, without and with cache.

All three feed the same DataLoader (batch 8, 2 workers, same sampler) with 1024x512 crops of synthetic
2048x1024 frames and a random horizontal flip; samples/s is measured after a warm-up, in one process.
Each pipeline yields what its training loop consumes: (a) float32 normalised images and int64 masks, as
the reference's loader does; (b) and (c) the project's datasets as training uses them, uint8 images and
masks (training normalises and widens them on the device, `cityseg.training.engine.to_device_batch`):

  (a) naive   the reference's way: PIL decode, PIL flip, torchvision v1 ToTensor + Normalize of the whole
              frame, crop last (float work on 2M pixels to keep 0.5M)
  (b) cityseg CityscapesDataset + build_transform(train=True, aug=("flip",), crop=(1024, 512)): decode,
              crop the uint8 frame first, flip only the crop, return uint8. The crop is uniform like (a)'s
              (--crop-max-class-ratio 1); training's default 0.75 re-draws class-dominated crops, at a cost
  (c) cache   CachedDataset over a `cityseg cache` entry (built once before timing; build time reported),
              the same transform

Also times decoding one frame with each decoder available (PIL, torchvision.io.decode_png, OpenCV).

    python bench/loader.py                      # ~1 minute on 2 cores once the data exists (~2 min to make)
    python bench/loader.py --frames 16 --batches 4 --min-seconds 1 --no-record   # smoke run
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import Recorder, add_common_args, add_data_args, synthetic_root, timed
from PIL import Image
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torchvision import transforms as T
from torchvision.transforms import functional as TF

CROP = (1024, 512)  # width x height


class NaiveDataset(Dataset):
    """The reference's per-sample pipeline, kept as the baseline the project is measured against."""

    def __init__(self, frames, crop: tuple[int, int]) -> None:
        from cityseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD

        self.frames = frames
        self.crop = crop
        self.to_tensor = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        frame = self.frames[index]
        image = Image.open(frame.image).convert("RGB")
        mask = Image.open(frame.label)
        if random.random() < 0.5:  # v1 RandomHorizontalFlip cannot flip a pair together: one coin for both
            image, mask = TF.hflip(image), TF.hflip(mask)
        x = self.to_tensor(image)  # (3, 1024, 2048) float32: the whole frame
        y = torch.from_numpy(np.array(mask, dtype=np.int64))  # (1024, 2048)
        width, height = self.crop
        top = random.randint(0, x.shape[1] - height)
        left = random.randint(0, x.shape[2] - width)
        return x[:, top : top + height, left : left + width].contiguous(), y[
            top : top + height, left : left + width
        ].contiguous()


def samples_per_s(dataset: Dataset, args: argparse.Namespace, worker_init=None) -> float:
    """Samples/s through a DataLoader like training uses, after `--warmup` batches (worker start-up excluded).

    Times at least `--batches` batches and at least `--min-seconds`, so fast pipelines are not timed over
    a fraction of a second.
    """
    sampler = RandomSampler(dataset, replacement=True, num_samples=10**7, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        sampler=sampler,
        num_workers=args.workers,
        persistent_workers=True,
        prefetch_factor=4,
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=worker_init,
    )
    batches = iter(loader)
    for _ in range(args.warmup):
        next(batches)
    start = time.perf_counter()
    count = done = 0
    while done < args.batches or time.perf_counter() - start < args.min_seconds:
        images, _masks = next(batches)
        count += images.shape[0]
        done += 1
    seconds = time.perf_counter() - start
    del batches, loader  # stop the workers before the next pipeline starts
    return count / seconds


def decoder_ms(path: Path, repeats: int) -> dict[str, float]:
    """Milliseconds to decode one RGB PNG into a uint8 array, per decoder available here, on one thread."""
    import torchvision.io as tvio

    torch.set_num_threads(1)
    data = tvio.read_file(str(path))
    decoders = {
        "pil": lambda: np.asarray(Image.open(path).convert("RGB")),
        "torchvision": lambda: tvio.decode_png(data),  # (3, H, W); bytes already read, as PIL gets them cached
    }
    try:
        import cv2

        decoders["opencv"] = lambda: cv2.imread(str(path), cv2.IMREAD_COLOR)
    except ImportError:
        pass
    return {name: round(1000 * timed(fn, warmup=1, iters=repeats), 1) for name, fn in decoders.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=12, help="timed batches per pipeline")
    parser.add_argument("--min-seconds", type=float, default=8.0, help="time each pipeline at least this long")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches first (workers start, caches warm)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers, the same for all three")
    parser.add_argument(
        "--crop-max-class-ratio",
        type=float,
        default=1.0,
        help="cityseg's crop re-draw threshold for (b) and (c); 1 = uniform crops like (a)",
    )
    parser.add_argument("--cache", type=Path, default=None, help="cache folder (default: a temp folder, removed)")
    add_data_args(parser, frames=64)
    add_common_args(parser)
    args = parser.parse_args()

    from cityseg.data.cache import CachedDataset, ensure_cache
    from cityseg.data.dataset import CityscapesDataset, worker_init
    from cityseg.data.frames import list_frames
    from cityseg.data.transforms import build_transform

    root = synthetic_root(args.data, args.frames, prepared=True)
    rec = Recorder("loader", args)
    frames = list_frames(root, "train")
    decode = decoder_ms(frames[0].image, repeats=5)
    torch.set_num_threads(1)  # the main process only collates; the workers do the work
    transform = build_transform(train=True, aug=("flip",), crop=CROP, crop_max_class_ratio=args.crop_max_class_ratio)
    results: dict[str, float] = {}
    results["naive"] = samples_per_s(NaiveDataset(frames, CROP), args)
    results["cityseg"] = samples_per_s(CityscapesDataset(frames, transform), args, worker_init)
    with tempfile.TemporaryDirectory(prefix="cityseg-bench-cache-") as tmp:
        cache_dir = args.cache or Path(tmp) / "cache"
        start = time.perf_counter()
        ensure_cache(root, "train", None, cache_dir, workers=args.workers, progress=False)
        build_s = time.perf_counter() - start
        results["cache"] = samples_per_s(CachedDataset(cache_dir, "train", None, transform), args, worker_init)
    a, b, c = results["naive"], results["cityseg"], results["cache"]
    rec.finish(
        results={
            "samples_per_s": {k: round(v, 1) for k, v in results.items()},
            "decode_ms": decode,
            "cache_build_s": round(build_s, 1),
            "frames": len(frames),
            "batches": args.batches,
            "batch_size": args.batch_size,
            "workers": args.workers,
        },
        figure=f"samples/s: (a) naive {a:.1f}, (b) cityseg {b:.1f}, (c) cache {c:.1f}",
        ratio=f"(b)/(a) {b / a:.2f}x (target 1.3x), (c)/(a) {c / a:.1f}x (target 8x); wall time, {args.workers} workers "
        "each",
        notes=f"{len(frames)} synthetic 2048x1024 frames, crop 1024x512 (max class ratio {args.crop_max_class_ratio}) "
        f"+ flip, batch {args.batch_size}, (a) float32/int64 out as the reference, (b)/(c) uint8 out as cityseg's "
        "datasets (normalised on the device), "
        f"{args.workers} workers; cache build {build_s:.1f} s once ({len(frames) / build_s:.1f} frames/s); "
        "decode ms/frame on 1 thread: " + ", ".join(f"{k} {v}" for k, v in decode.items()),
    )


if __name__ == "__main__":
    main()
