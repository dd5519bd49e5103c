"""The training commands: `cityseg recipes` (a recipe as a card of fields, values and sources, or the fields where
two differ), `cityseg cv` (k-fold cross-validation on the train split, then the final model on all of it) and
`cityseg train` (one run of it); their training options are generated from TrainConfig (`config_flags`).

    cityseg cv ROOT --out RUNS [--resume] [--only-folds 0,1]   # one device
    torchrun --nproc_per_node=4 -m cityseg cv ROOT --out RUNS   # DDP on 4 GPUs
"""

import argparse
import textwrap
from argparse import SUPPRESS
from pathlib import Path

from cityseg.cli.common import add_command, non_negative_int, positive_int
from cityseg.cli.config_flags import add_config_arguments, config_from_args
from cityseg.training.config import FOLD_SPLITS
from cityseg.training.recipes import BUILTIN, FIELD_GROUPS, RUN_SETTING

WIDTH = 100


def register_recipes(subparsers) -> None:
    parser = add_command(
        subparsers,
        "recipes",
        help="show the training recipes: every field, its value and where it comes from",
        description="Print each recipe's card: every training config field with its value (as typed after its "
        "`cv`/`train` flag), the source each group of choices follows, and where the recipe knowingly departs "
        "from its sources. A recipe is a built-in name or a .toml file (copy a built-in's file to start one). "
        "With --diff, list only the fields where two recipes differ.",
    )
    add = parser.add_argument
    add("name", nargs="?", metavar="NAME|FILE", help=f"{', '.join(BUILTIN)} or a .toml file (default: all built-ins)")
    add("--diff", metavar="OTHER", help="compare NAME with recipe OTHER: the fields whose values differ")
    parser.set_defaults(func=run_recipes)


def run_recipes(args: argparse.Namespace) -> int:
    from cityseg.errors import UserError

    if args.diff is not None and args.name is None:
        raise UserError(
            "--diff compares two recipes: name the first one too, e.g. `cityseg recipes strong --diff seed`."
        )
    if args.diff is not None:
        print(recipe_diff(args.name, args.diff))
    else:
        print("\n\n".join(recipe_card(name) for name in ([args.name] if args.name else BUILTIN)))
    return 0


def _wrapped(text: str, indent: str = "    ", first: str | None = None) -> str:
    return textwrap.fill(
        text, WIDTH, initial_indent=indent if first is None else first, subsequent_indent=indent, break_on_hyphens=False
    )


def recipe_card(name: str) -> str:
    """One recipe: its file, description, each field group with its source and values, run settings, deviations."""
    import dataclasses

    from cityseg.training.config import TrainConfig, field_text, read_recipe, resolve_config

    recipe, config = read_recipe(name), resolve_config(name)
    parents = f", extends {' <- '.join(recipe.parents)}" if recipe.parents else ""
    lines = [f"recipe {name}", f"  file {recipe.path} (sha256 {recipe.sha256}){parents}"]
    lines += [_wrapped(recipe.description or "(no description)", ""), ""]

    def rows(names: tuple[str, ...]) -> list[str]:
        width = max(len(n) for n in names)
        return [f"  {n.ljust(width)}  {field_text(n, getattr(config, n))}" for n in names]

    for group, names in FIELD_GROUPS.items():
        lines += [
            f"{group}:",
            _wrapped(recipe.sources.get(group, f"(no source given in {recipe.path.name})")),
            *rows(names),
        ]
    grouped = {n for names in FIELD_GROUPS.values() for n in names} | {"recipe"}
    lines += [f"{RUN_SETTING}:", *rows(tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in grouped))]
    if recipe.deviations:
        lines += ["deviations from its sources:", *(_wrapped(f"- {text}", first="  ") for text in recipe.deviations)]
    return "\n".join(lines)


def recipe_diff(name: str, other: str) -> str:
    """The fields where two recipes differ, one per line: field, NAME's value, OTHER's value."""
    from cityseg.report.tables import Table
    from cityseg.training.config import field_differences, resolve_config, value_text

    changed = field_differences(resolve_config(name), resolve_config(other), ("recipe",))  # same machine: same workers
    if not changed:
        return f"recipes {name} and {other} set every field alike."
    table = Table.build(("field", name, other), [(field, value_text(a), value_text(b)) for field, a, b in changed])
    return f"{len(changed)} fields differ between {name} and {other}:\n{table.text()}"


def fold_list(text: str) -> list[int]:
    """'0,1,3' -> [0, 1, 3]."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of fold numbers; write e.g. 0,1") from None


def register_cv(subparsers) -> None:
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
    parser.set_defaults(func=run_cv)


def run_cv(args: argparse.Namespace) -> int:
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


def register_train(subparsers) -> None:
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
    parser.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
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
