"""`cityseg predict`: a trained checkpoint -> one labelIds PNG per frame, ready for evaluation or the server."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cityseg.cli.common import add_command, default_workers, non_negative_int, positive_int, size_type
from cityseg.inference import MODES, MS_SCALES, TTAS


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
        help="predict a split into labelIds PNGs for `cityseg evaluate` or the test server",
        description="Write one single-channel labelIds PNG per image of a split, at the original size, named "
        "<city>_<seq>_<frame>_leftImg8bit.png. A killed run resumes when rerun with the same arguments. The "
        "output folder may hold only files this command wrote (recorded in .cityseg-predict.json): other PNGs "
        "stop the run, and outputs of another checkpoint or setting are refused unless --overwrite is given.",
    )
    parser.add_argument("checkpoint", type=Path, help="best.pt or last.pt of a training run")
    parser.add_argument("root", type=Path, help="Cityscapes folder holding leftImg8bit/")
    parser.add_argument(
        "--split", choices=("val", "test", "train"), default="val", help="which images to predict"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder; None means predictions/ for val, test_predictions/ for test, predictions_train/ "
        "for train, in the current directory",
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

    extras = parser.add_argument_group("Visualisation")
    extras.add_argument(
        "--color-out",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write <id>_color.png and <id>_overlay.png here; must be outside the prediction folder",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Predict and print where the PNGs went and how fast."""
    from cityseg.predict import predict_split  # torch is imported only when the command runs

    result = predict_split(
        args.checkpoint,
        args.root,
        split=args.split,
        out_dir=args.out,
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
    if result.scores is not None:
        from cityseg.evaluation import format_table

        print(format_table(result.scores, bold=sys.stdout.isatty()))
    print(
        f"wrote {result.written} and kept {result.skipped} finished prediction(s) in {result.out_dir} "
        f"({result.images_per_s:.2f} images/s over {result.seconds:.1f} s)"
    )
    if args.split != "test":
        print(f"next: cityseg evaluate {result.out_dir} {args.root} --split {args.split}")
    else:
        print(f"next: cityseg submit {result.out_dir} --root {args.root}")
    return 0
