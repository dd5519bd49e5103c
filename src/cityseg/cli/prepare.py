"""`cityseg prepare ROOT`: write the trainIds label PNGs that training reads."""

from __future__ import annotations

from pathlib import Path

from cityseg.cli.common import add_command, add_workers


def register(subparsers) -> None:
    """Add the `prepare` subcommand."""
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
    parser.set_defaults(func=run)


def run(args) -> int:
    """Convert, then say how many files were written and how many were already current."""
    from cityseg.data.prepare import prepare_dataset

    result = prepare_dataset(args.root, workers=args.workers, coarse=args.coarse)
    print(f"prepared {args.root}: {result.converted} converted, {result.skipped} skipped (up to date)")
    print(f"next: cityseg cv {args.root} --out runs   (or the notebook notebooks/01_train.ipynb)")
    return 0
