"""K-fold cross-validation on the train split, then one final model on all of it.

The official val split never picks anything: each fold's held-out cities choose that fold's
best epoch, the median of those epochs sets how long the final model trains on all train
images, and val is left for one honest evaluation at the end.

    RUNS/folds.json      the folds (written once; a different existing file is never overwritten)
    RUNS/fold_<k>/       one run folder per fold (see cityseg.trainer)
    RUNS/full/           the final model, trained for the chosen number of epochs, no validation
    RUNS/summary.json    per-fold best epochs and scores, mean and std over folds, chosen epochs

Launch:

    cityseg cv ROOT --out RUNS                                    # one device, folds one after another
    torchrun --nproc_per_node=4 -m cityseg cv ROOT --out RUNS     # each fold on 4 GPUs with DDP
    CUDA_VISIBLE_DEVICES=0 cityseg cv ROOT --out RUNS --only-folds 0,1,2 &
    CUDA_VISIBLE_DEVICES=1 cityseg cv ROOT --out RUNS --only-folds 3,4   # folds spread over GPUs
    cityseg cv ROOT --out RUNS --resume                           # skip finished folds, then the full fit

With --only-folds the full fit starts only once every fold is finished; a later `cv --resume` runs it.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cityseg.checkpoint import atomic_write_bytes
from cityseg.config import TrainConfig, config_differences
from cityseg.dist import barrier, init_distributed, is_main
from cityseg.engine import json_float
from cityseg.errors import UserError
from cityseg.folds import fold_ids, fold_table, load_folds, make_folds, write_folds
from cityseg.labels import CLASS_NAMES
from cityseg.trainer import (
    EpochCallback,
    best_row,
    check_input_size,
    is_finished,
    load_log,
    read_run_config,
    selection_metric,
    train_run,
    with_epochs,
)

FOLDS_FILE = "folds.json"
SUMMARY_FILE = "summary.json"
FULL_RUN = "full"

__all__ = ["fold_table", "load_log", "make_folds", "run_cv", "summarize", "chosen_epochs", "fold_dir"]


def fold_dir(runs_dir: Path, fold: int) -> Path:
    """Run folder of one fold."""
    return Path(runs_dir) / f"fold_{fold}"


def run_cv(
    root: Path,
    runs_dir: Path,
    config: TrainConfig,
    k: int = 5,
    split: str = "city",
    seed: int = 0,
    resume: bool = False,
    only_folds: Sequence[int] | None = None,
    on_epoch: EpochCallback | None = None,
    full: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Make/check the folds, train the selected folds, then (all folds done) the full model; returns the summary."""
    from cityseg.data import list_frames

    root, runs_dir = Path(root), Path(runs_dir)
    init_distributed(config.device)
    frames = list_frames(root, "train", label_source=config.labels)
    check_input_size(config, frames[0].image)
    folds = make_folds(frames, k=k, split=split, seed=seed)
    selected = _selected_folds(only_folds, k)
    if is_main():
        write_folds(runs_dir / FOLDS_FILE, folds)
    barrier()

    for fold in selected:
        run_dir = fold_dir(runs_dir, fold)
        if resume and _skip_finished(run_dir, config):
            continue
        train_ids, val_ids = fold_ids(folds, fold)
        train_run(root, run_dir, config, train_ids, val_ids, resume=resume, on_epoch=on_epoch,
                  run_name=run_dir.name, progress=progress)

    summary = summarize(runs_dir)
    if full and summary["complete"]:
        full_config = with_epochs(config, summary["chosen_epochs"])
        run_dir = runs_dir / FULL_RUN
        if not (resume and _skip_finished(run_dir, full_config)):
            train_run(root, run_dir, full_config, [f.id for f in frames], None, resume=resume, on_epoch=on_epoch,
                      run_name=FULL_RUN, progress=progress)
        summary = summarize(runs_dir)
    if is_main():
        text = json.dumps(summary, indent=1) + "\n"
        atomic_write_bytes(runs_dir / SUMMARY_FILE, lambda handle: handle.write(text.encode()))
    barrier()
    return summary


