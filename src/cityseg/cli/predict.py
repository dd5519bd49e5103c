"""`cityseg predict`: a model -> labelIds PNGs of a split (evaluation, server) or of any photos (`--images`, with
colour and overlay); `cityseg export`: a checkpoint -> safetensors weights, an ONNX graph and a model card, checked."""

import argparse
import sys
from pathlib import Path

from cityseg.cli.common import add_command, add_workers, positive_int, size_type
from cityseg.errors import UserError
from cityseg.prediction.options import DEFAULT_MAX_PIXELS, MODES, MS_SCALES, SMALLEST_WINDOW, TTAS, memory_bound


def size_or_int(text: str) -> tuple[int, int]:
    """'WxH', or one number for a square window."""
    if "x" in text.lower():
        return size_type(text)
    side = positive_int(text)
    return side, side


def register_predict(subparsers) -> None:
    parser = add_command(
        subparsers,
        "predict",
        help="predict a split into labelIds PNGs for `cityseg evaluate` or the test server, or any photos",
        description="Write one single-channel labelIds PNG per image of a split, at the original size, named "
        "<city>_<seq>_<frame>_leftImg8bit.png. With --images instead of ROOT: for every PNG/JPEG/WebP photo "
        "(files, folders searched recursively, globs; EXIF orientation applied) write <name>_labelIds.png, "
        "_color.png and _overlay.png at the photo's size, mirroring the input folders; photos that cannot be "
        "decoded or are over --max-pixels are listed at the end and the exit code is 2. A killed run resumes when "
        "rerun. The output folder may hold only files this command wrote (recorded in .cityseg-predict.json): other "
        "PNGs stop the run, and outputs of other settings are refused unless --overwrite is given.",
    )
    add = parser.add_argument
    model = "best.pt or last.pt of a training run, or a folder written by `cityseg export`"
    add("checkpoint", type=Path, metavar="CHECKPOINT", help=model)
    add("root", type=Path, nargs="?", metavar="ROOT", help="Cityscapes folder holding leftImg8bit/ (not with --images)")
    add("--split", choices=("val", "test", "train"), help="which images to predict (default: val)")
    add("--images", nargs="+", metavar="PATH", help="photos instead of a split: files, folders or quoted globs")
    default_out = "predictions/, test_predictions/ or predictions_train/ by --split"
    add("--out", type=Path, metavar="DIR", help=f"output folder, required with --images (default: {default_out})")
    add("--overwrite", action="store_true", help="delete what an earlier `cityseg predict` wrote there and redo it")

    add = parser.add_argument_group("Inference").add_argument
    add("--mode", choices=MODES, default="whole", help="whole image, or overlapping --crop windows (logits averaged)")
    side = SMALLEST_WINDOW
    add("--crop", type=size_or_int, metavar="WxH", help=f"slide window in the network's input, >= {side}x{side}")
    add("--stride", type=size_or_int, metavar="WxH", help="step between windows (default: two thirds of --crop)")
    scales = ", ".join(map(str, MS_SCALES))
    add("--tta", choices=TTAS, default="none", help=f"flip: average with the mirror; ms-flip: also at {scales}")

    add = parser.add_argument_group("Runtime").add_argument
    add("--batch-size", type=positive_int, default=1, metavar="N", help="images per forward pass")
    add("--device", default="auto", metavar="DEVICE", help="auto, cpu, cuda or cuda:N; auto uses CUDA when available")
    amp = "autocast on CUDA, or float32; recorded with the predictions (default: as the checkpoint trained)"
    add("--amp", action=argparse.BooleanOptionalAction, help=amp)
    add_workers(add, "decoding processes", at_most=4)
    add("--no-progress", action="store_true", help="hide the progress bar")
    add("--score", action="store_true", help="also score val/train predictions in memory, as `cityseg evaluate`")

    add = parser.add_argument_group("Photos (--images)").add_argument
    add("--scale", type=float, metavar="FACTOR", help="photo -> network resize (default: as split frames are)")
    limit = f"larger inputs use sliding windows of this size, >= {side}x{side} (default: the training frame)"
    add("--whole-limit", type=size_or_int, metavar="WxH", help=limit)
    bound = f"larger photos are refused by name, so one needs at most {memory_bound()} (more in proportion)"
    add("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS, metavar="N", help=bound)
    add = parser.add_argument_group("Visualisation").add_argument
    add("--color-out", type=Path, metavar="DIR", help="also write colour and overlay PNGs here (not inside --out)")
    parser.set_defaults(func=run_predict)


def _check_sources(args: argparse.Namespace) -> None:
    """Either a split of ROOT or --images, with the options that apply to it."""
    if args.images is None and args.root is None:
        raise UserError("pass the Cityscapes ROOT folder to predict a split, or --images PATH ... to predict photos.")
    if args.images is None:
        given = [flag for flag, value in (("--scale", args.scale), ("--whole-limit", args.whole_limit)) if value]
        given += ["--max-pixels"] * (args.max_pixels != DEFAULT_MAX_PIXELS)
        if given:
            raise UserError(f"{' and '.join(given)} apply to --images only; a split is predicted at the training size.")
        return
    given = [
        flag for flag, value in (("ROOT", args.root), ("--split", args.split), ("--color-out", args.color_out)) if value
    ]
    if given:
        raise UserError(
            f"{' and '.join(given)} cannot be combined with --images (photos get their colour and overlay PNGs "
            "beside the labelIds); predict a split and photos in two commands."
        )
    if args.out is None:
        raise UserError("--images needs --out DIR, the folder for the labelIds, colour and overlay PNGs.")


def run_predict(args: argparse.Namespace) -> int:
    """Predict, print what was written and what to do next."""
    _check_sources(args)
    common = {"mode": args.mode, "tta": args.tta, "crop": args.crop, "stride": args.stride, "amp": args.amp}
    common.update(batch_size=args.batch_size, device=args.device, overwrite=args.overwrite, workers=args.workers)
    common["progress"] = not args.no_progress
    if args.images is not None:
        from cityseg.prediction.image_predict import predict_images  # torch is imported only when the command runs

        limits = {"scale": args.scale, "whole_limit": args.whole_limit, "max_pixels": args.max_pixels}
        photos = predict_images(args.checkpoint, args.images, args.out, **limits, **common)
        print(photos)
        if photos.outputs:
            print(f"next: look at the overlays, {args.out}/**/*_overlay.png")
        return 2 if photos.failed else 0
    from cityseg.prediction.predict import predict_split

    args.split = args.split or "val"
    where = {"split": args.split, "out_dir": args.out, "color_out": args.color_out}
    result = predict_split(args.checkpoint, args.root, **where, score=args.score, **common)
    if result.scores is not None:
        from cityseg.evaluation import format_table

        print(format_table(result.scores, bold=sys.stdout.isatty()))
    print(result)
    if args.split != "test":
        print(f"next: cityseg evaluate {result.out_dir} {args.root} --split {args.split}")
    else:
        print(f"next: cityseg submit {result.out_dir} --root {args.root}")
    return 0


def register_export(subparsers) -> None:
    parser = add_command(
        subparsers,
        "export",
        help="write a deployable model folder: safetensors weights, ONNX graph, model card",
        description="Write OUT/model.safetensors (the network's tensors), OUT/model.onnx (uint8 RGB (batch, height, "
        "width, 3) -> float32 logits (batch, 19, height, width), normalisation and padding inside) and OUT/card.json "
        "+ card.md (the model, how `cityseg predict` runs it step by step, its training and numbers, both files' "
        "sha256). onnxruntime must match torch on a few images first, else nothing is written. Architectures that "
        "cannot be exported to ONNX (docs/models.md) get no model.onnx; their card says why. `cityseg predict OUT` "
        "takes the folder like a checkpoint. docs/export.md says more.",
    )
    add = parser.add_argument
    model = "best.pt or last.pt of a run (RUNS/full/best.pt: the final model)"
    add("checkpoint", type=Path, metavar="CHECKPOINT", help=model)
    add("--out", type=Path, required=True, metavar="DIR", help="folder to create (e.g. model/)")
    card = (
        "the `cityseg evaluate` JSON of this model's predictions, for the card's numbers; CV numbers come from "
        "summary.json of the checkpoint's runs folder when it is there"
    )
    add("--eval", type=Path, metavar="EVAL_JSON", help=card)
    check = (
        "photos (files, folders, globs) for the ONNX-vs-torch check; large photos make it slow (it runs on the CPU) "
        "(default: four cuts of a synthetic street scene)"
    )
    add("--check-images", nargs="+", metavar="PATH", help=check)
    add("--overwrite", action="store_true", help="replace the files of an earlier export in OUT (others are kept)")
    parser.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    """Export, printing each step and the parity figures."""
    from cityseg.prediction.export import export_model  # torch and onnx are imported only when the command runs
    from cityseg.prediction.image_files import find_images, read_user_image

    check_images = None
    if args.check_images is not None:
        check_images = [(str(item.path), read_user_image(item.path)) for item in find_images(args.check_images)]
    result = export_model(
        args.checkpoint,
        args.out,
        eval_json=args.eval,
        check_images=check_images,
        overwrite=args.overwrite,
        log=lambda line: print(line, flush=True),
    )
    print(f"exported {result.model} to {result.out_dir} in {result.seconds:.0f} s")
    print(f"next: cityseg predict {result.out_dir} --images PHOTOS --out DIR   (or read {result.out_dir}/card.md)")
    return 0
