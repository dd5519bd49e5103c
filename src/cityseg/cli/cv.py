"""`cityseg cv`: k-fold cross-validation on the train split, then the final model on all of it.

Launch (see cityseg.training.cv for the run-folder layout):

    cityseg cv ROOT --out RUNS                                  # one device
    torchrun --nproc_per_node=4 -m cityseg cv ROOT --out RUNS   # DDP on 4 GPUs
    cityseg cv ROOT --out RUNS --only-folds 0,1                 # some folds only (e.g. one process per GPU)
    cityseg cv ROOT --out RUNS --resume                         # skip finished folds, finish the rest
"""

from __future__ import annotations

import argparse
from argparse import SUPPRESS
from pathlib import Path

from cityseg.cli.common import add_command, positive_int
from cityseg.cli.config_flags import add_config_arguments, config_from_args
from cityseg.training.config import FOLD_SPLITS


def fold_list(text: str) -> list[int]:
    """'0,1,3' -> [0, 1, 3]."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of fold numbers; write e.g. 0,1") from None


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "cv",
        help="cross-validate on the train split, then train the final model on all of it",
        description="Split the train images into folds (by city by default, so no city is on both sides), "
        "train one model per fold validated on its held-out cities every epoch, then train the final model on "
        "every train image for the median of the folds' best epochs (--select loss/miou) or the recipe's epochs "
        "(--select last), on the folds' lr schedule stopped there. The CV number scores each fold at the median of "
        "the other folds' best epochs (never at an epoch its own cities chose); the folds' best-epoch scores are "
        "printed beside it as selected (optimistic). Writes RUNS/folds.json, RUNS/fold_<k>/, RUNS/full/ and "
        "RUNS/summary.json. The official val split is never used to choose anything.",
    )
    parser.add_argument("root", type=Path, metavar="ROOT", help="Cityscapes folder (holds leftImg8bit/ and gtFine/)")
    out_help = "runs folder (folds.json, fold_<k>/, full/, summary.json)"
    parser.add_argument("--out", type=Path, required=True, metavar="RUNS", help=out_help)
    add = parser.add_argument_group("Folds").add_argument
    add("--folds", type=positive_int, default=5, metavar="N", help="number of folds (at least 2)")
    add("--split", choices=FOLD_SPLITS, default="city", help="city: whole cities per fold; random: shuffled KFold")
    only = (
        "train only these folds, e.g. 0,1 (default: all). Processes with other folds may train the same RUNS at the "
        "same time; the full fit is left to a later `cv --resume`"
    )
    add("--only-folds", type=fold_list, default=SUPPRESS, metavar="LIST", help=only)
    add_config_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cityseg.training import dist
    from cityseg.training.cv import run_cv

    config = config_from_args(args)
    only = getattr(args, "only_folds", None)
    try:
        summary = run_cv(args.root, args.out, config, args.folds, args.split, config.seed, args.resume, only)
        main = dist.is_main()
    finally:
        dist.cleanup()
    if main:
        print(_describe(summary, args.root, args.out))
    return 0


def _describe(summary: dict, root: Path, out: Path) -> str:
    """What the runs folder holds now, then the commands that come next."""
    from cityseg.report.results import summary_text

    done, full = sum(1 for fold in summary["folds"] if fold["finished"]), summary["full"]
    lines = [f"cross-validation: {done}/{summary['k']} folds finished ({summary['split']} split) in {out}"]
    lines.append(summary_text(summary))
    if full is not None:
        state = "finished" if full["finished"] else "not finished"
        lines.append(
            f"full model: {summary['chosen_epochs']} epochs of the folds' {full['schedule_epochs']}-epoch "
            f"lr schedule, {state} ({out / 'full'})"
        )
    elif summary["chosen_epochs"] is not None:  # --only-folds leaves the full fit to `cv --resume`
        lines.append(f"full model: {summary['chosen_epochs']} epochs, not started")
    else:
        lines.append("full model: waits until every fold is finished")
    if full is None or not full["finished"]:
        return "\n".join([*lines, f"next: cityseg cv {root} --out {out} --resume (with the same options)"])
    predictions = Path("predictions")
    return "\n".join(
        [
            *lines,
            f"next: cityseg predict {out / 'full' / 'best.pt'} {root} --out {predictions}   (val predictions)",
            f"      cityseg evaluate {predictions} {root}   (official scores into {predictions}-eval/val.json)",
            f"      cityseg report {out} --eval {predictions}-eval/val.json --predictions {predictions}",
        ]
    )