def _selected_folds(only_folds: Sequence[int] | None, k: int) -> list[int]:
    if only_folds is None:
        return list(range(k))
    bad = [f for f in only_folds if not 0 <= f < k]
    if bad:
        raise UserError(f"--only-folds names fold(s) {bad}, but folds are numbered 0..{k - 1} (--folds {k}).")
    return sorted(set(only_folds))


def _skip_finished(run_dir: Path, config: TrainConfig) -> bool:
    """True for a finished run trained with this config; a finished run with other settings is an error."""
    if not is_finished(run_dir, config.epochs):
        return False
    saved = read_run_config(run_dir)
    changed = config_differences(saved, config) if saved is not None else []
    if changed:
        raise UserError(
            f"{run_dir} is finished but was trained with other settings ({'; '.join(changed)}); resume with the "
            "same settings, or use another --out folder for the new ones."
        )
    return True


def chosen_epochs(best_epochs: Sequence[int]) -> int:
    """Epochs for the full fit: the median of the folds' best epochs, halves rounded up."""
    return int(math.floor(statistics.median(best_epochs) + 0.5))


def summarize(runs_dir: Path) -> dict[str, Any]:
    """Cross-validation summary from the run folders alone (what summary.json holds).

    Per fold: the selected (best) epoch and its val loss, mIoU and class IoUs. Over finished folds:
    mean and sample standard deviation (ddof=1) of mIoU and of each class IoU; a class absent from
    a fold's ground truth (null) is left out of that class's statistics.
    """
    runs_dir = Path(runs_dir)
    folds = load_folds(runs_dir / FOLDS_FILE)
    per_fold = [row for n in range(folds["k"]) if (row := _fold_summary(fold_dir(runs_dir, n), n)) is not None]
    finished = [row for row in per_fold if row["finished"]]
    complete = len(finished) == folds["k"]
    class_iou = np.array([[np.nan if v is None else v for v in row["class_iou"]] for row in finished], dtype=float)
    miou = np.array([np.nan if row["val_miou"] is None else row["val_miou"] for row in finished], dtype=float)
    epochs = chosen_epochs([row["best_epoch"] for row in finished]) if complete else None
    return {
        "k": folds["k"],
        "split": folds["split"],
        "seed": folds["seed"],
        "complete": complete,
        "folds": per_fold,
        "miou_mean": _mean(miou),
        "miou_std": _std(miou),
        "class_names": list(CLASS_NAMES),
        "class_iou_mean": [_mean(class_iou[:, c]) for c in range(len(CLASS_NAMES))] if len(finished) else None,
        "class_iou_std": [_std(class_iou[:, c]) for c in range(len(CLASS_NAMES))] if len(finished) else None,
        "chosen_epochs": epochs,
        "full": _full_summary(runs_dir / FULL_RUN),
        "std": "sample standard deviation (ddof=1) over finished folds; null with fewer than 2 values",
    }


def _fold_summary(run_dir: Path, fold: int) -> dict[str, Any] | None:
    config = read_run_config(run_dir)
    if config is None:
        return None
    rows = load_log(run_dir)
    best = best_row(rows, config.select)
    return {
        "fold": fold,
        "run_dir": run_dir.name,
        "finished": is_finished(run_dir, config.epochs),
        "epochs": config.epochs,
        "epochs_done": len(rows),
        "select": config.select,
        "best_epoch": best["epoch"] if best else None,
        "selection_metric": selection_metric(best, config.select) if best else None,
        "val_loss": best["val_loss"] if best else None,
        "val_miou": best["val_miou"] if best else None,
        "class_iou": best["class_iou"] if best else [None] * len(CLASS_NAMES),
    }


def _full_summary(run_dir: Path) -> dict[str, Any] | None:
    config = read_run_config(run_dir)
    if config is None:
        return None
    return {"run_dir": run_dir.name, "epochs": config.epochs, "epochs_done": len(load_log(run_dir)),
            "finished": is_finished(run_dir, config.epochs)}


def _mean(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    return json_float(float(values.mean())) if len(values) else None


def _std(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    return json_float(float(values.std(ddof=1))) if len(values) >= 2 else None
