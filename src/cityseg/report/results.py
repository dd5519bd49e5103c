"""The numbers a report or a comparison states, read from the run files with their provenance.

summary.json gives the headline cross-validation numbers selection-free (every fold scored at the
epoch count the full fit uses) with a `protocol` sentence, and keeps the optimistic best-epoch numbers
under `selected` (cityseg.training.cv.summarize). `cv_result` reads them with the protocol beside the numbers,
so a page never presents selected numbers as unselected ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cityseg.labels import CLASS_NAMES
from cityseg.report.runfiles import RunFiles
from cityseg.report.tables import Table, mean_std_text

# The reference write-up's val mIoU (U-Net/ResNet-34, 10 epochs, batch 4, Adam 1e-4; NOTES.md).
REFERENCE_MIOU = 66.79
REFERENCE_TEXT = "U-Net/ResNet-34 reference (10 epochs, batch 4, Adam 1e-4, full resolution)"


@dataclass(frozen=True)
class FoldResult:
    """One fold: its headline score (at `epoch`) and its best epoch's score."""

    fold: int
    epoch: int | None
    val_loss: float | None
    val_miou: float | None
    class_iou: Sequence[float | None]
    best_epoch: int | None
    best_val_loss: float | None
    best_val_miou: float | None


@dataclass(frozen=True)
class Selected:
    """The best-epoch (selected on each fold's own held-out cities, so optimistic) cross-validation numbers."""

    miou_mean: float | None
    miou_std: float | None
    class_iou_mean: Sequence[float | None] | None
    class_iou_std: Sequence[float | None] | None
    note: str


@dataclass(frozen=True)
class CvResult:
    """Cross-validation numbers as the report states them, with the protocol that produced them."""

    k: int
    split: str
    miou_mean: float | None
    miou_std: float | None
    class_iou_mean: Sequence[float | None]
    class_iou_std: Sequence[float | None]
    protocol: str
    selected: Selected | None
    folds: list[FoldResult]


def cv_result(summary: Mapping[str, Any]) -> CvResult:
    """Read summary.json (keys cityseg.report.runfiles requires); a missing optional value becomes None."""
    none_list = [None] * len(CLASS_NAMES)
    chosen = summary.get("selected")
    selected = (
        None
        if chosen is None
        else Selected(
            chosen.get("miou_mean"),
            chosen.get("miou_std"),
            chosen.get("class_iou_mean"),
            chosen.get("class_iou_std"),
            str(chosen.get("note") or "each fold at its best epoch"),
        )
    )
    folds = [
        FoldResult(
            int(f.get("fold", n)),
            f.get("epoch"),
            f.get("val_loss"),
            f.get("val_miou"),
            f.get("class_iou") or none_list,
            f.get("best_epoch"),
            f.get("best_val_loss"),
            f.get("best_val_miou"),
        )
        for n, f in enumerate(summary.get("folds") or [])
    ]
    return CvResult(
        k=int(summary.get("k") or len(folds)),
        split=str(summary.get("split") or "?"),
        miou_mean=summary.get("miou_mean"),
        miou_std=summary.get("miou_std"),
        class_iou_mean=summary.get("class_iou_mean") or none_list,
        class_iou_std=summary.get("class_iou_std") or none_list,
        protocol=str(summary.get("protocol") or "not recorded in summary.json"),
        selected=selected,
        folds=folds,
    )


# ----------------------------------------------------------------------------------------------------------
# Evaluation JSON (official export format)
# ----------------------------------------------------------------------------------------------------------


def val_class_iou(evaluation: Mapping[str, Any]) -> list[float]:
    """Official per-class IoU in trainId order."""
    return [float(evaluation["classScores"][name]) for name in CLASS_NAMES]


def val_confusion(evaluation: Mapping[str, Any]) -> np.ndarray:
    """(19, 19) counts from the official 34x34 confMatrix, rows = ground truth, in trainId order."""
    from cityseg.evaluation.output import summary

    return np.asarray(summary(dict(evaluation))["confusion_train_ids"], dtype=np.int64)


# ----------------------------------------------------------------------------------------------------------
# Time and throughput from log.jsonl (machine-dependent: never printed in a demo report)
# ----------------------------------------------------------------------------------------------------------


def total_seconds(histories: Mapping[str, Sequence[Mapping]]) -> float:
    """Training time summed over every epoch of every run (folds and the full fit)."""
    return sum(float(row.get("seconds") or 0.0) for rows in histories.values() for row in rows)


def median_logged(histories: Mapping[str, Sequence[Mapping]], key: str) -> float | None:
    """Median of one log.jsonl field over all epochs of all runs (None when never logged)."""
    values = [float(row[key]) for rows in histories.values() for row in rows if row.get(key) is not None]
    return float(np.median(values)) if values else None


def throughput_text(histories: Mapping[str, Sequence[Mapping]]) -> str:
    """Median training speed over all epochs, with how long the GPU waited for data: a starving loader shows here."""
    speed = median_logged(histories, "images_per_s")
    wait = median_logged(histories, "data_wait_share")
    peak = median_logged(histories, "peak_memory_gb")
    parts = [f"{speed:.1f} img/s" if speed is not None else "not logged"]
    if wait is not None:
        parts.append(f"{100 * wait:.0f}% of it waiting for data")
    if peak is not None:
        parts.append(f"peak GPU memory {peak:.1f} GiB")
    return ", ".join(parts) + " (medians over all epochs)"


