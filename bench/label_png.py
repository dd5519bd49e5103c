"""Label PNGs as cityseg writes them (encode_label_png: "Up" filter, zlib level 1) against PIL's defaults.

Predictions are written once per `cityseg predict` and decoded by every evaluation, so both sides count:
seconds to encode one 2048x1024 label map (one thread), seconds to decode it with the fast decoder the
evaluation uses (cityseg.data.pngdecode), and the file size. Two kinds of maps: the synthetic ground truth
(smooth regions, like a good model's output) and the same with 20% of 16x16 blocks relabelled at random
(the evaluation benchmark's stand-in predictions, a noisier model). Every file is checked to decode to the
same labels both ways.

    python bench/label_png.py                    # 16 maps of each kind: ~10 s once the data exists
    python bench/label_png.py --frames 4 --no-record
"""

from __future__ import annotations

import argparse
import io

import numpy as np
from common import Recorder, add_common_args, add_data_args, seconds_per_item, synthetic_root
from PIL import Image


def pil_png(labels: np.ndarray) -> bytes:
    """PIL's default PNG (adaptive filters, zlib level 6): what label maps were written with before."""
    buffer = io.BytesIO()
    Image.fromarray(labels).save(buffer, format="PNG")
    return buffer.getvalue()


def measure(maps: list[np.ndarray]) -> dict[str, float]:
    """Encode/decode seconds and mean size of both encodings over `maps`, with a round-trip check."""
    from cityseg.data.pngdecode import _fast, encode_label_png, parse_header

    def decode(data: bytes) -> np.ndarray:
        return _fast(data, parse_header(data))  # the evaluation's decoder, no file system in the timing

    encoded = {"pil": [pil_png(m) for m in maps], "cityseg": [encode_label_png(m) for m in maps]}
    for name, files in encoded.items():
        for labels, data in zip(maps, files, strict=True):
            assert np.array_equal(decode(data), labels), f"{name} encoding does not decode to the labels"
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), labels), f"PIL reads {name} wrong"
    return {
        "pil_encode_s": seconds_per_item(pil_png, maps),
        "cityseg_encode_s": seconds_per_item(encode_label_png, maps),
        "pil_decode_s": seconds_per_item(decode, encoded["pil"]),
        "cityseg_decode_s": seconds_per_item(decode, encoded["cityseg"]),
        "pil_kb": float(np.mean([len(d) for d in encoded["pil"]]) / 1024),
        "cityseg_kb": float(np.mean([len(d) for d in encoded["cityseg"]]) / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(parser, frames=16)
    add_common_args(parser)
    args = parser.parse_args()

    from cityseg.data.frames import list_frames
    from cityseg.data.pngdecode import BACKEND, decode_png
    from cityseg.evaluation.noisy import noisy_labels

    root = synthetic_root(args.data, args.frames)
    frames = list_frames(root, "train", label_source="ids")[: args.frames]
    ground_truth = [decode_png(f.label_ids)[0] for f in frames]
    rng = np.random.default_rng(0)
    noisy = [noisy_labels(gt, rng, 0.2, 16, None) for gt in ground_truth]
    rec = Recorder("label-png", args)
    kinds = {"gt": measure(ground_truth), "noisy": measure(noisy)}
    results = {f"{kind}_{key}": round(value, 5) for kind, figures in kinds.items() for key, value in figures.items()}
    results["maps"] = len(frames)

    def describe(kind: str) -> str:
        k = kinds[kind]
        return (
            f"{kind}: PIL {k['pil_encode_s'] * 1e3:.1f} ms to write, {k['pil_decode_s'] * 1e3:.1f} ms to decode, "
            f"{k['pil_kb']:.1f} KB; cityseg {k['cityseg_encode_s'] * 1e3:.1f} ms, {k['cityseg_decode_s'] * 1e3:.1f} ms, "
            f"{k['cityseg_kb']:.1f} KB"
        )

    def ratio(kind: str) -> str:
        k = kinds[kind]
        return (
            f"{kind}: write {k['pil_encode_s'] / k['cityseg_encode_s']:.1f}x, decode "
            f"{k['pil_decode_s'] / k['cityseg_decode_s']:.1f}x, size {k['cityseg_kb'] / k['pil_kb']:.2f}x"
        )

    rec.finish(
        results=results,
        figure=f"{len(frames)} label maps 2048x1024 per kind, one thread; " + "; ".join(describe(k) for k in kinds),
        ratio="; ".join(ratio(k) for k in kinds),
        notes=f"decoder: cityseg.data.pngdecode's fast path ({BACKEND}); every file decodes to the same labels in "
        "it and in PIL",
    )


if __name__ == "__main__":
    main()
