"""`cityseg train`: one run of the cross-validation (one fold, or the full fit), plus the recipe options
that `cityseg cv` shares."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from cityseg.cli.common import add_command, size_type
from cityseg.config import LOSSES, OPTIMIZERS, RECIPES, SCHEDULES, SELECT, TrainConfig, resolve_config

# Options that change the recipe use SUPPRESS as default, so only what the user typed overrides it.
_UNSET = argparse.SUPPRESS


def optional_size(text: str) -> tuple[int, int] | None:
    """'WxH', or 'none'/'full' for the images' own resolution."""
    return None if text.lower() in ("none", "full") else size_type(text)


def scale_range_type(text: str) -> tuple[float, float] | None:
    """'LO,HI' (e.g. 0.5,2.0), or 'none'."""
    if text.lower() == "none":
        return None
    try:
        lo, hi = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a scale range; write LO,HI, e.g. 0.5,2.0") from None
    return lo, hi


def name_list(text: str) -> tuple[str, ...]:
    """A comma list like 'flip,photometric'; 'none' or '' for an empty list."""
    return () if text.lower() in ("", "none") else tuple(part.strip() for part in text.split(",") if part.strip())


def optional_path(text: str) -> str | None:
    """A path or name, or 'none'."""
    return None if text.lower() == "none" else text


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The recipe and one option per TrainConfig field; unset options keep the recipe's value."""
    recipes = " | ".join(f"{r.name}: {r.description.rstrip('.')}" for r in RECIPES.values())
    group = parser.add_argument_group("Recipe", "a named default config; the options below override single fields")
    group.add_argument("--recipe", choices=list(RECIPES), default="seed", help=recipes)

    group = parser.add_argument_group("Optimization")
    group.add_argument("--epochs", type=int, default=_UNSET, help="training epochs (recipe default)")
    group.add_argument("--batch-size", type=int, default=_UNSET, help="images per step per process")
    group.add_argument("--lr", type=float, default=_UNSET, help="base learning rate (decoder and head)")
    group.add_argument("--encoder-lr-mult", type=float, default=_UNSET, help="encoder lr = lr * this")
    group.add_argument("--weight-decay", type=float, default=_UNSET, help="weight decay")
    group.add_argument("--optimizer", choices=OPTIMIZERS, default=_UNSET, help="optimizer")
    group.add_argument("--schedule", choices=SCHEDULES, default=_UNSET, help="lr schedule, stepped every iteration")
    group.add_argument("--warmup-epochs", type=float, default=_UNSET, help="linear lr warm-up length in epochs")
    group.add_argument("--min-lr", type=float, default=_UNSET, help="final lr of the cosine schedule")

    group = parser.add_argument_group("Data and augmentation (sizes are WIDTHxHEIGHT)")
    group.add_argument("--size", type=optional_size, default=_UNSET, metavar="WxH",
                       help="resize every image before training, e.g. 1024x512; 'none' = full resolution")
    group.add_argument("--crop", type=optional_size, default=_UNSET, metavar="WxH", help="training crop, e.g. 768x768; 'none'")
    group.add_argument("--scale-range", type=scale_range_type, default=_UNSET, metavar="LO,HI", help="random scale LO,HI, e.g. 0.5,2.0")
    group.add_argument("--aug", type=name_list, default=_UNSET, metavar="LIST",
                       help="comma list of named augmentations, e.g. flip,scale-crop,photometric ('none' for none; "
                       "an unknown name lists the valid ones)")
    group.add_argument("--labels", choices=("trainIds", "ids"), default=_UNSET,
                       help="train from labelTrainIds PNGs (after `cityseg prepare`) or the shipped labelIds")
    group.add_argument("--workers", type=int, default=_UNSET, help="data-loading processes per training process")
    group.add_argument("--cache", default=_UNSET, metavar="DIR", help="decoded-image cache folder (see `cityseg cache`)")
    group.add_argument("--gpu-aug", action=argparse.BooleanOptionalAction, default=_UNSET,
                       help="run the colour augmentations (photometric, color-jitter, gaussian-blur) on the training "
                       "device instead of in the loader workers (photometric batched, the same mmsegmentation ops "
                       "and draws): use it when the printed data wait share is high on a fast GPU (photometric "
                       "costs ~5 ms of a CPU core per 768x768 crop)")

    group = parser.add_argument_group("Loss, model and selection")
    group.add_argument("--loss", choices=LOSSES, default=_UNSET, help="cross-entropy or OHEM cross-entropy")
    group.add_argument("--encoder-weights", type=optional_path, default=_UNSET, metavar="WEIGHTS",
                       help="'imagenet' (download), a local torchvision resnet34 state dict, or 'none'")
    group.add_argument("--select", choices=SELECT, default=_UNSET, help="pick the best epoch by fold val loss or mIoU")
    group.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=_UNSET,
                       help="SyncBatchNorm across GPUs under torchrun")

    group = parser.add_argument_group("Run")
    group.add_argument("--device", default=_UNSET, help="auto, cpu, cuda or cuda:N")
    group.add_argument("--amp", action=argparse.BooleanOptionalAction, default=_UNSET,
                       help="mixed precision on CUDA (bf16 where supported, else fp16)")
    group.add_argument("--compile", action=argparse.BooleanOptionalAction, default=_UNSET, help="torch.compile the model")
    group.add_argument("--seed", type=int, default=_UNSET, help="seed of the folds and of training")
    group.add_argument("--resume", action="store_true", help="continue an interrupted run from its last.pt")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The recipe with every option the user gave applied (range errors are UserErrors: exit 2)."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"recipe"}
    overrides = {name: value for name, value in vars(args).items() if name in fields}
    return resolve_config(args.recipe, **overrides)


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "train",
        help="train one model: one cross-validation fold, or the full fit on all train images",
        description="Train one model into --out: fold K of a folds.json written by `cityseg cv` (validated on "
        "that fold's held-out cities every epoch), or --full on every train image without validation. "
        "`cityseg cv` runs all folds and the full fit for you. Under torchrun it uses DDP.",
    )
    parser.add_argument("root", type=Path, help="Cityscapes folder (holds leftImg8bit/ and gtFine/)")
    parser.add_argument("--out", type=Path, required=True, default=_UNSET, metavar="DIR",
                        help="run folder to create (or continue with --resume)")
    which = parser.add_argument_group("What to train (one of)")
    which.add_argument("--fold", type=int, default=_UNSET, metavar="K", help="fold number in --folds-file")
    which.add_argument("--folds-file", type=Path, default=_UNSET, metavar="F", help="folds.json written by `cityseg cv`")
    which.add_argument("--full", action="store_true", help="train on every train image, without validation")
    add_config_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cityseg import dist
    from cityseg.errors import UserError
    from cityseg.folds import fold_ids, load_folds

    config = config_from_args(args)
    fold, folds_file = getattr(args, "fold", None), getattr(args, "folds_file", None)
    if args.full == (fold is not None):
        raise UserError("say what to train: either --fold K with --folds-file RUNS/folds.json, or --full.")
    if args.full:
        from cityseg.data import list_frames

        train_ids, val_ids = [f.id for f in list_frames(args.root, "train", label_source=config.labels)], None
    else:
        if folds_file is None:
            raise UserError("--fold needs --folds-file (the RUNS/folds.json written by `cityseg cv`).")
        train_ids, val_ids = fold_ids(load_folds(folds_file), fold)
    from cityseg.trainer import train_run

    try:
        result = train_run(args.root, args.out, config, train_ids, val_ids, resume=args.resume)
        main = dist.is_main()
    finally:
        dist.cleanup()
    if main:
        best = f"best epoch {result.best_epoch}" if val_ids else f"{len(result.rows)} epochs"
        print(f"done: {args.out} ({best}); checkpoints best.pt and last.pt, log log.jsonl")
    return 0