def duration_text(seconds: float) -> str:
    """`1 h 05 min` or `3 min 07 s`."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


# ----------------------------------------------------------------------------------------------------------
# The run's settings
# ----------------------------------------------------------------------------------------------------------


def recipe_differences(runs: RunFiles) -> list[tuple[str, str, str]] | None:
    """(field, recipe value, run value) for every config field the run changed from its recipe, formatted as
    typed after the flags; None when config.json is not a config of this cityseg version (the pages say so)."""
    from cityseg.errors import UserError
    from cityseg.training.config import TrainConfig, value_text
    from cityseg.training.config import recipe_differences as differences_of

    saved = runs.config.get("config")
    if not isinstance(saved, dict):
        return None
    try:
        changes = differences_of(TrainConfig.from_dict(saved))
    except UserError:  # written by another cityseg version, or its recipe file is gone
        return None
    return [(name, value_text(recipe), value_text(value)) for name, recipe, value in changes]


def config_value(runs: RunFiles, name: str) -> str:
    """One field of the run's config.json, formatted as typed after its flag."""
    from cityseg.training.config import value_text

    value = (runs.config.get("config") or {}).get(name)
    return value_text(tuple(value) if isinstance(value, list) else value)


def setup_table(runs: RunFiles, synthetic: bool) -> Table:
    """What was trained and on what: enough to reproduce or question the numbers."""
    cfg = runs.config.get("config") or {}
    full_epochs = (runs.summary.get("full") or {}).get("epochs")
    selection = "last epoch (fixed budget)" if cfg.get("select") == "last" else f"best epoch by {cfg.get('select')}"
    rows = [
        ("model", f"U-Net, ResNet-34 encoder; encoder weights: {cfg.get('encoder_weights') or 'none (from scratch)'}"),
        ("recipe", config_value(runs, "recipe")),
        ("augmentations", config_value(runs, "aug")),
        ("image size / crop", f"{config_value(runs, 'size')} / {config_value(runs, 'crop')}"),
        (
            "optimiser",
            f"{cfg.get('optimizer')}, lr {cfg.get('lr')} (encoder × {cfg.get('encoder_lr_mult')}), "
            f"weight decay {cfg.get('weight_decay')}, batch {cfg.get('batch_size')}",
        ),
        ("schedule", f"{cfg.get('schedule')}, warm-up {cfg.get('warmup_epochs')} epochs"),
        ("loss", config_value(runs, "loss")),
        (
            "epochs",
            f"{cfg.get('epochs')} per fold, {selection}; full-data fit: "
            f"{full_epochs if full_epochs is not None else 'not trained yet'} on the folds' lr schedule",
        ),
        (
            "data",
            "synthetic street scenes (cityseg synth)" if synthetic else f"Cityscapes at {runs.config.get('data_root')}",
        ),
        (
            "folds",
            f"{runs.folds['k']} folds of the train split, grouped by {runs.folds['split']} "
            f"(seed {runs.folds.get('seed')})",
        ),
    ]
    return Table.build(("setting", "value"), rows)


def machine_table(runs: RunFiles) -> Table:
    """Hardware, time, throughput and code version: real runs only (a demo report must not depend on them)."""
    record = runs.config
    hardware, git, versions = record.get("hardware") or {}, record.get("git") or {}, record.get("versions") or {}
    sha = git.get("sha") or "unknown"
    rows = [
        ("run folder", str(runs.runs_dir.resolve())),
        (
            "hardware",
            f"{record.get('world_size') or 1} × {hardware.get('gpu') or hardware.get('device')}, "
            f"{hardware.get('cpu_count')} CPU cores",
        ),
        ("training time", f"{duration_text(total_seconds(runs.histories))} (all folds and the full fit)"),
        ("throughput", throughput_text(runs.histories)),
        ("code", f"git {sha[:12]}{' (uncommitted changes)' if git.get('dirty') else ''}"),
        (
            "versions",
            f"torch {versions.get('torch')}, smp {versions.get('segmentation-models-pytorch')}, "
            f"cityscapesscripts {versions.get('cityscapesscripts')}",
        ),
        ("started", str(record.get("started") or "unknown")),
    ]
    return Table.build(("item", "value"), rows)


def finite(value: float | None) -> bool:
    """A number that can be printed (JSON null and NaN cannot)."""
    return value is not None and math.isfinite(value)


def summary_text(summary: dict[str, Any]) -> str:
    """The CV numbers as `cityseg cv`, the notebook and the report print them: headline, protocol, selected."""
    selected = summary["selected"]
    return "\n".join(
        [
            f"CV mIoU ({summary['k']} folds, mean ± std, no selection): "
            f"{mean_std_text(summary['miou_mean'], summary['miou_std'])} %",
            f"  {summary['protocol']}",
            f"Selected on the same fold ({selected['note']}): "
            f"{mean_std_text(selected['miou_mean'], selected['miou_std'])} %",
        ]
    )
