"""The numbers and settings a report or a comparison states, read from the run files, in plain words: summary.json's
headline CV numbers with their `protocol`, apart from the optimistic best-epoch ones under `selected`. Imports no
plotting: `cityseg cv` prints its summary through `summary_text`.
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
from cityseg.training.model_names import model_title_of

# The reference write-up's number (docs/reference.md): U-Net/ResNet-34, 10 epochs, batch 4, Adam 1e-4.
REFERENCE_MIOU = 66.79
REFERENCE_TEXT = "the write-up's U-Net / resnet34 (10 epochs, batch 4, Adam 1e-4)"
REFERENCE_CAVEAT = (
    "It is not a controlled baseline: the write-up calls 66.79 both a val and a test result and chose its "
    "checkpoint by validation loss (docs/reference.md)."
)


@dataclass(frozen=True)
class CvResult:
    """Cross-validation numbers as summary.json states them; `selected`: the best-epoch statistics or None; `folds`:
    the per-fold records (fold, epoch, val_loss, val_miou, best_epoch, best_val_miou, ...)."""

    k: int
    split: str
    miou_mean: float | None
    miou_std: float | None
    class_iou_mean: Sequence[float | None]
    class_iou_std: Sequence[float | None]
    protocol: str
    selected: dict | None
    folds: list[dict]


def cv_result(summary: Mapping[str, Any]) -> CvResult:
    """Read summary.json (keys cityseg.report.runfiles requires); a missing optional value becomes None."""
    nothing = [None] * len(CLASS_NAMES)
    folds = [{"fold": n, **f} for n, f in enumerate(summary.get("folds") or [])]
    return CvResult(
        k=int(summary.get("k") or len(folds)),
        split=str(summary.get("split") or "?"),
        miou_mean=summary.get("miou_mean"),
        miou_std=summary.get("miou_std"),
        class_iou_mean=summary.get("class_iou_mean") or nothing,
        class_iou_std=summary.get("class_iou_std") or nothing,
        protocol=str(summary.get("protocol") or "not recorded in summary.json"),
        selected=summary.get("selected"),
        folds=folds,
    )


def summary_text(summary: Mapping[str, Any]) -> str:
    """The CV numbers as `cityseg cv`, the notebook and the report print them: headline, protocol, selected."""
    selected = summary["selected"]
    return "\n".join(
        [
            f"CV mIoU ({summary['k']} folds, mean ± std, no selection on the scored fold): "
            f"{mean_std_text(summary['miou_mean'], summary['miou_std'])} %",
            f"  {summary['protocol']}",
            f"At each fold's own best epoch (chosen on the fold it scores, so optimistic): "
            f"{mean_std_text(selected['miou_mean'], selected['miou_std'])} %",
        ]
    )


def finite(value: float | None) -> bool:
    """A number that can be printed (JSON null and NaN cannot)."""
    return value is not None and math.isfinite(value)


def val_class_iou(evaluation: Mapping[str, Any]) -> list[float]:
    """Official per-class IoU in trainId order."""
    return [float(evaluation["classScores"][name]) for name in CLASS_NAMES]


def val_confusion(evaluation: Mapping[str, Any]) -> np.ndarray:
    """(19, 19) counts from the official 34x34 confMatrix, rows = ground truth, in trainId order."""
    from cityseg.evaluation.output import summary

    return np.asarray(summary(dict(evaluation))["confusion_train_ids"], dtype=np.int64)


def total_seconds(histories: Mapping[str, Sequence[Mapping]]) -> float:
    """Training time summed over every epoch of every run (folds and the full fit)."""
    return sum(float(row.get("seconds") or 0.0) for rows in histories.values() for row in rows)


def median_logged(histories: Mapping[str, Sequence[Mapping]], key: str) -> float | None:
    """Median of one log.jsonl field over all epochs of all runs (None when never logged)."""
    values = [float(row[key]) for rows in histories.values() for row in rows if row.get(key) is not None]
    return float(np.median(values)) if values else None


def duration_text(seconds: float) -> str:
    """`1 h 05 min` or `3 min 07 s`."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def recipe_differences(runs: RunFiles) -> list[tuple[str, str, str]] | None:
    """(field, recipe value, run value) for every config field the run changed from its recipe; None when config.json
    is not a config of this cityseg version."""
    from cityseg.errors import UserError
    from cityseg.training.config import TrainConfig, value_text
    from cityseg.training.config import recipe_differences as differences_of

    saved = runs.config.get("config")
    try:
        changes = differences_of(TrainConfig.from_dict(saved))
    except UserError:  # written by another cityseg version, or its recipe file is gone
        return None
    return [(name, value_text(recipe), value_text(value)) for name, recipe, value in changes]


LOSS_WORDS = {"ce": "cross-entropy", "ohem": "OHEM cross-entropy", "lovasz": "Lovász", "dice": "Dice"}
AUG_WORDS = {"flip": "horizontal flip", "scale-crop": "random scale and crop", "color-jitter": "colour jitter"}


