"""What the notebooks show and run, one call per cell: tables and figures of the machine, the dataset, the folds,
the config and the scores (from the run files the PDF report reads), and steps that skip or refuse in the
notebook's words: its parameters (papermill passes plain strings and numbers), not the CLI's options.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cityseg.errors import UserError
from cityseg.labels import CLASS_NAMES
from cityseg.report.tables import Score, Table
from cityseg.training import config as configs
from cityseg.training.config import TrainConfig, field_text, parse_size
from cityseg.training.recipes import FIELD_GROUPS
from cityseg.training.runfolder import load_log, read_run_config, run_names

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Each notebook's parameter for a CLI option (mostly the option in capitals); in 01_train any other training option
# is a key of OVERRIDES.
_PARAMETERS = {
    "01_train": {"out": "RUNS_DIR", "resume": "running the cell again"}
    | {name: name.upper() for name in ("recipe", "epochs", "size", "workers", "device", "encoder_weights", "cache")}
    | {"folds": "FOLDS", "split": "SPLIT"},
    "02_evaluate": {"overwrite": "OVERWRITE = True", "allow_mismatch": "COMPARE_ALLOW_MISMATCH = True"}
    | {"out": "output path", "images": "IMAGES_DIR", "json": "EVAL_JSON", "eval": "COMPARE_EVALS"}
    | {"labels": "COMPARE_LABELS"}
    | {name: name.upper() for name in ("mode", "crop", "tta", "amp", "batch_size", "device", "workers")},
}
# An option with the words around it that its parameter replaces: "pass --out folder", "--overwrite (overwrite=True)".
_OPTION = re.compile(r"([Pp]ass )?(?<![\w-])--([a-z][a-z-]*)( folder| \(\w+=\w+\))?")


def parameter_name(option: str, notebook: str) -> str | None:
    """The parameter of `notebook` ("01_train", "02_evaluate") that does what a CLI option (`batch_size`) does."""
    overrides = notebook == "01_train" and option in TrainConfig.__dataclass_fields__
    return _PARAMETERS[notebook].get(option, f'OVERRIDES["{option}"]' if overrides else None)


def in_notebook_words(message: str, notebook: str) -> str:
    """`message` with each CLI option named by the notebook's parameter ("pass --overwrite" -> "set OVERWRITE =
    True"); commands quoted in backticks keep their options."""

    def word(option: re.Match) -> str:
        name = parameter_name(option[2].replace("-", "_"), notebook)
        return option[0] if name is None else {None: "", "pass ": "set ", "Pass ": "Set "}[option[1]] + name

    return "`".join(part if i % 2 else _OPTION.sub(word, part) for i, part in enumerate(message.split("`")))


def notebook_errors(notebook: str) -> None:
    """From here on a UserError shows as its one paragraph, as the CLI shows it (`%tb` shows the traceback), in
    the words of `notebook`."""
    from IPython import get_ipython

    def show(shell, kind, error, traceback, tb_offset=None) -> None:
        error.args = (in_notebook_words(str(error), notebook),)
        shell.showtraceback((kind, error, traceback), exception_only=True)

    if (shell := get_ipython()) is not None:
        shell.set_custom_exc((UserError,), show)


def require_dataset(root: Path, splits: Sequence[str] = ("train", "val")) -> Path:
    """Stop a notebook early, with the download steps, when the dataset folder is missing or empty."""
    root = Path(root)
    if not root.is_dir() or not any(p for p in root.iterdir() if not p.name.startswith(".")):
        raise UserError(
            f"no Cityscapes dataset in {root.resolve()}. Get gtFine_trainvaltest.zip (241 MB) and "
            "leftImg8bit_trainvaltest.zip (11 GB) from https://www.cityscapes-dataset.com (free account), either "
            f"with `cityseg download --extract {root}` or by downloading both zips and unzipping them into {root}; "
            f"then run `cityseg prepare {root}` to write the trainIds labels. To try the whole pipeline on "
            "synthetic data first, run `make demo` (under 15 minutes on 2 CPU cores)."
        )
    from cityseg.data.frames import validate_root

    validate_root(root, splits=splits)
    return root


