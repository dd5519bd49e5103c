"""Peak device memory and time of `cityseg predict --images` on one large photo: the sliding window it takes
above the training frame (the default) against a single whole-image forward of the same photo.

The claim checked: a photo larger than the training frame needs no more memory per forward than a
Cityscapes frame; what grows with the photo is only the class scores (19 float32 per pixel, a few copies).
The model is an untrained U-Net (weights do not change memory or time); the photo is smooth noise.

    python bench/photo_memory.py --device cuda            # on a GPU machine
    python bench/photo_memory.py --size 1200x800 --no-record   # a smoke run on a CPU
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import Recorder, add_common_args
from PIL import Image

from cityseg.cli.common import size_type
from cityseg.prediction.image_predict import predict_images
from cityseg.training.checkpoint import save_checkpoint
from cityseg.training.model import build_model


def photo(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """Smooth random colours at `size` (width, height), JPEG-like content without a dataset."""
    coarse = np.random.default_rng(seed).integers(0, 256, (max(2, size[1] // 50), max(2, size[0] // 50), 3), np.uint8)
    return Image.fromarray(coarse).resize(size, Image.BICUBIC)


def measure(checkpoint: Path, folder: Path, out: Path, device: str, whole_limit) -> tuple[float, float | None]:
    """(seconds, peak GiB on CUDA) of one prediction run over `folder`."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = predict_images(checkpoint, [folder], out, device=device, progress=False, whole_limit=whole_limit)
    assert not result.failed, result.failed
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    return seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=size_type, default=(6000, 4000), help="the large photo, WxH")
    add_common_args(parser)
    args = parser.parse_args()
    rec = Recorder("photo_memory", args)
    with tempfile.TemporaryDirectory(prefix="cityseg-photo-bench-") as tmp:
        base = Path(tmp)
        torch.manual_seed(0)
        checkpoint = base / "best.pt"  # trained at full resolution: the training frame is 2048x1024
        save_checkpoint(
            checkpoint,
            {
                "model": build_model(encoder_weights=None).state_dict(),
                "epoch": 0,
                "config": {"size": None},
                "num_classes": 19,
            },
        )
        folders = {"frame": base / "frame", "large": base / "large"}
        for name, size in (("frame", (2048, 1024)), ("large", args.size)):
            folders[name].mkdir()
            photo(size).save(folders[name] / f"{name}.jpg", quality=90)
        measure(checkpoint, folders["frame"], base / "warmup", args.device, None)  # cuDNN and allocator warm-up
        runs = {
            "frame_whole": measure(checkpoint, folders["frame"], base / "o1", args.device, None),
            "large_slide": measure(checkpoint, folders["large"], base / "o2", args.device, None),
            "large_whole": measure(checkpoint, folders["large"], base / "o3", args.device, (10**6, 10**6)),
        }
    width, height = args.size
    results = {
        name: {"seconds": round(s, 2), "peak_gib": None if p is None else round(p, 2)} for name, (s, p) in runs.items()
    }

    def text(name: str) -> str:
        seconds, peak = runs[name]
        return f"{seconds:.2f} s" + ("" if peak is None else f", peak {peak:.2f} GiB")

    figure = (
        f"2048x1024 photo whole: {text('frame_whole')}; {width}x{height} photo: sliding 2048x1024 windows "
        f"(default) {text('large_slide')}, one whole forward {text('large_whole')}"
    )
    peaks = [runs[n][1] for n in ("large_slide", "large_whole", "frame_whole")]
    ratio = (
        "n/a on CPU"
        if None in peaks
        else f"whole/sliding peak {peaks[1] / peaks[0]:.2f}x; sliding/2048x1024 frame peak {peaks[0] / peaks[2]:.2f}x"
    )
    pixels = width * height
    notes = (
        f"{args.device}, batch 1, whole images bf16 autocast on CUDA, untrained U-Net (size None), JPEG "
        f"decode and PNG writing included in the times; {pixels / 1e6:.0f} MP photo"
    )
    rec.finish(results=results, figure=figure, ratio=ratio, notes=notes)


if __name__ == "__main__":
    main()
