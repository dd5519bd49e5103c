"""`cityseg submit`: check test-split predictions and zip them for the Cityscapes benchmark server."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from cityseg.cli.common import add_command, add_workers, positive_int, size_type


def register(subparsers) -> None:
    """Add the `submit` subcommand."""
    parser = add_command(
        subparsers,
        "submit",
        help="check test predictions and zip them for the Cityscapes benchmark server",
        description="Check a folder of test-split labelIds PNGs the way the benchmark server (pixel-level semantic "
        "labeling) would: one PNG per test image named <city>_<seq>_<frame>*.png, single channel, official "
        "labelIds 0..33, full size. Then write them flat at the top level of a zip, atomically. Upload the zip "
        "on the Cityscapes website.",
    )
    add = parser.add_argument
    add("pred_dir", type=Path, metavar="PRED_DIR", help="folder of test prediction PNGs (searched recursively)")
    add("--out", type=Path, default=Path("submission.zip"), metavar="FILE", help="zip file to write")
    add("--overwrite", action="store_true", help="replace an existing zip with other contents")
    add_workers(add, "threads decoding PNGs")
    add = parser.add_argument_group(
        "What to expect (default: the real test split, 1525 images of 2048x1024)"
    ).add_argument
    add(
        "--expect", type=positive_int, metavar="N", help="frames expected (default: 1525, or the test frames of --root)"
    )
    add("--root", type=Path, metavar="ROOT", help="expect exactly the test frames and image sizes of this dataset")
    add("--size", type=size_type, metavar="WxH", help="prediction size without --root (default: 2048x1024)")
    parser.set_defaults(func=run)


def run(args) -> int:
    """Check, zip, and say where the zip is."""
    from cityseg.errors import UserError
    from cityseg.evaluation import TrainIdsWarning
    from cityseg.prediction.submit import make_submission

    if args.root is not None and args.size is not None:
        raise UserError(
            "--size and --root both set the expected size; with --root the test images' sizes are used, so drop --size."
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TrainIdsWarning)
        options = {"root": args.root, "size": args.size, "overwrite": args.overwrite, "workers": args.workers}
        out = make_submission(args.pred_dir, args.out, args.expect, **options)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    print(f"next: upload {out} at https://www.cityscapes-dataset.com/submit/")
    return 0
