"""Peak memory of `cityseg predict --images` for one large photo, against the bound `--help` states.

The bound (cityseg.prediction.options.memory_bound) is BYTES_PER_PIXEL[tta] per photo pixel plus
WINDOW_BATCH_BYTES. Measured here, each in a fresh process: bytes per pixel for a model trained on small
frames (its own memory negligible), per TTA, and a full-resolution model on a photo that takes four 2048x1024
windows in one batch. CPU: resident memory; CUDA: allocated device memory. Run `python bench/photo_memory.py`
(`--device cuda` on a GPU machine; `--size 1200x800 --no-record` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from common import Recorder, add_common_args

from cityseg.cli.common import size_type
from cityseg.prediction.options import BYTES_PER_PIXEL, WINDOW_BATCH_BYTES

CHILD = """
import json, os, resource, sys, tempfile
from pathlib import Path
import numpy as np, torch
from PIL import Image
from cityseg.prediction.image_predict import predict_images
from cityseg.training.checkpoint import save_checkpoint
from cityseg.training.model import build_model
width, height, tta, size, device = sys.argv[1:]
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
tmp = Path(tempfile.mkdtemp(prefix="cityseg-photo-memory-"))
torch.manual_seed(0)
config = {"size": None if size == "none" else [int(s) for s in size.split("x")]}
state = {"model": build_model(encoder_weights=None).state_dict(), "epoch": 0, "config": config, "num_classes": 19}
save_checkpoint(tmp / "m.pt", state)
coarse = np.random.default_rng(0).integers(0, 256, (8, 8, 3), np.uint8)
for name, shape in (("warm", (64, 48)), ("photo", (int(width), int(height)))):
    (tmp / name).mkdir()
    Image.fromarray(coarse).resize(shape, Image.BICUBIC).save(tmp / name / "a.png")
predict_images(tmp / "m.pt", [tmp / "warm"], tmp / "o0", device=device, tta=tta, progress=False)
if device == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); before = torch.cuda.memory_allocated()
else:
    before = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
result = predict_images(tmp / "m.pt", [tmp / "photo"], tmp / "o", device=device, tta=tta, progress=False)
assert not result.failed, result.failed
peak = torch.cuda.max_memory_allocated() if device == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"bytes": peak - before}))
"""


def peak_bytes(width: int, height: int, tta: str, size: str, device: str) -> int:
    """Peak memory one `predict_images` call on a width x height photo adds, in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(width), str(height), tta, size, device],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "CITYSEG_FSYNC": "0"},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])["bytes"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--size", type=size_type, default=(3000, 2000), help="the photo for bytes per pixel, WxH")
    add_common_args(parser)
    args = parser.parse_args()
    rec = Recorder("photo_memory", args)
    width, height = args.size
    per_pixel = {
        tta: peak_bytes(width, height, tta, "64x32", args.device) / (width * height) for tta in BYTES_PER_PIXEL
    }
    window_photo = (2200, 1100)  # four 2048x1024 windows, one batch, for a model trained at full resolution
    windows = (
        peak_bytes(*window_photo, "none", "none", args.device) - per_pixel["none"] * window_photo[0] * window_photo[1]
    )
    results = {
        "bytes_per_pixel": {k: round(v) for k, v in per_pixel.items()},
        "window_batch_gb": round(windows / 1e9, 2),
    }
    figure = (
        f"{width}x{height} photo, model trained at 64x32: "
        + ", ".join(f"{tta} {value:.0f} B/px" for tta, value in per_pixel.items())
        + f"; four 2048x1024 windows in one batch (full-resolution model): {windows / 1e9:.2f} GB"
    )
    ratio = ", ".join(f"{tta} {per_pixel[tta] / BYTES_PER_PIXEL[tta]:.2f}x" for tta in BYTES_PER_PIXEL)
    ratio = f"measured / stated bound: {ratio}; windows {windows / WINDOW_BATCH_BYTES:.2f}x (<= 1 holds the bound)"
    notes = f"{args.device}, float32 on a CPU (autocast as the checkpoint says on CUDA), each peak in a fresh process"
    rec.finish(results=results, figure=figure, ratio=ratio, notes=notes)


if __name__ == "__main__":
    main()
