"""Label PNGs: which maintained library reads and writes them, on Cityscapes-like 2048x1024 files.

Read: PIL (the official script's reader), OpenCV (imread IMREAD_UNCHANGED), libpng via imagecodecs, and cityseg's
read_png (PIL's header, libpng's pixels where they agree), on labelIds (8-bit), instanceIds (16-bit) and
predictions as cityseg writes them: ms per file on one thread, and two threads' speed-up (above 1 only if the GIL
is released); values checked against PIL's.
Write: PIL's defaults, PIL at zlib level 1, OpenCV Up filter level 1 (encode_label_png): ms, KB, PIL's read ms.

    python bench/label_png.py       # 16 maps of each kind: ~30 s once the data exists;  --frames 4 --no-record
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from common import REPO, Recorder, add_common_args, add_data_args, seconds_per_item, synthetic_root
from imagecodecs import png_decode
from PIL import Image


def pil_read(source: Path | bytes) -> np.ndarray:
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        image.load()
        return np.asarray(image)


def decoders() -> dict[str, Callable[[Path], np.ndarray]]:
    """Each library's way to read a label PNG file, and cityseg's (which combines PIL and imagecodecs)."""
    from cityseg.data.labelpng import read_png

    return {
        "pil": pil_read,
        "opencv": lambda path: cv2.imread(str(path), cv2.IMREAD_UNCHANGED),
        "imagecodecs": lambda path: png_decode(path.read_bytes()),
        "cityseg": lambda path: read_png(path)[0],
    }


def encoders() -> dict[str, Callable[[np.ndarray], bytes]]:
    from cityseg.data.labelpng import encode_label_png

    def pil(labels: np.ndarray, **options) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(labels).save(buffer, format="PNG", **options)
        return buffer.getvalue()

    return {"pil": pil, "pil-level1": lambda m: pil(m, compress_level=1), "opencv-up-level1": encode_label_png}


def threads_speedup(decode: Callable[[Path], np.ndarray], files: list[Path]) -> float:
    """Seconds on one thread over seconds on two, decoding the same files (best of 3 each)."""

    def best(workers: int) -> float:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(decode, files * 2))
            times.append(time.perf_counter() - started)
        return min(times)

    return best(1) / best(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(parser, frames=16)
    add_common_args(parser)
    args = parser.parse_args()

    from cityseg.data.frames import list_frames

    sys.path.insert(0, str(REPO / "tests"))  # the tests' stand-in predictions
    from helpers_noisy import noisy_labels

    cv2.setNumThreads(1)
    root = synthetic_root(args.data, args.frames)
    frames = list_frames(root, "train", label_source="ids")[: args.frames]
    rng = np.random.default_rng(0)
    maps = [noisy_labels(pil_read(f.label_ids), rng, 0.2, 16, None) for f in frames]
    written = {name: [encode(m) for m in maps] for name, encode in encoders().items()}
    predictions = Path(root.parent / f".bench-label-png-{root.name}")
    predictions.mkdir(exist_ok=True)
    for k, data in enumerate(written["opencv-up-level1"]):
        (predictions / f"{k}.png").write_bytes(data)
    kinds = {
        "labelIds": [f.label_ids for f in frames],
        "instanceIds": [f.instance_ids for f in frames],
        "prediction": sorted(predictions.glob("*.png")),
    }
    rec = Recorder("label-png", args)
    results, reads = {}, []
    for kind, files in kinds.items():
        for name, decode in decoders().items():
            assert all(np.array_equal(decode(p), pil_read(p)) for p in files), f"{name} misreads {kind}"
            ms = seconds_per_item(decode, files) * 1e3
            speedup = threads_speedup(decode, files)
            results[f"read_{kind}_{name}_ms"], results[f"read_{kind}_{name}_2_threads"] = (
                round(ms, 2),
                round(speedup, 2),
            )
            reads.append(f"{kind} {name} {ms:.1f} ms ({speedup:.2f}x on 2 threads)")
    writes = []
    for name, encode in encoders().items():
        assert all(np.array_equal(pil_read(d), m) for d, m in zip(written[name], maps, strict=True)), name
        ms, kb = seconds_per_item(encode, maps) * 1e3, np.mean([len(d) for d in written[name]]) / 1024
        read_ms = seconds_per_item(pil_read, written[name]) * 1e3
        results |= {
            f"write_{name}_ms": round(ms, 2),
            f"write_{name}_kb": round(kb, 1),
            f"write_{name}_read_ms": read_ms,
        }
        writes.append(f"{name} {ms:.1f} ms, {kb:.1f} KB, PIL reads it in {read_ms:.1f} ms")
    pil_write, ours = results["write_pil_ms"], results["write_opencv-up-level1_ms"]
    rec.finish(
        results=results | {"maps": len(frames)},
        figure=f"{len(frames)} files 2048x1024 per kind, ms per file on one thread; read: "
        + "; ".join(reads)
        + "; write (noisy predictions): "
        + "; ".join(writes),
        ratio=f"write: opencv-up-level1 {pil_write / ours:.1f}x PIL's defaults; read, cityseg's read_png against PIL: "
        + ", ".join(
            f"{kind} {results[f'read_{kind}_pil_ms'] / results[f'read_{kind}_cityseg_ms']:.1f}x" for kind in kinds
        ),
        notes="every decoder's values equal PIL's on every file; 2-thread speed-up above 1 = the decoder releases "
        "the GIL",
    )


if __name__ == "__main__":
    main()
