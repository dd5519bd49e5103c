"""How long a cross-validation will take: one overall bar (every fold's epochs, then the full fit's) with an ETA.

The bar sits beside the per-epoch bars of cityseg.training.engine (a widget in notebooks: tqdm.auto). It counts
what the run folders already hold, so a resumed `cityseg cv` and the training notebook's two calls of
`run_cv` (the folds with full=False, then the full fit with full=True) both start from what is done.

The estimate comes from the epochs logged so far, in this process or an earlier one: the median training
throughput (images/s) and the median validation time of an epoch, both without first epochs where later
ones exist (a first epoch also pays for worker start-up, cuDNN's search and compiling). A run's epoch is
then its training images over that throughput, plus the validation time if it validates; the full fit
trains on every image and validates nothing. After the first epoch this process finishes, one line says
the projected time of the whole cross-validation.
"""

from __future__ import annotations

import datetime
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from cityseg.training.runfolder import EpochCallback, load_log

BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} epochs [{elapsed}{postfix}]"


@dataclass
class PlannedRun:
    """One run of the cross-validation as the bar counts it."""

    name: str  # the run folder's name, as the trainer reports it to on_epoch
    run_dir: Path
    epochs: int  # planned; the full fit's is an upper bound until the folds have chosen it
    train_images: int
    validated: bool


def epoch_seconds(runs: Sequence[PlannedRun], rows: dict[str, list[dict]]) -> dict[str, float] | None:
    """Estimated seconds of one epoch of each run, from the logged rows of all runs (None before any row)."""
    images = {run.name: run.train_images for run in runs}
    logged = [(name, row) for name, each in rows.items() for row in each if row.get("images_per_s")]
    later = [(name, row) for name, row in logged if row.get("epoch", 1) > 1]
    sample = later or logged
    if not sample:
        return None
    rate = statistics.median(row["images_per_s"] for _, row in sample)
    validation = [
        max(0.0, row["seconds"] - images[name] / row["images_per_s"])
        for name, row in sample
        if row.get("val_loss") is not None and name in images
    ]
    val_seconds = statistics.median(validation) if validation else 0.0
    return {run.name: run.train_images / rate + (val_seconds if run.validated else 0.0) for run in runs}


def duration_text(seconds: float) -> str:
    """'3 h 05 min', '12 min', '40 s'."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


class CVProgress:
    """The overall bar of one `run_cv` call; `callback(on_epoch)` feeds it from the trainer's epoch ends."""

    def __init__(self, runs: Sequence[PlannedRun], enabled: bool = True) -> None:
        self.runs = {run.name: run for run in runs}
        self.rows = {
            run.name: [row for row in load_log(run.run_dir) if row.get("epoch", 0) <= run.epochs] for run in runs
        }
        self.projected = False
        self.bar = None
        if enabled and runs:
            self.bar = tqdm(
                total=self.total(),
                initial=self.done(),
                desc="cv",
                unit="epoch",
                bar_format=BAR_FORMAT,
                dynamic_ncols=True,
            )
            self._show_eta()

    def __enter__(self) -> CVProgress:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def total(self) -> int:
        return sum(run.epochs for run in self.runs.values())

    def done(self) -> int:
        return sum(min(len(self.rows[name]), run.epochs) for name, run in self.runs.items())

    def remaining_seconds(self) -> float | None:
        """Seconds the planned epochs not yet logged will take (None before any epoch is logged)."""
        estimate = epoch_seconds(list(self.runs.values()), self.rows)
        if estimate is None:
            return None
        return sum(max(0, run.epochs - len(self.rows[name])) * estimate[name] for name, run in self.runs.items())

    def elapsed_seconds(self) -> float:
        """Seconds of the epochs logged so far (this process's and earlier ones')."""
        return sum(row.get("seconds") or 0.0 for each in self.rows.values() for row in each)

    def set_epochs(self, name: str, epochs: int) -> None:
        """The full fit's epoch count, once the folds have chosen it."""
        if name in self.runs:
            self.runs[name].epochs = epochs
            if self.bar is not None:
                started = self.bar.start_t
                self.bar.reset(total=self.total())  # reset, not `.total =`: a notebook widget keeps its own maximum
                self.bar.start_t, self.bar.n = started, self.done()
                self._show_eta()

    def callback(self, then: EpochCallback | None = None) -> EpochCallback:
        """An on_epoch for `train_run` that updates the bar, then calls `then` (e.g. the notebook's live curves)."""

        def on_epoch(run_name: str, row: dict) -> None:
            self.record(run_name, row)
            if then is not None:
                then(run_name, row)

        return on_epoch

    def record(self, run_name: str, row: dict) -> None:
        """One finished epoch: advance the bar, refresh the ETA, and after the first one print the projection."""
        if run_name not in self.runs:
            return
        self.rows[run_name] = [r for r in self.rows[run_name] if r.get("epoch") != row.get("epoch")] + [row]
        if self.bar is None:
            return
        self.bar.n = self.done()
        self._show_eta()
        if not self.projected:
            self.projected = True
            tqdm.write(self.projection())

    def projection(self) -> str:
        """One line: how long the whole cross-validation takes by the current estimate, and when it ends."""
        remaining = self.remaining_seconds() or 0.0
        end = datetime.datetime.now() + datetime.timedelta(seconds=remaining)
        return (
            f"projected: the whole cross-validation ({self._plan_text()}) takes about "
            f"{duration_text(self.elapsed_seconds() + remaining)}; {duration_text(remaining)} left, done around "
            f"{end:%a %H:%M} (the cv bar's ETA follows later epochs)"
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _show_eta(self) -> None:
        remaining = self.remaining_seconds()
        self.bar.set_postfix_str("ETA " + ("?" if remaining is None else duration_text(remaining)), refresh=True)

    def _plan_text(self) -> str:
        folds = [run for run in self.runs.values() if run.validated]
        parts = [f"{len(folds)} fold(s) x {folds[0].epochs} epochs"] if folds else []
        parts += [f"full fit {run.epochs} epochs" for run in self.runs.values() if not run.validated]
        return " + ".join(parts)


def planned_runs(
    fold_runs: Iterable[tuple[str, Path, int]], epochs: int, full: tuple[Path, int] | None
) -> list[PlannedRun]:
    """Folds as (name, run folder, training images), each for `epochs`; then the full fit (folder, images)."""
    runs = [PlannedRun(name, run_dir, epochs, images, True) for name, run_dir, images in fold_runs]
    if full is not None:
        runs.append(PlannedRun(full[0].name, full[0], epochs, full[1], False))
    return runs


__all__ = ["CVProgress", "PlannedRun", "duration_text", "epoch_seconds", "planned_runs"]