def is_synthetic(root: Path | None) -> bool:
    """Whether a dataset folder was written by `cityseg synth` (it leaves SYNTHETIC.json at its root)."""
    return root is not None and (Path(root) / "SYNTHETIC.json").is_file()


def environment_table(device: str = "auto") -> Table:
    """The device training will use, the machine, and the library versions (as config.json will record them)."""
    import torch

    from cityseg.training.model import resolve_device
    from cityseg.training.runinfo import hardware, versions

    info = hardware(chosen := resolve_device(device)) | {"device": f"{chosen} (asked for: {device})"}
    info |= {"torch threads": torch.get_num_threads(), "python executable": sys.executable}
    info |= {"python environment": sys.prefix, **versions()}
    rows = [(name.replace("_", " "), "none" if value is None else value) for name, value in info.items()]
    return Table.build(("item", "value"), rows, title="environment")


def dataset_counts(root: Path, splits: Sequence[str] = ("train", "val", "test")) -> Table:
    """Images per split and city, with a total per split, to check the download is complete."""
    from cityseg.data.frames import list_frames

    root, rows = Path(root), []
    for split in splits:
        if not (root / "leftImg8bit" / split).is_dir():
            rows.append((split, "(missing)", 0))
            continue
        per_city = Counter(f.city for f in list_frames(root, split, label_source=None))
        rows += [(split, city, n) for city, n in sorted(per_city.items())]
        rows.append((split, f"total ({len(per_city)} cities)", per_city.total()))
    source = "synthetic (cityseg synth)" if is_synthetic(root) else "Cityscapes"
    return Table.build(("split", "city", "images"), rows, title=f"images per split and city in {root} [{source}]")


def sample_figure(root: Path, split: str = "train", index: int = 0) -> Figure:
    """One image of a split with its coloured trainIds mask, to check that images and labels match."""
    from cityseg.data.frames import list_frames, read_image, read_train_ids
    from cityseg.report.plots import dataset_sample

    frames = list_frames(Path(root), split)
    frame = frames[index % len(frames)]
    return dataset_sample(read_image(frame.image), read_train_ids(frame.label), title=f"{split}: {frame.id}")


def folds_table(folds: Mapping[str, Any], frames: Sequence[Any] | None = None) -> Table:
    """Validation cities and image counts of every fold, to check the folds are balanced and disjoint."""
    from cityseg.training.folds import fold_table

    rows = [(r["fold"], ", ".join(r["cities"]), r["n_val"], r["n_train"]) for r in fold_table(dict(folds), frames)]
    title = f"{folds['k']} folds, split by {folds['split']} (seed {folds.get('seed')})"
    return Table.build(("fold", "validation cities", "val images", "train images"), rows, title=title)


def class_iou_table(mean: Sequence[float | None], std: Sequence[float | None] | None = None) -> Table:
    """Per-class IoU over the folds in percent, mean ± std."""
    rows = [(name, Score(mean[i], std[i] if std else None)) for i, name in enumerate(CLASS_NAMES)]
    return Table.build(("class", "CV IoU (%), mean ± std"), rows, title="IoU per class over the folds")


def training_config(recipe: str = "seed", overrides: Mapping[str, Any] | None = None, **parameters: Any) -> TrainConfig:
    """The recipe with the notebook's parameters (epochs, size as "WxH", workers, device, encoder_weights, cache)
    and its OVERRIDES applied; a parameter None keeps the recipe's (or the machine's) value, "none" is None."""
    values = {name: None if str(v).lower() == "none" else v for name, v in parameters.items() if v is not None}
    if "size" in values:
        values["size"] = parse_size(values["size"])
    return configs.resolve_config(recipe, **values | dict(overrides or {}))


def config_table(config: TrainConfig) -> Table:
    """The config by group, values as `cityseg recipes` writes them under the names OVERRIDES takes; a field set
    apart from the recipe shows the recipe's value beside it, a machine field left to the machine shows auto."""
    from cityseg.training.model_names import model_title_of

    recipe = {name: field_text(name, value) for name, value, _ in configs.recipe_differences(config)}
    grouped = {name for names in FIELD_GROUPS.values() for name in names} | {"recipe"}
    groups = FIELD_GROUPS | {"run": tuple(n for n in TrainConfig.__dataclass_fields__ if n not in grouped)}

    def shown(name: str) -> str:
        value = field_text(name, getattr(config, name))
        return f"{name} {value} (recipe: {recipe[name]})" if name in recipe else f"{name} {value}"

    rows = [(group, "; ".join(map(shown, names))) for group, names in groups.items()]
    title = f"training config: {model_title_of(config)}, recipe {config.recipe}"
    return Table.build(("group", "fields"), rows, title=title)


