"""K-fold cross-validation on the train split, then one final model on all of it; the val split picks nothing.
Each fold's held-out cities choose its best epoch; the full fit trains for the median of the folds' best epochs and
fold k is scored at the median of the OTHER folds' ("last": the last epoch). `--only-folds` runs may share RUNS."""

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cityseg.data.frames import listed_split
from cityseg.errors import UserError
from cityseg.fileio import read_json_dict
from cityseg.labels import CLASS_NAMES
from cityseg.locks import hold_lock, wait_lock
from cityseg.training.config import TrainConfig, config_differences, with_epochs
from cityseg.training.datasets import check_input_size
from cityseg.training.dist import barrier, held_by_main, init_distributed, is_main
from cityseg.training.engine import json_float
from cityseg.training.folds import check_folds_match, fold_ids, load_folds, make_folds, write_folds
from cityseg.training.model import check_encoder_weights
from cityseg.training.runfolder import (
    FOLDS_FILE,
    FULL_RUN,
    SUMMARY_FILE,
    EpochCallback,
    best_row,
    fold_dir,
    is_finished,
    load_log,
    make_run_folder,
    read_run_config,
    write_json,
)
from cityseg.training.runtime import apply_determinism, resolve_and_report
from cityseg.training.trainer import train_run

SUMMARY_FORMAT = "cityseg-cv-summary"  # the marker that makes a summary.json ours to replace
RUNS_LOCK = ".lock-cv"  # held for a whole `cv` (shared by --only-folds processes)
SHARED_FILES_LOCK = ".lock-cv-files"  # held while folds.json or summary.json is checked and written
SELECTED_NOTE = "best epoch chosen on the same fold that scores it (optimistic)"
_EMPTY_ROW = {"epoch": None, "val_miou": None, "val_loss": None, "class_iou": [None] * len(CLASS_NAMES)}


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
    """Check everything, make the folds, train the selected folds, then the full model; the summary."""
    root, runs_dir = Path(root), Path(runs_dir)
    apply_determinism(config)  # before init_distributed's first CUDA call
    info = init_distributed(config.device)
    train = listed_split(root, "train", config.labels)
    check_input_size(config, train)
    folds = make_folds(train.frames, k=k, split=split, seed=seed)
    bad = [f for f in only_folds or () if not 0 <= f < k]
    if bad:
        raise UserError(f"--only-folds names fold(s) {bad}, but folds are numbered 0..{k - 1} (--folds {k}).")
    selected = sorted(set(only_folds)) if only_folds is not None else list(range(k))
    if not resume:
        check_encoder_weights(config)
    _check_shared_files(runs_dir, folds)
    if is_main():
        make_run_folder(runs_dir)
    barrier()
    fold_images = {fold: len(fold_ids(folds, fold)[0]) for fold in range(k)}
    # Machine defaults once for the whole CV (every fold and the full fit run with them), printed once.
    config = resolve_and_report(config, train, min(fold_images.values()), info.world_size, info.device)
    full = full and only_folds is None
    planned = {fold_dir(runs_dir, f).name: (fold_dir(runs_dir, f), config.epochs) for f in selected}
    if full and all(f in selected or is_finished(fold_dir(runs_dir, f), config.epochs) for f in range(k)):
        planned[FULL_RUN] = (runs_dir / FULL_RUN, config.epochs)  # an upper bound until the folds choose
    with held_by_main(lambda: _lock_runs(runs_dir, shared=only_folds is not None)):
        if is_main():
            with _shared_files_lock(runs_dir):
                _check_shared_files(runs_dir, folds)
                write_folds(runs_dir / FOLDS_FILE, folds)
        barrier()
        overall = _Bar(planned, progress and is_main(), on_epoch)
        with overall.bar:  # closed at the end, also on an error
            for fold in selected:
                run_dir = fold_dir(runs_dir, fold)
                if not (resume and _skip_finished(run_dir, config)):
                    train_run(
                        root, run_dir, config, *fold_ids(folds, fold), resume, overall, progress=progress, split=train
                    )
            summary = summarize(runs_dir)
            if full and summary["complete"]:
                full_config = with_epochs(config, summary["chosen_epochs"])
                overall.set_epochs(FULL_RUN, full_config.epochs)
                run_dir = runs_dir / FULL_RUN
                if not (resume and _skip_finished(run_dir, full_config)):
                    ids = [f.id for f in train.frames]
                    train_run(root, run_dir, full_config, ids, None, resume, overall, progress=progress, split=train)
        if is_main():
            with _shared_files_lock(runs_dir):  # another --only-folds process may have finished a fold meanwhile
                summary = summarize(runs_dir)
                write_json(runs_dir / SUMMARY_FILE, summary)
        barrier()
    return summary


