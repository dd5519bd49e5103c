"""Throughput and disk cost of `cityseg predict --images` on many small photos, against the model alone.

(a) the model's bare forward over the same decoded photos, laid out as predict_images feeds them
(channels-last) and contiguous; (b) `predict_images`: decode, forward, argmax, three PNGs per photo and the
ledger's journal, fsynced as for a user. Goals: (b) >= 0.5x (a)'s photos/s; bytes written (every write()
of the process, /proc/self/io) <= 2x the outputs. A per-photo breakdown says where (b)'s time goes.
Run `python bench/photos.py` (1000 photos of 64x32); `--photos 50 --no-record` for a smoke run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import Recorder, add_common_args
from PIL import Image

from cityseg.data.transforms import normalize
from cityseg.prediction.image_files import read_user_image
from cityseg.prediction.image_predict import predict_images
from cityseg.prediction.ledger import OutputLedger
from cityseg.prediction.overlay import color_image, overlay_image
from cityseg.prediction.predict import labels_for_batch
from cityseg.training.checkpoint import save_checkpoint
from cityseg.training.model import build_model

SIZE = (64, 32)  # (width, height) of every photo


def written_bytes() -> int:
    """Bytes this process passed to write() so far (Linux)."""
    return int(Path("/proc/self/io").read_text().split("wchar:")[1].split()[0])


def make_photos(folder: Path, count: int) -> list[np.ndarray]:
    """`count` different smooth-noise photos, saved as PNG; returns their pixels."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    pixels = []
    for index in range(count):
        coarse = rng.integers(0, 256, (4, 8, 3), np.uint8)
        image = np.asarray(Image.fromarray(coarse).resize(SIZE, Image.BICUBIC))
        Image.fromarray(image).save(folder / f"{index:05d}.png")
        pixels.append(image)
    return pixels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=1000, help="how many photos")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on both sides")
    add_common_args(parser)
    args = parser.parse_args()
    os.environ["CITYSEG_FSYNC"] = "1"  # as a user runs it
    torch.set_num_threads(args.threads)
    rec = Recorder("photos", args)
    with tempfile.TemporaryDirectory(prefix="cityseg-photos-bench-") as tmp:
        base = Path(tmp)
        torch.manual_seed(0)
        model = build_model(encoder_weights=None).eval()
        checkpoint = base / "best.pt"
        state = {"model": model.state_dict(), "epoch": 0, "config": {"size": None}, "num_classes": 19}
        save_checkpoint(checkpoint, state)
        pixels = make_photos(base / "photos", args.photos)
        inputs = [normalize(torch.from_numpy(p.copy()).permute(2, 0, 1)[None]) for p in pixels]  # (1, 3, H, W) each
        bare_s = {}
        with torch.inference_mode():
            # As predict_images feeds the model (channels-last, faster on large CPU inputs), and contiguous.
            for layout in (torch.channels_last, torch.contiguous_format):
                same = [x.contiguous(memory_format=layout) for x in inputs]
                for x in same[:5]:
                    model(x)  # warm-up
                start = time.perf_counter()
                for x in same:
                    model(x).argmax(1)
                bare_s[layout] = time.perf_counter() - start

        before = written_bytes()
        start = time.perf_counter()
        result = predict_images(checkpoint, [base / "photos"], base / "out", device="cpu", progress=False)
        predict_s = time.perf_counter() - start
        disk = written_bytes() - before
        assert result.written == args.photos and not result.failed, result
        outputs = sum(path.stat().st_size for path in (base / "out").rglob("*.png"))

        # Where the time goes: the same steps, one by one, on the first 100 photos.
        sample = [(p, np.full(p.shape[:2], 7, np.uint8)) for p in pixels[:100]]
        arrays = [[labels, color_image(labels), overlay_image(image, labels)] for image, labels in sample]
        ledger = OutputLedger(base / "parts", {"kind": "images"}, {str(i): [f"{i}.png"] for i in range(len(sample))})
        ledger.check(overwrite=False)
        ledger.commit()
        tensors = [torch.from_numpy(image.copy()) for image, _ in sample]
        steps = {
            "decode": lambda i: read_user_image(base / "photos" / f"{i:05d}.png"),
            "labels_for_batch": lambda i: labels_for_batch(model, [tensors[i]], torch.device("cpu")),
            "overlay": lambda i: overlay_image(*sample[i]),
            "3 PNGs": lambda i: [ledger.write_png(f"{i}_{k}.png", array) for k, array in enumerate(arrays[i])],
            "journal": lambda i: ledger.mark_done(str(i), {f"{i}.png": "0" * 64}),
        }
        parts = {}
        for name, step in steps.items():
            started = time.perf_counter()
            for index in range(len(sample)):
                step(index)
            parts[name] = (time.perf_counter() - started) / len(sample) * 1000
        ledger.close()

    bare, contiguous = args.photos / bare_s[torch.channels_last], args.photos / bare_s[torch.contiguous_format]
    predicted = args.photos / predict_s
    results = {
        "photos": args.photos,
        "bare_forward_photos_per_s": round(bare, 1),
        "bare_forward_contiguous_photos_per_s": round(contiguous, 1),
        "predict_images_photos_per_s": round(predicted, 1),
        "bytes_written": disk,
        "output_bytes": outputs,
        "ms_per_photo": {"forward": round(1000 / bare, 2), **{k: round(v, 2) for k, v in parts.items()}},
    }
    breakdown = ", ".join(f"{name} {ms:.1f} ms" for name, ms in results["ms_per_photo"].items())
    figure = (
        f"{args.photos} photos {SIZE[0]}x{SIZE[1]}: bare forward {bare:.1f} photos/s ({contiguous:.1f} with "
        f"contiguous inputs), predict_images "
        f"{predicted:.1f} photos/s; written {disk / 1e6:.2f} MB for {outputs / 1e6:.2f} MB of outputs; per photo: "
        f"{breakdown}"
    )
    ratio = (
        f"{predicted / bare:.2f}x the bare forward on the same inputs (goal >= 0.5x), {predicted / contiguous:.2f}x "
        f"the contiguous one; disk {disk / outputs:.2f}x the outputs (goal <= 2x)"
    )
    notes = (
        f"cpu, {args.threads} thread(s), batch 1, loader workers 0, untrained U-Net, fsync on; disk = every write() "
        "of the process (/proc/self/io wchar) during predict_images"
    )
    rec.finish(results=results, figure=figure, ratio=ratio, notes=notes)


if __name__ == "__main__":
    main()
