"""`cityseg cache`: decode each split once into uint8 memmaps so training reads crops, not PNGs."""

from __future__ import annotations

import argparse
from pathlib import Path

from cityseg.cli.common import add_command, add_workers, size_type
from cityseg.data.layout import SPLITS


def split_list(text: str) -> tuple[str, ...]:
    """Parse 'train,val' into known split names."""
    splits = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in splits if s not in SPLITS]
    if not splits or unknown:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated splits out of {', '.join(SPLITS)}")
    return splits


def register(subparsers) -> None:
    """Add the `cache` subcommand."""
    parser = add_command(
        subparsers,
        "cache",
        help="decode the dataset once into memmaps for fast training",
        description="Decode every image and trainIds label of the chosen splits once, at the training size, "
        "into uint8 memmaps (images (N, H, W, 3), labels (N, H, W)) with an index of the sources. Training "
        "with --cache DIR then reads crops straight from them instead of decoding PNGs each epoch. A rerun "
        "re-decodes only frames whose source changed; an interrupted build is never used and is redone. "
        "The cache holds 4 bytes per pixel (29 GB for the 3475 train+val frames at 2048x1024, 7.3 GB at "
        "1024x512). ROOT itself is only read. A second build of the same entry waits for the first (at most "
        "CITYSEG_LOCK_TIMEOUT seconds, default 3600, then it stops naming the process in its way).",
    )
    parser.add_argument("root", type=Path, metavar="ROOT", help="Cityscapes folder (holds leftImg8bit/ and gtFine/)")
    add = parser.add_argument_group("What to cache").add_argument
    size = (
        "training resolution, e.g. 1024x512 (images bilinear+antialias, labels nearest). Training uses an entry at its "
        "--size, or a full-resolution one when random scaling can enlarge crops (default: the images' size)"
    )
    add("--size", type=size_type, metavar="WxH", help=size)
    add("--splits", type=split_list, default="train,val", metavar="LIST", help="comma-separated splits")
    labels = "trainIds: the *_labelTrainIds.png of `cityseg prepare`; ids: map the shipped *_labelIds.png"
    add("--labels", choices=("trainIds", "ids"), default="trainIds", help=labels)
    add = parser.add_argument_group("Where and how").add_argument
    out = "cache folder; must be new, empty or an earlier cache (default: ROOT/../cityseg-cache, outside the dataset)"
    add("--out", type=Path, metavar="DIR", help=out)
    add_workers(add, "decoding processes")
    add("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def run(args) -> int:
    """Build or refresh each split's entry and say where it is."""
    from cityseg.data.cache import build_cache, default_cache_dir

    out = args.out if args.out is not None else default_cache_dir(args.root)
    results = build_cache(args.root, args.splits, args.size, out, args.workers, args.labels, not args.no_progress)
    for r in results:
        what = {"fresh": "up to date", "built": "built", "rebuilt": "rebuilt"}[r.status]
        detail = f" ({r.decoded} decoded, {r.reused} reused)" if r.status != "fresh" else ""
        print(f"{r.split}: {r.frames} frames {what}{detail} in {r.path}")
    size = f" --size {args.size[0]}x{args.size[1]}" if args.size else ""
    print(f"next: pass --cache {out}{size} to `cityseg cv` or `cityseg train` (they build what is missing)")
    return 0
