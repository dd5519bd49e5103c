"""Runs side by side: what differs between them, their numbers, and whether a gain beats fold noise.

    cityseg compare RUNS_A RUNS_B [...] --labels seed,strong [--eval A.json --eval B.json] --out compare.pdf

A runs folder does not know where its predictions were evaluated, so each run's evaluation JSON is
given explicitly (one `--eval` per run, in the same order; `none` for a run without one). Runs trained
on different datasets or fold splits are refused unless `allow_mismatch` is set, because their
cross-validation numbers then measure different things.

The paired comparison needs the same folds: each fold's difference in (headline) mIoU is one sample
of the gain. Its spread is the fold-to-fold noise, and the test is Nadeau and Bengio's corrected
resampled t-test (Machine Learning 52, 2003): the paired t statistic with the variance of the mean
inflated from var/k to var * (1/k + n_val/n_train), because folds share training images and their
differences are correlated.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cityseg.errors import UserError
from cityseg.labels import CLASS_NAMES
from cityseg.report.layout import CellStyle
from cityseg.report.results import (
    CvResult,
    cv_result,
    duration_text,
    finite,
    median_logged,
    recipe_differences,
    total_seconds,
)
from cityseg.report.runfiles import RunFiles, load_evaluation, load_runs
from cityseg.report.tables import Table, mean_std_text, percent

SIGNIFICANCE = 0.05
GAIN_COLOUR, LOSS_COLOUR, BEYOND_NOISE_FILL = "#1a7f37", "#b00020", "#fff2c6"


@dataclass(frozen=True)
class ComparedRun:
    """One runs folder under its label, with its evaluation (None: not evaluated)."""

    label: str
    runs: RunFiles
    cv: CvResult
    evaluation: dict[str, Any] | None = None


@dataclass(frozen=True)
class PairedComparison:
    """Per-fold mIoU of two runs on the same folds and what their differences say (all in points)."""

    baseline: str
    other: str
    folds: list[int]
    baseline_miou: list[float]
    other_miou: list[float]
    val_train_ratio: float  # n_val / n_train averaged over the folds, for the corrected variance

    @property
    def differences(self) -> list[float]:
        """other − baseline per fold, in points."""
        return [100 * (b - a) for a, b in zip(self.baseline_miou, self.other_miou, strict=True)]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.differences)

    @property
    def std(self) -> float:
        return statistics.stdev(self.differences) if len(self.differences) > 1 else math.nan

    @property
    def p_value(self) -> float:
        """Two-sided p of the corrected resampled t-test (NaN with one fold; 0 when every fold agrees exactly)."""
        from scipy.stats import t as student_t

        k = len(self.differences)
        if k < 2:
            return math.nan
        variance = self.std**2 * (1 / k + self.val_train_ratio)
        if variance == 0:
            return 0.0 if self.mean != 0 else 1.0
        statistic = self.mean / math.sqrt(variance)
        return float(2 * student_t.sf(abs(statistic), df=k - 1))

    def verdict(self) -> str:
        """The result in one plain sentence."""
        k, wins = len(self.differences), sum(d > 0 for d in self.differences)
        change = f"{self.other} − {self.baseline}: {self.mean:+.2f} ± {self.std:.2f} points over {k} folds"
        if k < 2:
            return f"{change}; one fold has no spread to compare the gain with."
        if self.p_value < SIGNIFICANCE:
            side = "better" if self.mean > 0 else "worse"
            return (
                f"{change} ({self.other} higher on {wins} of {k}). {self.other} is {side} than {self.baseline} "
                f"by more than the fold-to-fold noise (corrected paired t-test, p = {self.p_value:.3f})."
            )
        return (
            f"{change} ({self.other} higher on {wins} of {k}). The difference is within the fold-to-fold noise "
            f"(corrected paired t-test, p = {self.p_value:.2f}): these folds do not show that the runs differ."
        )

    def table(self) -> Table:
        """fold | baseline | other | difference, with mean ± std of the differences as the last row."""
        rows = [
            (str(fold), percent(a), percent(b), f"{d:+.2f}")
            for fold, a, b, d in zip(self.folds, self.baseline_miou, self.other_miou, self.differences, strict=True)
        ]
        rows.append(
            (
                "mean ± std",
                mean_std_text(statistics.fmean(self.baseline_miou), _stdev(self.baseline_miou)),
                mean_std_text(statistics.fmean(self.other_miou), _stdev(self.other_miou)),
                f"{self.mean:+.2f} ± {self.std:.2f}",
            )
        )
        return Table.build(
            ("fold", f"{self.baseline} mIoU (%)", f"{self.other} mIoU (%)", "difference (points)"),
            rows,
            title=f"paired per-fold comparison: {self.other} vs {self.baseline}",
        )


def _stdev(values: Sequence[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


@dataclass
class Comparison:
    """Several runs compared; `mismatches` lists why they are not strictly comparable (when allowed)."""

    runs: list[ComparedRun]
    mismatches: list[str] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return [run.label for run in self.runs]

    @property
    def synthetic(self) -> bool:
        return any(run.runs.synthetic for run in self.runs)

    def paired(self) -> list[PairedComparison]:
        """Each run against the first, where both used the same folds and scored every fold."""
        baseline = self.runs[0]
        return [pair for run in self.runs[1:] if (pair := paired_comparison(baseline, run)) is not None]

    def tables(self) -> list[Table]:
        """Everything a notebook shows as tables: runs, differing settings, paired folds, per-class IoU."""
        return [
            self.runs_table(),
            self.settings_table(),
            *(pair.table() for pair in self.paired()),
            self.class_table()[0],
        ]

    def verdicts(self) -> str:
        """The paired comparisons in plain sentences (or why there is none)."""
        if len(self.runs) < 2:
            return "Only one run: list more runs folders to compare it with."
        return (
            "\n".join(pair.verdict() for pair in self.paired())
            or "No paired comparison: no other run shares the first run's folds with every fold finished."
        )

    def runs_table(self) -> Table:
        """One row per run: recipe, changes from it, CV mean ± std, val mIoU/iIoU, training time, images/s."""
        rows = []
        for run in self.runs:
            differences = recipe_differences(run.runs)
            changes = (
                "n/a (config.json of another cityseg version)"
                if differences is None
                else ", ".join(f"{name} {value}" for name, _, value in differences) or "none"
            )
            evaluation = run.evaluation
            row = [
                run.label,
                str((run.runs.config.get("config") or {}).get("recipe")),
                changes,
                mean_std_text(run.cv.miou_mean, run.cv.miou_std),
                percent(evaluation["averageScoreClasses"]) if evaluation else "–",
                percent(evaluation["averageScoreInstClasses"]) if evaluation else "–",
            ]
            speed = median_logged(run.runs.histories, "images_per_s")
            rows.append(
                row + [duration_text(total_seconds(run.runs.histories)), "–" if speed is None else f"{speed:.1f}"]
            )
        columns = [
            "run",
            "recipe",
            "changes from the recipe",
            "CV mIoU (%)",
            "val mIoU (%)",
            "val iIoU (%)",
            "training time",
            "images/s",
        ]
        return Table.build(columns, rows, title="runs compared")

    def settings_table(self) -> Table:
        """The training settings whose values differ between the runs (config.json)."""
        configs = [run.runs.config.get("config") or {} for run in self.runs]
        names = [
            name
            for name in dict.fromkeys(k for c in configs for k in c)
            if len({repr(c.get(name)) for c in configs}) > 1
        ]
        rows = [[name, *(_setting(c.get(name)) for c in configs)] for name in names]
        return Table.build(["setting", *self.labels], rows, title="settings that differ between the runs")

    def class_table(self) -> tuple[Table, dict[tuple[int, int], CellStyle]]:
        """Per class: each run's CV IoU and val IoU, and each run's difference to the first, highlighted.

        Differences are green (gain) or red (loss); bold on a tinted cell where larger than the larger
        fold-to-fold std of that class in the two runs (a rough noise floor).
        """
        base = self.runs[0]
        evaluated = [run for run in self.runs if run.evaluation is not None]
        columns = ["class", *(f"{r.label} CV" for r in self.runs), *(f"Δ {r.label} CV" for r in self.runs[1:])]
        columns += [*(f"{r.label} val" for r in evaluated)]
        columns += [f"Δ {r.label} val" for r in evaluated[1:]] if base.evaluation is not None else []
        rows, styles = [], {}
        for i, name in enumerate(CLASS_NAMES):
            row = [name, *(percent(r.cv.class_iou_mean[i]) for r in self.runs)]
            for run in self.runs[1:]:
                noise = max((s for s in (base.cv.class_iou_std[i], run.cv.class_iou_std[i]) if finite(s)), default=None)
                row.append(_difference(base.cv.class_iou_mean[i], run.cv.class_iou_mean[i], noise, styles, i, len(row)))
            row += [percent(r.evaluation["classScores"][name]) for r in evaluated]
            if base.evaluation is not None:
                for run in evaluated[1:]:
                    noise = max(
                        (s for s in (base.cv.class_iou_std[i], run.cv.class_iou_std[i]) if finite(s)), default=None
                    )
                    row.append(
                        _difference(
                            base.evaluation["classScores"][name],
                            run.evaluation["classScores"][name],
                            noise,
                            styles,
                            i,
                            len(row),
                        )
                    )
            rows.append(row)
        return Table.build(columns, rows, title="IoU per class (%), differences to the first run in points"), styles


def _setting(value: Any) -> str:
    return "none" if value is None else ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def _difference(
    base: float | None, other: float | None, noise: float | None, styles: dict, row: int, column: int
) -> str:
    """`other − base` in points as a cell, recording its highlight in `styles`."""
    if not (finite(base) and finite(other)):
        return "n/a"
    delta = 100 * (other - base)
    colour = GAIN_COLOUR if delta > 0 else LOSS_COLOUR if delta < 0 else None
    beyond = noise is not None and abs(delta) > 100 * noise
    styles[(row, column)] = CellStyle(
        color=colour, weight="bold" if beyond else None, fill=BEYOND_NOISE_FILL if beyond else None
    )
    return f"{delta:+.2f}"


def paired_comparison(baseline: ComparedRun, other: ComparedRun) -> PairedComparison | None:
    """Per-fold headline mIoU of two runs with identical folds (None when the folds differ or a fold is missing)."""
    if folds_key(baseline.runs) != folds_key(other.runs):
        return None
    a = {f.fold: f.val_miou for f in baseline.cv.folds if finite(f.val_miou)}
    b = {f.fold: f.val_miou for f in other.cv.folds if finite(f.val_miou)}
    folds = sorted(set(a) & set(b))
    if len(folds) < baseline.cv.k:
        return None
    entries = baseline.runs.folds["folds"]
    ratio = statistics.fmean(len(f["val"]) / max(1, len(f["train"])) for f in entries)
    return PairedComparison(baseline.label, other.label, folds, [a[f] for f in folds], [b[f] for f in folds], ratio)


def dataset_key(runs: RunFiles) -> tuple[bool, frozenset[str]]:
    """What a runs folder was trained on: synthetic or not, and the set of train image ids its folds cover."""
    ids = frozenset(i for fold in runs.folds["folds"] for i in (*fold["train"], *fold["val"]))
    return runs.synthetic, ids


def folds_key(runs: RunFiles) -> tuple:
    """The fold split itself: each fold's held-out image ids, in order."""
    return tuple(tuple(sorted(fold["val"])) for fold in runs.folds["folds"])


