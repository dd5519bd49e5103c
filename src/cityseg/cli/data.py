"""The data commands: `cityseg synth` (synthetic Cityscapes), `download` (password never stored), `prepare` (the
trainIds label PNGs) and `cache` (each split decoded once into uint8 memmaps, so training reads crops, not PNGs)."""

import argparse
from pathlib import Path

from cityseg.cli.common import add_command, add_workers, non_negative_int, positive_int, size_type
from cityseg.data.layout import SPLITS


def _synth_size(text: str) -> tuple[int, int]:
    """WxH, at least the generator's minimum (smaller frames cannot show every class)."""
    from cityseg.synthetic import MIN_SIZE  # the generator's imports take ~0.5 s: not for --help

    width, height = size_type(text)
    if width < MIN_SIZE[0] or height < MIN_SIZE[1]:
        raise argparse.ArgumentTypeError(f"{text!r} is too small; use at least {MIN_SIZE[0]}x{MIN_SIZE[1]}")
    return width, height


def register_synth(subparsers) -> None:
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
    parser.set_defaults(func=run_synth)


def run_synth(args: argparse.Namespace) -> int:
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


def register_download(subparsers) -> None:
    parser = add_command(
        subparsers,
        "download",
        help="download the Cityscapes packages (needs an account)",
        description="Download gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip with your Cityscapes "
        "account. The username comes from --username or CITYSCAPES_USERNAME, the password from "
        "CITYSCAPES_PASSWORD or a prompt (without a terminal, set both variables); neither is ever written to "
        "disk. A partial download is resumed by running the same command again; each package's MD5 sum is checked.",
    )
    add = parser.add_argument
    add("--dest", type=Path, default=Path("downloads"), metavar="DIR", help="folder for the zip files")
    add("--username", metavar="NAME", help="Cityscapes username or email (default: CITYSCAPES_USERNAME)")
    packages = "package names to fetch (default: gtFine_trainvaltest.zip leftImg8bit_trainvaltest.zip)"
    add("--packages", nargs="+", metavar="NAME", help=packages)
    unpack = "unpack the zips into ROOT afterwards (e.g. cityscapes); existing files are never overwritten"
    add("--extract", type=Path, metavar="ROOT", help=unpack)
    parser.set_defaults(func=run_download)


def run_download(args) -> int:
    """Download, optionally extract, and say what comes next."""
    from cityseg.data.download import DEFAULT_PACKAGES, download, extract

    paths = download(args.dest, tuple(args.packages or DEFAULT_PACKAGES), username=args.username)
    if args.extract:
        extract(paths, args.extract)
        print(f"unpacked into {args.extract}\nnext: cityseg prepare {args.extract}")
    else:
        print(
            f"downloaded {len(paths)} packages into {args.dest}\nnext: unzip them into one folder ROOT, then run "
            "cityseg prepare ROOT"
        )
    return 0


def register_prepare(subparsers) -> None:
    parser = add_command(
        subparsers,
        "prepare",
        help="write *_gtFine_labelTrainIds.png from the polygon JSONs (run once after download)",
        description="Convert every gtFine/*/*/*_gtFine_polygons.json into a *_gtFine_labelTrainIds.png beside it "
        "with the official cityscapesscripts converter (identical to csCreateTrainIdLabelImgs, but on all "
        "cores and without CITYSCAPES_DATASET). A PNG is skipped when gtFine/<split>/cityseg-prepared.json "
        "records that it was written from its JSON's current content (size and sha256, not dates), so "
        "re-running is cheap, an interrupted run resumes and corrected annotations are converted again; each "
        "PNG is written atomically.",
    )
    parser.add_argument("root", type=Path, metavar="ROOT", help="dataset folder holding leftImg8bit/ and gtFine/")
    add_workers(parser.add_argument, "parallel processes")
    coarse = "also convert gtCoarse/*/*/*_gtCoarse_polygons.json to *_gtCoarse_labelTrainIds.png"
    parser.add_argument("--coarse", action="store_true", help=coarse)
    parser.set_defaults(func=run_prepare)


def run_prepare(args) -> int:
    """Convert, then say how many files were written and how many were already current."""
    from cityseg.data.prepare import prepare_dataset

    result = prepare_dataset(args.root, workers=args.workers, coarse=args.coarse)
    print(f"prepared {args.root}: {result.converted} converted, {result.skipped} skipped (up to date)")
    print(f"next: cityseg cv {args.root} --out runs   (or the notebook notebooks/01_train.ipynb)")
    return 0


def split_list(text: str) -> tuple[str, ...]:
    """Parse 'train,val' into known split names."""
    splits = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in splits if s not in SPLITS]
    if not splits or unknown:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated splits out of {', '.join(SPLITS)}")
    return splits


def register_cache(subparsers) -> None:
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
    parser.set_defaults(func=run_cache)


def run_cache(args) -> int:
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
