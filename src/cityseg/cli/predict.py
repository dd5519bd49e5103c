"""`cityseg predict`: a trained model -> one labelIds PNG per frame of a split (for evaluation or the server),
or labelIds, colour and overlay PNGs for any photos (`--images`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cityseg.cli.common import add_command, non_negative_int, positive_int, size_type
from cityseg.errors import UserError
from cityseg.prediction.options import MODES, MS_SCALES, TTAS
from cityseg.system import default_workers


def size_or_int(text: str) -> tuple[int, int]:
    """'WxH', or one number for a square window."""
    if "x" in text.lower():
        return size_type(text)
    side = positive_int(text)
    return side, side


def register(subparsers) -> None:
    """Add the `predict` subcommand."""
    parser = add_command(
        subparsers,
        "predict",
        help="predict a split into labelIds PNGs for `cityseg evaluate` or the test server, or any photos",
        description="Write one single-channel labelIds PNG per image of a split, at the original size, named "
        "<city>_<seq>_<frame>_leftImg8bit.png. With --images instead of ROOT: for every PNG/JPEG/WebP photo "
        "(files, folders searched recursively, globs; EXIF orientation applied) write <name>_labelIds.png, "
        "<name>_color.png (Cityscapes palette) and <name>_overlay.png (blend with a legend) at the photo's size, "
        "mirroring the input folders below their deepest common folder; photos that cannot be decoded are listed "
        "at the end and the exit code is 2. A killed run resumes when rerun with the same arguments. The "
        "output folder may hold only files this command wrote (recorded in .cityseg-predict.json): other PNGs "
        "stop the run, and outputs of another checkpoint or setting are refused unless --overwrite is given.",
    )
    parser.add_argument(
        "checkpoint", type=Path, help="best.pt or last.pt of a training run, or a folder written by `cityseg export`"
    )
    parser.add_argument("root", type=Path, nargs="?", help="Cityscapes folder holding leftImg8bit/ (not with --images)")
    parser.add_argument(
        "--split", choices=("val", "test", "train"), default=None, help="which images to predict; None means val"
    )
    parser.add_argument(
        "--images",
        nargs="+",
        default=None,
        metavar="PATH",
        help="predict these photos instead of a split: files, folders (recursive) or quoted globs; needs --out",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (required with --images); None means predictions/ for val, test_predictions/ for "
        "test, predictions_train/ for train, in the current directory",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the files an earlier `cityseg predict` wrote in the output folders and predict again "
        "(files it did not write are never deleted)",
    )

    inference = parser.add_argument_group("Inference")
    inference.add_argument(
        "--mode",
        choices=MODES,
        default="whole",
        help="whole: one forward per image; slide: overlapping --crop windows, logits averaged",
    )
    inference.add_argument(
        "--crop",
        type=size_or_int,
        default=None,
        metavar="WxH",
        help="sliding window size in the image the network sees (after resizing to the training size); "
        "required with --mode slide",
    )
    inference.add_argument(
        "--stride",
        type=size_or_int,
        default=None,
        metavar="WxH",
        help="step between windows, WxH or one number; None means two thirds of --crop",
    )
    inference.add_argument(
        "--tta",
        choices=TTAS,
        default="none",
        help="test-time augmentation: flip averages the mirrored image; ms-flip also scales "
        f"{', '.join(map(str, MS_SCALES))} (10 forwards per image)",
    )

    runtime = parser.add_argument_group("Runtime")
    runtime.add_argument("--batch-size", type=positive_int, default=1, help="images per forward pass")
    runtime.add_argument(
        "--device",
        default="auto",
        metavar="DEVICE",
        help="auto, cpu, cuda or cuda:N; auto uses CUDA when available (with bf16/fp16 autocast)",
    )
    runtime.add_argument(
        "--workers",
        type=non_negative_int,
        default=min(4, default_workers()),
        help="processes decoding images in parallel (0 = in the main process)",
    )
    runtime.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    runtime.add_argument(
        "--score",
        action="store_true",
        help="also score the predictions as they are written (val/train): the fast engine's numbers from the label "
        "maps in memory, identical to `cityseg evaluate`'s, printed as its table at the end; ground truth from the "
        "evaluation's ground-truth cache when fresh, else decoded from gtFine",
    )

    photos = parser.add_argument_group("Photos (--images)")
    photos.add_argument(
        "--scale",
        type=float,
        default=None,
        help="resize factor from the photo to the network input; None means as split frames: the photo's own "
        "size for a model trained at full resolution, else resized to the training width (aspect ratio kept)",
    )
    photos.add_argument(
        "--whole-limit",
        type=size_or_int,
        default=None,
        metavar="WxH",
        help="with --mode whole, photos whose network input has more pixels than this use the sliding window "
        "of this size instead (bounds memory); None means the training frame (--size, else 2048x1024)",
    )

    extras = parser.add_argument_group("Visualisation")
    extras.add_argument(
        "--color-out",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write <id>_color.png and <id>_overlay.png here; must be outside the prediction folder",
    )
    parser.set_defaults(func=run)


def _check_sources(args: argparse.Namespace) -> None:
    """Either a split of ROOT or --images, with the options that apply to it."""
    if args.images is None:
        if args.root is None:
            raise UserError(
                "pass the Cityscapes ROOT folder to predict a split, or --images PATH ... to predict photos."
            )
        if args.scale is not None or args.whole_limit is not None:
            raise UserError(
                "--scale and --whole-limit apply to --images only; a split is predicted at the training size."
            )
        return
    given = [
        name
        for name, value in (("ROOT", args.root), ("--split", args.split), ("--color-out", args.color_out))
        if value is not None
    ]
    if given:
        raise UserError(
            f"{' and '.join(given)} cannot be combined with --images (photos get their colour and overlay PNGs "
            "beside the labelIds); predict a split and photos in two commands."
        )
    if args.out is None:
        raise UserError("--images needs --out DIR, the folder for the labelIds, colour and overlay PNGs.")


def _run_images(args: argparse.Namespace) -> int:
    """Predict photos, print the summary (with every failed photo); exit 2 when any failed."""
    from cityseg.prediction.image_predict import predict_images

    result = predict_images(
        args.checkpoint,
        args.images,
        args.out,
        mode=args.mode,
        tta=args.tta,
        crop=args.crop,
        stride=args.stride,
        scale=args.scale,
        whole_limit=args.whole_limit,
        batch_size=args.batch_size,
        device=args.device,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        workers=args.workers,
    )
    print(result.summary())
    return 2 if result.failed else 0


def run(args: argparse.Namespace) -> int:
    """Predict and print where the PNGs went and how fast."""
    _check_sources(args)
    if args.images is not None:
        return _run_images(args)
    from cityseg.prediction.options import PredictOptions
    from cityseg.prediction.predict import predict_split  # torch is imported only when the command runs

    args.split = args.split or "val"
    options = PredictOptions(
        mode=args.mode,
        tta=args.tta,
        crop=args.crop,
        stride=args.stride,
        batch_size=args.batch_size,
        device=args.device,
        color_out=args.color_out,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        workers=args.workers,
        score=args.score,
    )
    result = predict_split(args.checkpoint, args.root, split=args.split, out_dir=args.out, options=options)
    if result.scores is not None:
        from cityseg.evaluation import format_table

        print(format_table(result.scores, bold=sys.stdout.isatty()))
    print(
        f"{result.model}: wrote {result.written} and kept {result.skipped} finished prediction(s) in {result.out_dir} "
        f"({result.images_per_s:.2f} images/s over {result.seconds:.1f} s)"
    )
    if args.split != "test":
        print(f"next: cityseg evaluate {result.out_dir} {args.root} --split {args.split}")
    else:
        print(f"next: cityseg submit {result.out_dir} --root {args.root}")
    return 0
