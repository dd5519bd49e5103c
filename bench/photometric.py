"""Photometric distortion in a loader worker: milliseconds per 768x768 crop on one core, old vs new.

  (a) old  the torchvision composition cityseg used before (ColorJitter brightness 0.75-1.25, contrast,
           saturation 0.5-1.5, hue +-0.1 on uint8 tensors, contrast before or after saturation and hue,
           each with p 0.5); not mmsegmentation's ops, kept here only as the baseline
  (b) new  `cityseg.data.photometric.PhotoMetricDistortion` (mmsegmentation's ops: uint8 tables + OpenCV HSV)

Both run on the same (3, 768, 768) uint8 crop, one torch and one OpenCV thread (one loader worker),
over the same sequence of seeds, so each sees the mix of steps training draws (each step with p 0.5).
The figure is the mean CPU time of this thread over --draws crops (wall time too, which a busy machine
inflates); (b) is also timed with all four steps drawn (its worst case). Target (issue 14): <= 10 ms.

    python bench/photometric.py                 # ~1 minute
    python bench/photometric.py --draws 20 --no-record     # smoke run
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import torch
from common import Recorder, add_common_args
from torchvision import tv_tensors
from torchvision.transforms import v2

TARGET_MS = 10.0
CROP = 768


def old_photometric() -> v2.Transform:
    """cityseg's previous 'photometric' augmentation (torchvision factors), the baseline."""

    def maybe(transform: v2.Transform) -> v2.Transform:
        return v2.RandomApply([transform], p=0.5)

    contrast = maybe(v2.ColorJitter(contrast=(0.5, 1.5)))
    saturation_hue = v2.Compose([maybe(v2.ColorJitter(saturation=(0.5, 1.5))), maybe(v2.ColorJitter(hue=(-0.1, 0.1)))])
    return v2.Compose(
        [
            maybe(v2.ColorJitter(brightness=(0.75, 1.25))),
            v2.RandomChoice([v2.Compose([contrast, saturation_hue]), v2.Compose([saturation_hue, contrast])]),
        ]
    )


def ms_per_crop(transform, image: tv_tensors.Image, draws: int) -> tuple[float, float]:
    """Mean (CPU, wall) milliseconds per crop over `draws` seeds (0, 1, ...), after one untimed call. The
    output is made contiguous, as the loader hands it on. CPU time is this thread's: what the crop costs
    a core, however busy the machine is (wall time grows with the load)."""
    transform(image)
    cpu = wall = 0.0
    for seed in range(draws):
        torch.manual_seed(seed)
        cpu_start, wall_start = time.thread_time(), time.perf_counter()
        transform(image).contiguous()
        cpu += time.thread_time() - cpu_start
        wall += time.perf_counter() - wall_start
    return 1000 * cpu / draws, 1000 * wall / draws


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=200, help="crops (seeds) timed per version")
    add_common_args(parser)
    args = parser.parse_args()

    from cityseg.data.photometric import PhotoMetricDistortion, PhotometricSpec

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    rec = Recorder("photometric", args)
    rng = np.random.default_rng(0)
    image = tv_tensors.Image(torch.from_numpy(rng.integers(0, 256, (3, CROP, CROP), dtype=np.uint8)))  # (3, H, W)
    old, old_wall = ms_per_crop(old_photometric(), image, args.draws)
    new, new_wall = ms_per_crop(PhotoMetricDistortion(), image, args.draws)
    worst, _ = ms_per_crop(PhotoMetricDistortion(PhotometricSpec(p=1.0)), image, max(10, args.draws // 4))
    rec.finish(
        results={
            "cpu_ms_per_crop": {"old": round(old, 2), "new": round(new, 2), "new_all_steps": round(worst, 2)},
            "wall_ms_per_crop": {"old": round(old_wall, 2), "new": round(new_wall, 2)},
            "crop": [CROP, CROP],
            "draws": args.draws,
            "threads": 1,
        },
        figure=f"CPU ms per {CROP}x{CROP} crop, 1 thread: (a) old torchvision {old:.1f}, (b) new mmseg tables+OpenCV "
        f"{new:.1f} (all four steps drawn: {worst:.1f}); wall ms {old_wall:.1f} / {new_wall:.1f}",
        ratio=f"(a)/(b) CPU time {old / new:.1f}x, wall {old_wall / new_wall:.1f}x (1 thread each); (b) {new:.1f} ms vs target {TARGET_MS:.0f} ms "
        + ("(met)" if new <= TARGET_MS else "(missed)"),
        notes=f"mean over {args.draws} seeds (each step with p 0.5, as in training); opencv {cv2.__version__}",
    )


if __name__ == "__main__":
    main()