class _Bar:
    """One bar over every planned epoch of folds and full fit; as on_epoch it advances, then `then`."""

    def __init__(self, planned: dict[str, tuple[Path, int]], enabled: bool, then: EpochCallback | None) -> None:
        self.planned, self.then = planned, then
        bar_format = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} epochs [{elapsed}<{remaining}]"
        self.bar = tqdm(total=self.total(), initial=self.done(), desc="cv", bar_format=bar_format, disable=not enabled)

    def __call__(self, run_name: str, row: dict) -> None:
        self.bar.update(run_name in self.planned)
        if self.then is not None:
            self.then(run_name, row)

    def total(self) -> int:
        return sum(epochs for _, epochs in self.planned.values())

    def done(self) -> int:
        return sum(min(len(load_log(run_dir)), epochs) for run_dir, epochs in self.planned.values())

    def set_epochs(self, name: str, epochs: int) -> None:
        """The full fit's epoch count, once the folds have chosen it."""
        if name in self.planned:
            self.planned[name] = (self.planned[name][0], epochs)
            self.bar.total, self.bar.n = self.total(), self.done()
            self.bar.refresh()


def _lock_runs(runs_dir: Path, shared: bool):
    """RUNS as a whole: exclusive for a `cv` that may run the full fit, shared between --only-folds processes."""
    fix = (
        "folds of one RUNS may train in parallel only as `cv --only-folds` processes, with the full fit left to "
        "a `cv --resume` once they are done"
        if shared
        else "wait for it to finish (then `cv --resume` continues), or pass another --out folder"
    )
    return hold_lock(runs_dir / RUNS_LOCK, f"runs folder {runs_dir}", f"{fix}. Nothing was written.", shared=shared)


def _shared_files_lock(runs_dir: Path):
    """A short lock around reading and writing folds.json and summary.json (parallel --only-folds processes)."""
    return wait_lock(runs_dir / SHARED_FILES_LOCK, f"folds.json and summary.json of {runs_dir}")


def _check_shared_files(runs_dir: Path, folds: dict[str, Any]) -> None:
    """Refuse, before writing anything, a folds.json or summary.json in RUNS that is not this run's to use."""
    check_folds_match(runs_dir / FOLDS_FILE, folds)
    path = runs_dir / SUMMARY_FILE
    if not path.exists() and not path.is_symlink():
        return
    if (read_json_dict(path) or {}).get("format") == SUMMARY_FORMAT:
        return
    raise UserError(
        f"{path} exists but was not written by `cityseg cv` (it lacks the {SUMMARY_FORMAT!r} format marker), and cv "
        "writes its summary there; it is left alone. Move that file away, or pass another --out folder."
    )


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
    """The median of best epochs, halves rounded up (the full fit's epochs, or a fold's scored epoch)."""
    return int(math.floor(statistics.median(best_epochs) + 0.5))