def _mismatches(runs: Sequence[ComparedRun]) -> list[str]:
    """Why these runs' cross-validation numbers are not comparable (empty when they are)."""
    base, found = runs[0], []
    for run in runs[1:]:
        (base_synthetic, base_ids), (synthetic, ids) = dataset_key(base.runs), dataset_key(run.runs)
        if base_synthetic != synthetic or base_ids != ids:
            what = (
                "synthetic vs real data"
                if base_synthetic != synthetic
                else f"{len(base_ids)} vs {len(ids)} train images, {len(base_ids ^ ids)} not shared"
            )
            found.append(f"{base.label} and {run.label} were trained on different datasets ({what})")
        elif folds_key(base.runs) != folds_key(run.runs):
            found.append(
                f"{base.label} and {run.label} use different fold splits ({base.cv.k} folds by {base.cv.split} "
                f"vs {run.cv.k} folds by {run.cv.split}, or other images per fold)"
            )
    return found


def compare_runs(
    runs_dirs: Sequence[Path | str],
    labels: Sequence[str] | str | None = None,
    evaluations: Sequence[Path | str | None] | None = None,
    allow_mismatch: bool = False,
) -> Comparison:
    """Load runs folders (with an evaluation JSON per run, or None) and check that they can be compared."""
    dirs = [Path(d) for d in runs_dirs]
    if not dirs:
        raise UserError("no runs folders to compare; give at least one (two for a comparison).")
    if isinstance(labels, str):
        labels = [label.strip() for label in labels.split(",")]
    labels = list(labels) if labels is not None else [d.resolve().name for d in dirs]
    if len(labels) != len(dirs) or len(set(labels)) != len(labels) or not all(labels):
        raise UserError(
            f"--labels needs one distinct, non-empty label per runs folder: {len(dirs)} folders "
            f"({', '.join(map(str, dirs))}) but labels {labels}. Pass e.g. --labels a,b."
        )
    evaluations = list(evaluations) if evaluations is not None else [None] * len(dirs)
    if len(evaluations) != len(dirs):
        raise UserError(
            f"{len(evaluations)} evaluation JSON(s) for {len(dirs)} runs folders; give one --eval per "
            "run in the same order (`none` for a run without an evaluation), or none at all."
        )
    compared = []
    for label, folder, evaluation in zip(labels, dirs, evaluations, strict=True):
        path = None if evaluation is None or str(evaluation).lower() == "none" else Path(evaluation)
        runs = load_runs(folder)
        compared.append(ComparedRun(label, runs, cv_result(runs.summary), load_evaluation(path) if path else None))
    mismatches = _mismatches(compared)
    if mismatches and not allow_mismatch:
        raise UserError(
            "; ".join(mismatches) + ". Their cross-validation numbers measure different things, so "
            "cityseg refuses to compare them. Pass --allow-mismatch (allow_mismatch=True) to compare "
            "them anyway; the paired per-fold comparison is then left out for those runs."
        )
    return Comparison(compared, mismatches)
