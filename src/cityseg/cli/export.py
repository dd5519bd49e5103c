"""`cityseg export`: a training checkpoint -> safetensors weights, an ONNX graph and a model card, checked."""

from __future__ import annotations

import argparse
from pathlib import Path

from cityseg.cli.common import add_command


def register(subparsers) -> None:
    """Add the `export` subcommand."""
    parser = add_command(
        subparsers,
        "export",
        help="write a deployable model folder: safetensors weights, ONNX graph, model card",
        description="Write OUT/model.safetensors (the network's tensors), OUT/model.onnx (uint8 RGB (batch, height, "
        "width, 3) -> float32 logits (batch, 19, height, width), normalisation and padding inside) and OUT/card.json "
        "+ card.md (the model, how `cityseg predict` runs it step by step, its training and numbers, both files' "
        "sha256). onnxruntime must match torch on a few images first, else nothing is written. `cityseg predict OUT` "
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
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
