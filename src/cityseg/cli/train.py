"""`cityseg train`: one run of the cross-validation (one fold, or the full fit); its training options
(shared with `cityseg cv`) are generated from TrainConfig in cityseg.cli.config_flags."""

from __future__ import annotations

import argparse
from argparse import SUPPRESS
from pathlib import Path

from cityseg.cli.common import add_command, non_negative_int
from cityseg.cli.config_flags import add_config_arguments, config_from_args


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "train",
        help="train one model: one cross-validation fold, or the full fit on all train images",
        description="Train one model into --out: fold K of a folds.json written by `cityseg cv` (validated on "
        "that fold's held-out cities every epoch), or --full on every train image without validation. "
        "`cityseg cv` runs all folds and the full fit for you. Under torchrun it uses DDP.",
    )
    add = parser.add_argument
    add("root", type=Path, metavar="ROOT", help="Cityscapes folder (holds leftImg8bit/ and gtFine/)")
    add("--out", type=Path, required=True, metavar="DIR", help="run folder to create (or continue with --resume)")
    add = parser.add_argument_group("What to train (one of)").add_argument
    add("--fold", type=non_negative_int, default=SUPPRESS, metavar="K", help="fold number in --folds-file")
    add("--folds-file", type=Path, default=SUPPRESS, metavar="FILE", help="folds.json written by `cityseg cv`")
    add("--full", action="store_true", help="train on every train image, without validation")
    add_config_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cityseg.errors import UserError
    from cityseg.training import dist
    from cityseg.training.folds import fold_ids, load_folds

    config = config_from_args(args)
    fold, folds_file = getattr(args, "fold", None), getattr(args, "folds_file", None)
    if args.full == (fold is not None):
        raise UserError("say what to train: either --fold K with --folds-file RUNS/folds.json, or --full.")
    if args.full:
        from cityseg.data.frames import list_frames

        train_ids, val_ids = [f.id for f in list_frames(args.root, "train", label_source=config.labels)], None
    else:
        if folds_file is None:
            raise UserError("--fold needs --folds-file (the RUNS/folds.json written by `cityseg cv`).")
        train_ids, val_ids = fold_ids(load_folds(folds_file), fold)
    from cityseg.training.trainer import train_run

    try:
        result = train_run(args.root, args.out, config, train_ids, val_ids, resume=args.resume)
        main = dist.is_main()
    finally:
        dist.cleanup()
    if main:
        best = f"best epoch {result.best_epoch}" if val_ids else f"{len(result.rows)} epochs"
        print(f"done: {args.out} ({best}); checkpoints best.pt and last.pt, log log.jsonl")
        if val_ids:
            runs = Path(folds_file).parent
            print(
                f"next: the other folds the same way, or: cityseg cv {args.root} --out {runs} --resume (the same options)"
            )
        else:
            print(f"next: cityseg predict {args.out / 'best.pt'} {args.root} --out predictions   (val predictions)")
    return 0
