"""Label preparation: `cityseg prepare` with 2 workers vs the official single-process conversion.

Both convert the same polygon JSONs of a synthetic 2048x1024 tree, each in its own fresh copy (the
generated cities repeated under new names, --copies times, so the work dwarfs process start-up as on the
real 5000 files; images are hard links):
cityseg's `prepare_dataset(copy, workers=2)` and cityscapesscripts' `createTrainIdLabelImgs.main()` with
CITYSCAPES_DATASET pointing at the other copy, both timed in this process (no interpreter start-up in
either figure). The outputs are then compared file by file: bytes, and pixels where bytes differ.

    python bench/prepare.py                     # ~1.5 minutes on 2 cores after the data exists
    python bench/prepare.py --frames 32 --no-record
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from common import Recorder, add_common_args, add_data_args, synthetic_root
from PIL import Image


def replicate(raw: Path, dest: Path, copies: int) -> int:
    """Copy a Cityscapes tree with every city repeated `copies` times (renamed); returns the JSON count."""
    for src in sorted(raw.glob("*/*/*/*")):  # <kind>/<split>/<city>/<file>
        kind, split, city = src.parts[-4:-1]
        for k in range(copies):
            name = city if k == 0 else f"{city}{k}"
            target = dest / kind / split / name / src.name.replace(f"{city}_", f"{name}_", 1)
            target.parent.mkdir(parents=True, exist_ok=True)
            if src.suffix == ".json":
                shutil.copy2(src, target)  # converted beside itself: each copy its own file
            else:
                os.link(src, target)  # only read: share the bytes
    return len(list(dest.glob("gtFine/*/*/*_polygons.json")))


def run_official(root: Path) -> float:
    """Seconds for cityscapesscripts' createTrainIdLabelImgs over `root` (its progress output swallowed)."""
    from cityscapesscripts.preparation import createTrainIdLabelImgs

    saved = os.environ.get("CITYSCAPES_DATASET")
    os.environ["CITYSCAPES_DATASET"] = str(root)
    try:
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            createTrainIdLabelImgs.main()
        return time.perf_counter() - start
    finally:
        if saved is None:
            del os.environ["CITYSCAPES_DATASET"]
        else:
            os.environ["CITYSCAPES_DATASET"] = saved


def run_cityseg(root: Path, workers: int) -> float:
    """Seconds for cityseg's prepare over `root` with `workers` processes (pool start-up included)."""
    from cityseg.data.prepare import prepare_dataset  # imported before timing, as the official script is

    start = time.perf_counter()
    prepare_dataset(root, workers=workers, progress=False)
    return time.perf_counter() - start


def compare_outputs(ours: Path, official: Path) -> dict[str, int]:
    """Count label PNGs identical in bytes, identical in pixels only, different, or missing on one side."""
    names = sorted(p.relative_to(official) for p in official.glob("gtFine/*/*/*_labelTrainIds.png"))
    counts = {"files": len(names), "same_bytes": 0, "same_pixels_only": 0, "different": 0, "missing": 0}
    for name in names:
        a, b = ours / name, official / name
        if not a.is_file():
            counts["missing"] += 1
        elif a.read_bytes() == b.read_bytes():
            counts["same_bytes"] += 1
        elif np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b))):
            counts["same_pixels_only"] += 1
        else:
            counts["different"] += 1
    counts["missing"] += len(list(ours.glob("gtFine/*/*/*_labelTrainIds.png"))) - (len(names) - counts["missing"])
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="cityseg prepare's worker processes")
    parser.add_argument(
        "--copies",
        type=int,
        default=14,
        help="times each generated city is repeated (14: ~1000 labels, a fifth of Cityscapes' 5000)",
    )
    add_data_args(parser, frames=64)
    add_common_args(parser)
    args = parser.parse_args()

    raw = synthetic_root(args.data, args.frames)
    rec = Recorder("prepare", args)
    with tempfile.TemporaryDirectory(prefix="cityseg-bench-prepare-", dir=args.data) as tmp:
        ours, official = Path(tmp) / "ours", Path(tmp) / "official"
        files = replicate(raw, ours, args.copies)
        replicate(raw, official, args.copies)
        import cityseg.data.frames  # noqa: F401  (torch and all: import cost is not conversion cost)

        official_s = run_official(official)
        ours_s = run_cityseg(ours, args.workers)
        same = compare_outputs(ours, official)
    identical = same["different"] == 0 and same["missing"] == 0
    speedup = official_s / ours_s
    rec.finish(
        results={
            "official_s": round(official_s, 2),
            "cityseg_s": round(ours_s, 2),
            "speedup": round(speedup, 2),
            "workers": args.workers,
            "outputs": same,
            "identical": identical,
        },
        figure=f"{files} labels: official {official_s:.1f} s, cityseg prepare --workers {args.workers} {ours_s:.1f} s",
        ratio=f"{speedup:.2f}x (target 1.7x): wall time, cityseg's {args.workers} worker processes vs the official "
        "script's 1 process",
        notes=f"synthetic 2048x1024 annotations x{args.copies} copies; outputs {'identical' if identical else 'DIFFER'}: {same['same_bytes']} same bytes, "
        f"{same['same_pixels_only']} same pixels only, {same['different']} different, {same['missing']} missing",
    )


if __name__ == "__main__":
    main()