def loss_text(config: Mapping[str, Any]) -> str:
    """'cross-entropy + 0.5 × Dice, ignoring label 255' from a loss expression such as 'ce+0.5*dice'."""
    terms = []
    for term in str(config.get("loss") or "ce").replace(" ", "").split("+"):
        weight, _, name = term.rpartition("*")
        terms.append((f"{weight} × " if weight else "") + LOSS_WORDS.get(name.lower(), name.replace("_", " ")))
    ohem = f" (pixels below p = {config.get('ohem_thresh')}, at least {config.get('ohem_min_kept'):,} per image)"
    return " + ".join(terms) + (ohem if "ohem" in str(config.get("loss")) else "") + ", ignoring label 255"


def _size(value: Any) -> str:
    return "x".join(map(str, value))


def setup_table(runs: RunFiles, synthetic: bool) -> Table:
    """What was trained and on what, in words: enough to reproduce or question the numbers."""
    cfg = runs.config.get("config") or {}
    weights = cfg.get("encoder_weights")
    weights = {None: "random init (from scratch)", "imagenet": "ImageNet-pretrained encoder"}.get(weights, weights)
    size = f"resized to {_size(cfg['size'])}" if cfg.get("size") else "full resolution"
    crop = f"random {_size(cfg['crop'])} crops" if cfg.get("crop") else "no crop"
    scale = f", random scale {cfg['scale_range'][0]}–{cfg['scale_range'][1]}" if cfg.get("scale_range") else ""
    aug = ", ".join(AUG_WORDS.get(a, a.replace("-", " ")) for a in cfg.get("aug") or ()) or "none"
    decay = f"weight decay {cfg['weight_decay']:g}" if cfg.get("weight_decay") else "no weight decay"
    betas = ", ".join(map(str, cfg.get("betas") or (0.9, 0.999)))
    momentum = f"momentum {cfg.get('momentum')}" if cfg.get("optimizer") == "sgd" else f"betas {betas}"
    optimiser = f"{str(cfg.get('optimizer')).title()} ({momentum}), lr {cfg.get('lr'):g} (encoder × "
    optimiser += f"{cfg.get('encoder_lr_mult', 1):g}), batch {cfg.get('batch_size')}, {decay}"
    schedule = {"constant": "constant lr", "cosine": f"cosine to {cfg.get('min_lr', 0):g}"}.get(
        cfg.get("schedule"), f"poly (power {cfg.get('poly_power')})"
    )
    warmup = f"linear warm-up over {cfg['warmup_epochs']:g} epochs" if cfg.get("warmup_epochs") else "no warm-up"
    select = {"last": "the last epoch (fixed budget)", "miou": "best val mIoU"}.get(cfg.get("select"), "best val loss")
    full = (runs.summary.get("full") or {}).get("epochs")
    data = "synthetic street scenes (cityseg synth)" if synthetic else f"Cityscapes at {runs.config.get('data_root')}"
    folds = f"{runs.folds['k']} folds of the train split by {runs.folds['split']} (seed {runs.folds.get('seed')})"
    rows = [
        ("model", f"{model_title_of(cfg)}; {weights}"),
        ("recipe", str(cfg.get("recipe"))),
        ("input", f"{size}, {crop}{scale}"),
        ("augmentation", aug),
        ("optimiser", optimiser),
        ("schedule", f"{schedule}, {warmup}"),
        ("loss", loss_text(cfg)),
        ("precision", "mixed (bf16 or fp16 on CUDA)" if cfg.get("amp") else "fp32"),
        ("epochs", f"{cfg.get('epochs')} per fold; best.pt by {select}"),
        ("full fit", f"{full} epochs on all train images" if full is not None else "not trained yet"),
        ("data", data),
        ("folds", folds),
    ]
    return Table.build(("setting", "value"), rows)


def machine_table(runs: RunFiles) -> Table:
    """Hardware, time, throughput and code version: real runs only (a demo report must not depend on them)."""
    record = runs.config
    hardware, versions = record.get("hardware") or {}, record.get("versions") or {}
    speed, wait = median_logged(runs.histories, "images_per_s"), median_logged(runs.histories, "data_wait_share")
    peak = median_logged(runs.histories, "peak_memory_gb")
    throughput = [f"{speed:.1f} img/s" if speed is not None else "not logged"]
    throughput += [f"{100 * wait:.0f}% of it waiting for data"] if wait is not None else []
    throughput += [f"peak GPU memory {peak:.1f} GiB"] if peak is not None else []
    machine = f"{record.get('world_size') or 1} × {hardware.get('gpu') or hardware.get('device')}, "
    machine += f"{hardware.get('cpu_count')} CPU cores"
    library_versions = f"torch {versions.get('torch')}, smp {versions.get('segmentation-models-pytorch')}, "
    library_versions += f"cityscapesscripts {versions.get('cityscapesscripts')}"
    rows = [
        ("run folder", str(runs.runs_dir.resolve())),
        ("hardware", machine),
        ("training time", f"{duration_text(total_seconds(runs.histories))} (all folds and the full fit)"),
        ("throughput", ", ".join(throughput) + " (medians over all epochs)"),
        ("code", git_text(record)),
        ("versions", library_versions),
        ("started", str(record.get("started") or "unknown")),
    ]
    return Table.build(("item", "value"), rows)


def git_text(record: Mapping[str, Any]) -> str:
    git = record.get("git") or {}
    return f"git {(git.get('sha') or 'unknown')[:12]}" + (" (uncommitted changes)" if git.get("dirty") else "")
