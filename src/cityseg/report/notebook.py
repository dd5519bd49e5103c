"""What the notebooks show around training and evaluation, one call per cell: tables and figures of the
machine, the dataset, the folds, the config and the scores.

Helpers turn notebook parameters (papermill passes plain strings and numbers) into what the library
expects; the numbers come from the same run files the PDF report reads.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cityseg.errors import UserError
from cityseg.labels import CLASS_NAMES
from cityseg.report.tables import Score, Table, percent
from cityseg.training.config import TrainConfig, parse_size, resolve_config
from cityseg.training.runfolder import load_log, run_names

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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

    chosen = resolve_device(device)
    info = hardware(chosen)
    rows: list[tuple[str, object]] = [
        ("device", f"{chosen} (asked for: {device})"),
        ("gpu", f"{info['gpu_count']} x {info['gpu']}" if info["gpu"] else "none"),
        ("cpu cores", info["cpu_count"]),
        ("torch threads", torch.get_num_threads()),
        ("platform", info["platform"]),
        ("python executable", sys.executable),
        ("python environment", sys.prefix),
    ]
    rows += [(name, version or "missing") for name, version in versions().items()]
    return Table.build(("item", "value"), rows, title="environment")


def dataset_counts(root: Path, splits: Sequence[str] = ("train", "val", "test")) -> Table:
    """Images per split and city, with a total per split, to check the download is complete."""
    from cityseg.data.frames import list_frames

    root = Path(root)
    rows: list[tuple[str, str, int]] = []
    for split in splits:
        if not (root / "leftImg8bit" / split).is_dir():
            rows.append((split, "(missing)", 0))
            continue
        frames = list_frames(root, split, label_source=None)
        per_city = Counter(f.city for f in frames)
        rows += [(split, city, n) for city, n in sorted(per_city.items())]
        rows.append((split, f"total ({len(per_city)} cities)", len(frames)))
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
    return Table.build(
        ("fold", "validation cities", "val images", "train images"),
        rows,
        title=f"{folds['k']} folds, split by {folds['split']} (seed {folds.get('seed')})",
    )


def class_iou_table(
    cv_mean: Sequence[float | None] | None,
    cv_std: Sequence[float | None] | None = None,
    val: Sequence[float | None] | None = None,
) -> Table:
    """Per-class IoU in percent: CV mean ± std and/or the official validation score."""
    columns = ["class"]
    if cv_mean is not None:
        columns.append("CV IoU mean ± std")
    if val is not None:
        columns.append("val IoU (official)")
    rows = []
    for i, name in enumerate(CLASS_NAMES):
        row: list[object] = [name]
        if cv_mean is not None:
            row.append(Score(cv_mean[i], cv_std[i] if cv_std is not None else None))
        if val is not None:
            row.append(Score(val[i]))
        rows.append(row)
    return Table.build(columns, rows, title="IoU per class (%)")


def training_config(
    recipe: str = "seed",
    epochs: int | None = None,
    size: Any = None,
    workers: int | None = None,
    device: str = "auto",
    encoder_weights: str | None = "imagenet",
    overrides: Mapping[str, Any] | None = None,
    cache: str | None = "auto",
) -> TrainConfig:
    """The notebook's parameters as a TrainConfig; None keeps the recipe's (or the machine's) default.
    `cache`: "auto" (cityseg.training.runtime decides), a folder, or "none"/None for the PNGs."""
    cache = None if cache is None or str(cache).lower() == "none" else str(cache)
    values: dict[str, Any] = {"device": device, "cache": cache, **dict(overrides or {})}
    if epochs is not None:
        values["epochs"] = int(epochs)
    if size is not None:
        values["size"] = parse_size(size)
    if workers is not None:
        values["workers"] = int(workers)
    weights = None if encoder_weights is None or str(encoder_weights).lower() == "none" else str(encoder_weights)
    values["encoder_weights"] = weights
    return resolve_config(recipe, **values)


def histories(runs_dir: Path, names: Sequence[str] | None = None) -> dict[str, list[dict]]:
    """Epoch rows already logged in a runs folder (empty for a new one), so resumed live curves start complete.

    names: only these runs (e.g. ["full"]); None = every fold and the full fit.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return {}
    return {name: load_log(runs_dir / name) for name in run_names(runs_dir) if names is None or name in names}


def config_table(config: TrainConfig) -> Table:
    """Every training config field and its value, as config.json will record it."""
    rows = [(name, "none" if value is None else value) for name, value in config.to_dict().items()]
    return Table.build(("field", "value"), rows, title=f"training config (recipe {config.recipe!r})")


def engines_table(result: Mapping[str, Any]) -> Table:
    """Official script versus fast engine: the same mIoU (to 1e-9) at a fraction of the time."""
    section = result.get("cityseg", {})
    timings = section.get("timings", {})
    rows = []
    if "official_s" in timings:
        rows.append(
            ("official (cityscapesscripts)", percent(result["averageScoreClasses"]), f"{timings['official_s']:.2f}")
        )
    if "fast" in section or "fast_s" in timings:
        fast = section.get("fast", result)
        rows.append(
            ("fast (bincount)", percent(fast["averageScoreClasses"]), f"{timings.get('fast_s', float('nan')):.2f}")
        )
    title = f"{section.get('n_frames', '?')} {section.get('split', '')} frames"
    if section.get("max_abs_diff") is not None:
        title += f"; largest score difference {section['max_abs_diff']:.1e}"
    return Table.build(("engine", "mIoU (%)", "seconds"), rows, title=title)