def summarize(runs_dir: Path) -> dict[str, Any]:
    """Cross-validation summary (summary.json) from the run folders: fold k scored at the median of the other folds'
    best epochs (null until all finish), `selected` at its own (optimistic); mean and sample std over folds."""
    runs_dir = Path(runs_dir)
    folds = load_folds(runs_dir / FOLDS_FILE)
    runs = [
        (n, run, config, load_log(run))
        for n in range(folds["k"])
        if (config := read_run_config(run := fold_dir(runs_dir, n))) is not None
    ]
    finished = {n: is_finished(run, config.epochs) for n, run, config, _ in runs}
    complete = sum(finished.values()) == folds["k"]
    best = {n: best_row(rows, config.select) for n, _, config, rows in runs}
    best_epochs = {n: best[n]["epoch"] for n, done in finished.items() if done}
    epochs = chosen_epochs(list(best_epochs.values())) if complete else None
    per_fold = []
    for n, run, config, rows in runs:
        if config.select == "last":
            scored_at = config.epochs if finished[n] else None
        else:
            scored_at = chosen_epochs([e for m, e in best_epochs.items() if m != n]) if complete else None
        at = {**_EMPTY_ROW, **next((row for row in rows if scored_at and row.get("epoch") == scored_at), {})}
        top = {**_EMPTY_ROW, **(best[n] or {})}
        fold = {"fold": n, "run_dir": run.name, "finished": finished[n], "epochs": config.epochs}
        fold |= {"epochs_done": len(rows), "select": config.select}
        per_fold.append(fold | {key: at[key] for key in _EMPTY_ROW} | {f"best_{key}": top[key] for key in _EMPTY_ROW})
    scored = [row for row in per_fold if row["epoch"] is not None]
    selected = [row for row in per_fold if row["finished"]]
    return {
        "format": SUMMARY_FORMAT,
        "k": folds["k"],
        "split": folds["split"],
        "seed": folds["seed"],
        "complete": complete,
        "folds": per_fold,
        **_statistics(scored, "val_miou", "class_iou"),
        "protocol": _protocol(per_fold, folds["k"], epochs),
        "selected": {**_statistics(selected, "best_val_miou", "best_class_iou"), "note": SELECTED_NOTE},
        "class_names": list(CLASS_NAMES),
        "chosen_epochs": epochs,
        "full": _full_summary(runs_dir / FULL_RUN),
        "std": "sample standard deviation (ddof=1) over folds; null with fewer than 2 values",
    }


def _statistics(rows: list[dict], miou_key: str, class_key: str) -> dict[str, Any]:
    """miou_mean/std and class_iou_mean/std over `rows` (null values left out)."""
    miou_mean, miou_std = _mean_std(np.array([row[miou_key] for row in rows], dtype=float))  # None -> NaN
    per_class = [_mean_std(column) for column in np.array([row[class_key] for row in rows], dtype=float).T]
    return {
        "miou_mean": miou_mean,
        "miou_std": miou_std,
        "class_iou_mean": [mean for mean, _ in per_class] if rows else None,
        "class_iou_std": [std for _, std in per_class] if rows else None,
    }


def _protocol(per_fold: list[dict], k: int, chosen: int | None) -> str:
    """One sentence: how the headline numbers were obtained (or why they are still null)."""
    done = sum(row["finished"] for row in per_fold)
    if per_fold and all(row["select"] == "last" for row in per_fold):
        epochs = sorted({row["epochs"] for row in per_fold})
        return (
            f"Each fold is scored at its last epoch ({', '.join(map(str, epochs))}) of a fixed budget that selects "
            f"nothing, and the full fit trains the same epochs on all train images; mean and sample std over "
            f"the {done} finished of {k} folds."
        )
    by = " and ".join(sorted({"val loss" if row["select"] == "loss" else "val mIoU" for row in per_fold})) or "val loss"
    rule = f"the median of the other folds' best epochs by {by}"
    if chosen is None:
        return f"Null until all {k} folds are finished ({done} are): each fold will be scored at {rule}."
    scored = ", ".join(str(row["epoch"]) for row in per_fold)
    return (
        f"Each fold is scored at {rule} (epochs {scored}), never at an epoch its own held-out cities chose; the "
        f"full fit trains for the median of all {k} folds' best epochs ({chosen}); mean and sample std over the "
        f"{k} folds."
    )


def _full_summary(run_dir: Path) -> dict[str, Any] | None:
    config = read_run_config(run_dir)
    if config is None:
        return None
    return {
        "run_dir": run_dir.name,
        "epochs": config.epochs,
        "schedule_epochs": config.schedule_length,
        "epochs_done": len(load_log(run_dir)),
        "finished": is_finished(run_dir, config.epochs),
    }


def _mean_std(values: np.ndarray) -> tuple[float | None, float | None]:
    """Mean and sample std of the finite values; None with fewer than 1 (mean) or 2 (std) of them."""
    values = values[np.isfinite(values)]
    mean = json_float(float(values.mean())) if len(values) else None
    return mean, json_float(float(values.std(ddof=1))) if len(values) >= 2 else None
