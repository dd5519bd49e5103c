"""`cityseg synth OUT`: write a synthetic dataset in the Cityscapes layout (tests, demo, benchmarks)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cityseg.cli.common import add_command, add_workers, non_negative_int, positive_int, size_type


def _synth_size(text: str) -> tuple[int, int]:
    """WxH, at least the generator's minimum (smaller frames cannot show every class)."""
    from cityseg.synthetic import MIN_SIZE  # the generator's imports take ~0.5 s: not for --help

    width, height = size_type(text)
    if width < MIN_SIZE[0] or height < MIN_SIZE[1]:
        raise argparse.ArgumentTypeError(f"{text!r} is too small; use at least {MIN_SIZE[0]}x{MIN_SIZE[1]}")
    return width, height


def register(subparsers) -> None:
    """Add `synth` to the CLI."""
    parser = add_command(
        subparsers,
        "synth",
        help="write a synthetic Cityscapes-format dataset",
        description="Write street scenes in the exact Cityscapes layout: leftImg8bit images and gtFine "
        "polygons JSON, labelIds, instanceIds and color PNGs (rendered with cityscapesscripts) for the "
        "train, val and test splits. Every image shows all 19 evaluation classes. The same options always "
        "give the same files. Refuses a non-empty folder unless it is an earlier synthetic dataset written "
        "with the same options.",
    )
    parser.add_argument("out", type=Path, metavar="OUT", help="dataset root to create (new or empty folder)")
    add = parser.add_argument_group("Dataset shape").add_argument
    add("--size", type=_synth_size, default="512x256", metavar="WxH", help="image width x height")
    add("--train-cities", metavar="N", type=non_negative_int, default=10, help="train cities (5-fold CV needs 5+)")
    add("--val-cities", metavar="N", type=non_negative_int, default=3, help="val cities")
    add("--test-cities", metavar="N", type=non_negative_int, default=2, help="test cities")
    add("--per-city", metavar="N", type=positive_int, default=3, help="images per city")
    add("--seed", metavar="N", type=non_negative_int, default=0, help="random seed; same seed, same files")
    add = parser.add_argument_group("Execution").add_argument
    add_workers(add, "worker processes")
    add("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the dataset and say what went where."""
    from cityseg.synthetic import write_dataset

    cities = {"train": args.train_cities, "val": args.val_cities, "test": args.test_cities}
    shape = {f"{split}_cities": count for split, count in cities.items()} | {"per_city": args.per_city}
    images = write_dataset(
        args.out, size=args.size, **shape, seed=args.seed, workers=args.workers, progress=not args.no_progress
    )
    print(f"wrote {sum(images.values())} synthetic {args.size[0]}x{args.size[1]} frames to {args.out}")
    for split, count in images.items():
        if count:
            print(f"  {split:5s} {count:4d} images in {cities[split]} cities")
    print(f"next: cityseg prepare {args.out}")
    return 0