def histories(runs_dir: Path, names: Sequence[str] | None = None) -> dict[str, list[dict]]:
    """Epoch rows already logged in a runs folder (of the runs `names`, or all), so resumed live curves start whole."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return {}
    return {name: load_log(runs_dir / name) for name in run_names(runs_dir) if names is None or name in names}


def train(root: Path, runs_dir: Path, config: TrainConfig, folds: int, split: str, full: bool) -> dict[str, Any]:
    """A training cell of 01_train: the folds, or the full fit after them, with live curves; what is finished is
    skipped, and a RUNS_DIR holding runs of other settings is refused naming the parameters that changed."""
    from cityseg.report.plots import LiveCurves
    from cityseg.training.cv import run_cv

    saved = next(filter(None, map(read_run_config, sorted(Path(runs_dir).glob("fold_*")))), None)
    if changed := saved and configs.field_differences(saved, config, configs.RUNTIME_FIELDS):
        names = ", ".join(dict.fromkeys(str(parameter_name(name, "01_train")) for name, _, _ in changed))
        raise UserError(
            f"{runs_dir} holds runs trained with other settings ({'; '.join(configs.config_differences(saved, config))})"
            "; a runs folder holds one experiment, so its runs are never continued with other settings. Set RUNS_DIR "
            f"to a new folder (or put {'RECIPE' if 'RECIPE' in names else names} back)."
        )
    live = LiveCurves(histories(runs_dir, ["full"] if full else [f"fold_{k}" for k in range(folds)]))
    summary = run_cv(root, runs_dir, config, folds, split, config.seed, resume=True, on_epoch=live.update, full=full)
    live.show()
    return summary


def engines_text(result: Mapping[str, Any]) -> str:
    """How an evaluation ran, as `cityseg evaluate` and the notebook print it: frames, engines, their seconds and,
    with both engines, how far apart their numbers are (at most 1e-9, or the evaluation failed)."""
    info, timings = result["cityseg"], result["cityseg"]["timings"]
    line = (
        f"{info['n_frames']} frames of {info['split']}, engine {info['engine']}: checks {timings['validate_s']:.2f} s"
    )
    if "official_s" in timings:
        line += f", official {timings['official_s']:.2f} s"
    if "fast_s" in timings:
        line += f", fast {timings['fast_s']:.2f} s ({info['workers']} workers)"
    if info["engine"] == "both":
        line += f"; fast is {info['speedup']:.1f}x faster, max |difference| {info['max_abs_diff']:.1e}"
    return line


def show_comparison(runs_dir: Path, eval_json: Path | None, others: Sequence[Path], **options: Any) -> None:
    """Section 8 of 02_evaluate: this run beside `others` (`options`: compare_runs's) in tables, verdicts, curves."""
    from IPython.display import display

    from cityseg.report.compare import compare_runs
    from cityseg.report.compare_pdf import comparison_figure

    if not others:
        return print("no other runs to compare (set COMPARE_RUNS)")
    options["evaluations"] = [eval_json, *options.get("evaluations", ())]
    comparison = compare_runs([runs_dir, *others], **options)
    display(*comparison.tables())
    print(comparison.verdicts())
    display(comparison_figure(comparison))


def show_photos(checkpoint: Path, images: Path | None, out_dir: Path, count: int, options: Mapping[str, Any]) -> None:
    """Section 9 of 02_evaluate: the first `count` photos of a folder predicted with `options`, as overlays."""
    from IPython.display import display

    from cityseg.prediction.image_predict import predict_images
    from cityseg.prediction.overlay import overlay_panel

    if not images:
        return print("no photos of your own to predict (set IMAGES_DIR to a folder of them)")
    photos = predict_images(checkpoint, images, out_dir, limit=count, **options)
    print(photos.summary())
    display(overlay_panel(photos.overlays))
