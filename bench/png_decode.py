"""Label PNG decoding: each decoder cityseg.data.pngdecode can use, against libpng, on Cityscapes-like files.

The files are the synthetic split's ground truth as written by PIL (adaptive row filters, zlib level 6, the
way Cityscapes' own files were written): 8-bit labelIds and 16-bit instanceIds, 2048x1024. Each decoder
reads the same bytes from memory on one thread (milliseconds per file, minimum over --repeats passes); every
decoded file is checked against PIL's values. The baseline is libpng through imagecodecs, the decoder used
before cityseg had its own; "zlibng-rows" is cityseg's (zlib-ng inflate, the C row unfilter of
cityseg.data._pngrows), "wuffs" appears when pywuffs is installed, "pil" is what the official script uses.

    python bench/png_decode.py                    # 16 frames: ~10 s once the data exists
    python bench/png_decode.py --frames 4 --no-record
"""

from __future__ import annotations

import argparse
import io

import numpy as np
from common import Recorder, add_common_args, add_data_args, seconds_per_item, synthetic_root
from PIL import Image

KINDS = ("labelIds", "instanceIds")


def pil_decode(data: bytes) -> np.ndarray:
    """What the official script reads: np.asarray of the PIL image."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image)


def decoders() -> dict[str, object]:
    """name -> function(PNG bytes) -> pixels, for every fast backend installed, and PIL."""
    from cityseg.data import pngdecode

    def backend(name: str):
        decode = pngdecode._BACKENDS[name]
        return lambda data: decode(data, pngdecode.parse_header(data), pngdecode._plain_image_data(data))

    return {**{name: backend(name) for name in pngdecode._BACKENDS}, "pil": pil_decode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="passes over the files; the fastest is kept")
    add_data_args(parser, frames=16)
    add_common_args(parser)
    args = parser.parse_args()

    from cityseg.data.frames import list_frames

    root = synthetic_root(args.data, args.frames)
    frames = list_frames(root, "train", label_source="ids")[: args.frames]
    files = {
        "labelIds": [f.label_ids.read_bytes() for f in frames],
        "instanceIds": [f.instance_ids.read_bytes() for f in frames],
    }
    found = decoders()
    rec = Recorder("png-decode", args)
    for kind, data in files.items():  # every decoder gives PIL's values, before anything is timed
        reference = [pil_decode(d) for d in data]
        for name, decode in found.items():
            assert all(np.array_equal(decode(d), r) for d, r in zip(data, reference, strict=True)), (name, kind)
    ms = {
        (name, kind): seconds_per_item(decode, files[kind], args.repeats) * 1e3
        for name, decode in found.items()
        for kind in KINDS
    }

    def per_kind(name: str) -> str:
        return " / ".join(f"{ms[name, kind]:.2f}" for kind in KINDS)

    rec.finish(
        results={
            "frames": len(frames),
            "repeats": args.repeats,
            **{f"{name}_{kind}_ms": round(value, 3) for (name, kind), value in ms.items()},
        },
        figure=f"{len(frames)} frames 2048x1024, one thread, ms per labelIds / instanceIds file: "
        + "; ".join(f"{name} {per_kind(name)}" for name in found),
        ratio="against libpng (labelIds / instanceIds): "
        + "; ".join(
            f"{name} " + " / ".join(f"{ms['libpng', kind] / ms[name, kind]:.1f}x" for kind in KINDS)
            for name in found
            if name != "libpng"
        ),
        notes="files as PIL writes them (adaptive filters, zlib level 6); every decoder's values checked against "
        "PIL's; zlibng-rows = zlib-ng inflate + cityseg.data._pngrows",
    )


if __name__ == "__main__":
    main()
