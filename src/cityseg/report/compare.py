"""Runs side by side, written as compare.pdf and its tables: what differs between them, their numbers, and whether
a gain beats fold noise. Runs on other datasets or fold splits are refused unless `allow_mismatch`; on the same
folds the per-fold gains are tested with Nadeau and Bengio's corrected resampled t-test (Machine Learning 52, 2003);
`TEST_CAVEATS` says its limits."""

import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from cityseg.errors import UserError
from cityseg.labels import CLASS_NAMES, NUM_CLASSES
from cityseg.report import results
from cityseg.report.layout import WARNING_RED, Document, typesetting
from cityseg.report.plots import Bars, class_colour, class_swatches, draw_class_bars, run_colours
from cityseg.report.results import CvResult, RunFiles, cv_result, finite, load_evaluation, load_runs
from cityseg.report.tables import CellStyle, Score, Table
from cityseg.training.model_names import model_title_of

SIGNIFICANCE = 0.05
CREATOR = "cityseg compare"
GAIN_COLOUR, LOSS_COLOUR, BEYOND_NOISE_FILL = "#1a7f37", "#b00020", "#fff2c6"
TEST_CAVEATS = (
    "What the test cannot show: the Nadeau-Bengio correction was derived for repeated random train/test splits; "
    "for one grouped k-fold split (whole cities per fold) it is a heuristic that nobody has validated. With k "
    "folds the test has k - 1 degrees of freedom (4 for 5 folds) and little power: the smallest gain that could "
    "reach p < 0.05 is given with each result. Each fold was trained with one seed, so seed noise is part of the "
    "fold-to-fold spread. With more than two runs each is tested against the first at 0.05, with no correction "
    'for multiple comparisons. "Within the noise" is not evidence that two runs are equal: it only says that '
    "these folds cannot tell them apart."
)


@dataclass(frozen=True)
class ComparedRun:
    """One runs folder under its label, with its evaluation (None: not evaluated)."""

    label: str
    runs: RunFiles
    cv: CvResult
    evaluation: dict[str, Any] | None = None


def _student_t():
    """scipy's Student t distribution, imported when a comparison needs it: scipy.stats is slow to import, and the
    report, the notebooks and the CLI import this module."""
    from scipy.stats import t

    return t


@dataclass(frozen=True)
class PairedComparison:
    """Per-fold mIoU of two runs on the same folds and what their differences say (differences in points)."""

    baseline: str
    other: str
    folds: list[int]
    baseline_miou: list[float]
    other_miou: list[float]
    val_train_ratio: float  # n_val / n_train averaged over the folds, for the corrected variance

    @property
    def differences(self) -> list[float]:  # other − baseline per fold, in points
        return [100 * (b - a) for a, b in zip(self.baseline_miou, self.other_miou, strict=True)]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.differences)

    @property
    def std(self) -> float:
        return statistics.stdev(self.differences) if len(self.differences) > 1 else math.nan

    def _scale(self) -> float:  # the corrected standard error of the mean per unit of std
        return math.sqrt(1 / len(self.differences) + self.val_train_ratio)

    @property
    def p_value(self) -> float:
        """Two-sided p of the corrected resampled t-test (NaN with one fold; 0 when every fold agrees exactly)."""
        if len(self.differences) < 2:
            return math.nan
        if self.std == 0:
            return 0.0 if self.mean != 0 else 1.0
        statistic = self.mean / (self.std * self._scale())
        return float(2 * _student_t().sf(abs(statistic), df=len(self.differences) - 1))

    @property
    def smallest_significant_gain(self) -> float:
        """The mean gain (points) that would just reach p < SIGNIFICANCE with these folds' spread."""
        k = len(self.differences)
        return math.nan if k < 2 else float(_student_t().ppf(1 - SIGNIFICANCE / 2, k - 1) * self.std * self._scale())

    def verdict(self) -> str:
        """The result in plain sentences, with ties counted at the printed precision."""
        k, signs = len(self.differences), [round(d, 2) for d in self.differences]
        change = f"{self.other} − {self.baseline}: {self.mean:+.2f} ± {self.std:.2f} points over {k} folds"
        if k < 2:
            return f"{change}; one fold has no spread to compare the gain with."
        higher, lower = sum(d > 0 for d in signs), sum(d < 0 for d in signs)
        count = f"{self.other} higher on {higher}, lower on {lower}, tied on {k - higher - lower} at 0.01 points"
        needed = f"a mean gain of at least {self.smallest_significant_gain:.2f} points would be needed for p < 0.05"
        needed = needed if self.std > 0 else "the folds agree exactly, so any other mean would reach p < 0.05"
        if self.p_value < SIGNIFICANCE:
            side = "better" if self.mean > 0 else "worse"
            return (
                f"{change} ({count}). {self.other} is {side} than {self.baseline} by more than the fold-to-fold "
                f"noise (corrected paired t-test, p = {self.p_value:.3f})."
            )
        return (
            f"{change} ({count}). The difference is within the fold-to-fold noise (corrected paired t-test, p = "
            f"{self.p_value:.2f}; {needed}): these folds do not show that the runs differ."
        )

    def table(self) -> Table:
        """fold | baseline | other | difference, with mean ± std of the differences as the last row."""
        diffs = [b - a for a, b in zip(self.baseline_miou, self.other_miou, strict=True)]
        rows: list[tuple] = [
            (fold, Score(a), Score(b), Score(d, signed=True))
            for fold, a, b, d in zip(self.folds, self.baseline_miou, self.other_miou, diffs, strict=True)
        ]
        means = [Score(statistics.fmean(v), _stdev(v)) for v in (self.baseline_miou, self.other_miou)]
        rows.append(("mean ± std", *means, Score(statistics.fmean(diffs), _stdev(diffs), signed=True)))
        columns = ("fold", f"{self.baseline} mIoU (%)", f"{self.other} mIoU (%)", "difference (points)")
        return Table.build(columns, rows, title=f"paired per-fold comparison: {self.other} vs {self.baseline}")


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
        return [pair for run in self.runs[1:] if (pair := paired_comparison(self.runs[0], run)) is not None]

    def tables(self) -> list[Table]:
        """Everything a notebook shows as tables."""
        return [self.runs_table(), self.settings_table(), *(p.table() for p in self.paired()), self.class_table()[0]]

    def verdicts(self) -> str:
        """The paired comparisons in plain sentences (or why there is none)."""
        if len(self.runs) < 2:
            return "Only one run: list more runs folders to compare it with."
        return (
            "\n".join(pair.verdict() for pair in self.paired())
            or "No paired comparison: no other run shares the first run's folds with every fold finished."
        )

    def protocol_text(self) -> str:
        """Which protocol the CV column follows: once when the runs agree, else what differs."""
        protocols = {run.label: run.cv.protocol for run in self.runs}
        first = f"{self.labels[0]}: {protocols[self.labels[0]]}"
        if len(set(protocols.values())) == 1:
            return f"CV mIoU: mean ± std over folds, one protocol for all runs: {protocols[self.labels[0]]}"
        if len({re.sub(r"\d+", "#", p) for p in protocols.values()}) == 1:  # the same but for their numbers
            epochs = "; ".join(f"{r.label} {', '.join(str(f.get('epoch')) for f in r.cv.folds)}" for r in self.runs)
            return f"CV mIoU: the same protocol, at different epochs (per fold: {epochs}). Protocol of {first}"
        return "CV mIoU follows different protocols: " + "; ".join(f"{k}: {v}" for k, v in protocols.items())

    def runs_table(self) -> Table:
        """One row per run: model, recipe, changes from it, CV mean ± std, val mIoU/iIoU, training time, images/s."""
        rows = []
        for run in self.runs:
            differences, evaluation = results.recipe_differences(run.runs), run.evaluation or {}
            changes = ", ".join(f"{name} {value}" for name, _, value in differences or []) or "none"
            changes = "n/a (config.json of another cityseg version)" if differences is None else changes
            keys = ("averageScoreClasses", "averageScoreInstClasses")
            val = [Score(evaluation[k]) for k in keys] if evaluation else ["–", "–"]
            speed = results.median_logged(run.runs.histories, "images_per_s")
            time = results.duration_text(results.total_seconds(run.runs.histories))
            time += "" if "full" in run.runs.histories else " (folds only)"
            config = run.runs.config.get("config") or {}
            cv = Score(run.cv.miou_mean, run.cv.miou_std)
            rows.append([run.label, model_title_of(config), str(config.get("recipe")), changes, cv, *val, time])
            rows[-1].append("–" if speed is None else f"{speed:.1f}")
        columns = ["run", "model", "recipe", "changes from the recipe", "CV mIoU (%)", "val mIoU (%)", "val iIoU (%)"]
        return Table.build([*columns, "training time", "images/s"], rows, title="runs compared")

    def settings_table(self) -> Table:
        """The training settings whose values differ between the runs (config.json)."""
        configs = [run.runs.config.get("config") or {} for run in self.runs]
        names = [n for n in dict.fromkeys(k for c in configs for k in c) if len({repr(c.get(n)) for c in configs}) > 1]
        rows = [[name, *(_setting(c.get(name)) for c in configs)] for name in names]
        none = "None: every setting is the same."
        return Table.build(["setting", *self.labels], rows, title="settings that differ between the runs", empty=none)

    def class_table(self) -> tuple[Table, dict[tuple[int, int], CellStyle]]:
        """Per class: each run's CV and val IoU and its difference to the first, highlighted."""
        base, others = self.runs[0], self.runs[1:]
        evaluated = [run for run in self.runs if run.evaluation is not None]
        compared_val = evaluated[1:] if base.evaluation is not None else []
        columns = ["class", *(f"{r.label} CV" for r in self.runs), *(f"Δ {r.label} CV" for r in others)]
        columns += [*(f"{r.label} val" for r in evaluated), *(f"Δ {r.label} val" for r in compared_val)]
        rows, styles = [], {}
        for i, name in enumerate(CLASS_NAMES):
            row: list[object] = [name]
            cv = [r.cv.class_iou_mean[i] for r in self.runs]
            val = [r.evaluation["classScores"][name] for r in evaluated]
            for values, compared in ((cv, others), (val, compared_val)):
                row += map(Score, values)
                for n, run in enumerate(compared, start=1):  # the difference to the first run, highlighted
                    row.append(_difference(values[0], values[n], _noise(base, run, i), styles, (i, len(row))))
            rows.append(row)
        return Table.build(columns, rows, title="IoU per class (%), differences to the first run in points"), styles


def _setting(value: Any) -> str:
    return "none" if value is None else ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def _noise(base: ComparedRun, other: ComparedRun, i: int) -> float | None:
    return max((s for s in (base.cv.class_iou_std[i], other.cv.class_iou_std[i]) if finite(s)), default=None)


def _difference(base: float | None, other: float | None, noise: float | None, styles: dict, at: tuple) -> object:
    """`other − base` as a signed score cell, recording its highlight in `styles`."""
    if not (finite(base) and finite(other)):
        return "n/a"
    delta = round(100 * (other - base), 2)
    beyond = noise is not None and abs(delta) > 100 * noise
    colour = GAIN_COLOUR if delta > 0 else LOSS_COLOUR if delta < 0 else None
    styles[at] = CellStyle(colour, "bold" if beyond else None, BEYOND_NOISE_FILL if beyond else None)
    return Score(other - base, signed=True)


def paired_comparison(baseline: ComparedRun, other: ComparedRun) -> PairedComparison | None:
    """Per-fold headline mIoU of two runs with identical folds (None when the folds differ or a fold is missing)."""
    if folds_key(baseline.runs) != folds_key(other.runs):
        return None
    a, b = ({f["fold"]: f["val_miou"] for f in run.cv.folds if finite(f.get("val_miou"))} for run in (baseline, other))
    folds = sorted(set(a) & set(b))
    if len(folds) < baseline.cv.k:
        return None
    ratio = statistics.fmean(len(f["val"]) / max(1, len(f["train"])) for f in baseline.runs.folds["folds"])
    return PairedComparison(baseline.label, other.label, folds, [a[f] for f in folds], [b[f] for f in folds], ratio)


def folds_key(runs: RunFiles) -> tuple:
    """The fold split itself: each fold's held-out image ids, in order."""
    return tuple(tuple(sorted(fold["val"])) for fold in runs.folds["folds"])


def _mismatches(runs: Sequence[ComparedRun]) -> list[str]:
    """Why these runs' CV numbers are not comparable: another dataset or fold split."""
    base, found = runs[0], []
    ids = [frozenset(i for f in run.runs.folds["folds"] for i in (*f["train"], *f["val"])) for run in runs]
    for run, other in zip(runs[1:], ids[1:], strict=True):
        if base.runs.synthetic != run.runs.synthetic:
            found.append(f"{base.label} and {run.label} were trained on different datasets (synthetic vs real data)")
        elif ids[0] != other:
            found.append(
                f"{base.label} and {run.label} were trained on different datasets ({len(ids[0])} vs {len(other)} "
                f"train images, {len(ids[0] ^ other)} not shared)"
            )
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
    """Load finished runs folders (with an evaluation JSON per run, or None) and check they can be compared."""
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
        runs = load_runs(folder, command="cityseg compare")
        if not runs.summary.get("complete", True):
            done = sum(bool(f.get("finished")) for f in runs.summary["folds"])
            raise UserError(
                f"{folder} has finished {done} of its {runs.summary['k']} folds (summary.json): it is still training "
                "or was stopped. `cityseg compare` compares finished cross-validations: let `cityseg cv` finish (or "
                "resume it with `cityseg cv ... --resume`), then compare again."
            )
        compared.append(ComparedRun(label, runs, cv_result(runs.summary), load_evaluation(path) if path else None))
    mismatches = _mismatches(compared)
    if mismatches and not allow_mismatch:
        raise UserError(
            "; ".join(mismatches) + ". Their cross-validation numbers measure different things, so "
            "cityseg refuses to compare them. Pass --allow-mismatch (allow_mismatch=True) to compare "
            "them anyway; the paired per-fold comparison is then left out for those runs."
        )
    return Comparison(compared, mismatches)


def _per_epoch(histories: Mapping[str, Sequence[Mapping]], key: str) -> tuple[list[int], np.ndarray]:
    """(epochs, (3, E) mean, min and max of one logged value over the folds); the full fit is left out."""
    by_epoch: dict[int, list[float]] = {}
    for name, rows in histories.items():
        for row in rows if name != "full" else ():
            if row.get(key) is not None:
                by_epoch.setdefault(int(row["epoch"]), []).append(float(row[key]))
    epochs = sorted(by_epoch)
    return epochs, np.array([[f(by_epoch[e]) for e in epochs] for f in (np.mean, min, max)])


def comparison_figure(comparison: Comparison, fig: Figure | None = None) -> Figure:
    """Per-class CV IoU, one colour per run, and the val mIoU and loss curves overlaid."""
    fig = fig if fig is not None else Figure(figsize=(11.0, 6.0), layout="constrained")
    runs: Sequence[ComparedRun] = comparison.runs
    colours = run_colours(comparison.labels)
    grid = fig.add_gridspec(2, 2, width_ratios=[1.1, 1.0])
    ax_classes, ax_miou, ax_loss = fig.add_subplot(grid[:, 0]), fig.add_subplot(grid[0, 1]), fig.add_subplot(grid[1, 1])
    bars = [Bars(run.label, run.cv.class_iou_mean, run.cv.class_iou_std, colours[run.label]) for run in runs]
    draw_class_bars(ax_classes, bars, [Patch(color=colours[b.label], label=b.label) for b in bars])
    for run in runs:
        for ax, key, scale in ((ax_miou, "val_miou", 100.0), (ax_loss, "train_loss", 1.0)):
            epochs, (mean, low, high) = _per_epoch(run.runs.histories, key)
            ax.plot(epochs, scale * mean, "-o", ms=3, color=colours[run.label], label=f"{run.label} folds")
            ax.fill_between(epochs, scale * low, scale * high, color=colours[run.label], alpha=0.15, linewidth=0)
        full = run.runs.histories.get("full") or []
        ax_loss.plot([r["epoch"] for r in full], [r.get("train_loss") for r in full], "--", color=colours[run.label])
    class_swatches(ax_classes, "y")
    ax_classes.set(xlabel="cross-validation IoU (%), mean ± std over folds")
    ax_miou.set(xlabel="epoch", ylabel="val mIoU (%)", title="validation mIoU (mean over folds, range shaded)")
    ax_loss.set(xlabel="epoch", ylabel="train loss (log)", yscale="log", title="training loss (full fit dashed)")
    for ax in (ax_classes, ax_miou, ax_loss):
        ax.grid(alpha=0.3)
    for ax in (ax_miou, ax_loss):
        ax.xaxis.get_major_locator().set_params(integer=True)
    return fig


def comparison_pages(comparison: Comparison, doc: Document) -> None:
    """The pages of compare.pdf; blocks that do not fit continue on a new page."""
    title = " vs ".join(comparison.labels)
    first = doc.page(f"comparison: {title}", f"Runs compared: {title}")
    if comparison.synthetic:
        first.banner(
            "SYNTHETIC DATA in at least one run (cityseg synth): differences only show that the pipeline reacts to "
            "the settings; they say nothing about Cityscapes."
        )
    for mismatch in comparison.mismatches:
        first.text(f"Not strictly comparable (compared because it was asked for): {mismatch}.", color=WARNING_RED)
    doc.add(lambda page: page.table(comparison.runs_table(), size=7.5))
    note = (
        f"{comparison.protocol_text()} Val: the official Cityscapes metrics of each run's --eval JSON (– where none "
        "was given). Training time: all folds and the full fit; images/s: median over epochs."
    )
    doc.add(lambda page: page.note(note))
    settings = comparison.settings_table()
    doc.add(lambda page: page.heading("Settings that differ"))
    doc.add(lambda page: page.table(settings) if settings.rows else page.text(settings.empty))
    paired = comparison.paired()
    if len(comparison.runs) > 1:
        doc.add(lambda page: page.heading("Paired per-fold comparison"))
        if not paired:
            doc.add(lambda page: page.text("None: no other run shares the first run's folds with every fold finished."))
        for pair in paired:
            doc.add(lambda page, pair=pair: page.table(pair.table(), rules_before=[len(pair.folds)], after=0.06))
            doc.add(lambda page, pair=pair: page.text(pair.verdict(), weight="bold"))
        if paired:
            doc.add(lambda page: page.note(TEST_CAVEATS))
    table, styles = comparison.class_table()
    page = doc.page(f"comparison: {title}", "IoU per class")
    page.note(
        "IoU in percent; Δ columns: difference to the first run in points, green a gain and red a loss, bold on a "
        "tinted cell where it exceeds the larger of the two runs' fold-to-fold std for that class."
    )
    page.table(table, size=7.5, styles=styles, swatches=[class_colour(i) for i in range(NUM_CLASSES)])
    page = doc.page(f"comparison: {title}", "Per-class IoU and training curves")
    comparison_figure(comparison, page.plot_area(margins=(1.25, 0.1, 0.5, 0.3), space=0.35))


def build_comparison(
    runs_dirs: Sequence[Path],
    out_pdf: Path,
    labels: Sequence[str] | str | None = None,
    evaluations: Sequence[Path | None] | None = None,
    allow_mismatch: bool = False,
) -> Comparison:
    """`cityseg compare`: load and check the runs, write compare.pdf and its tables; returns the comparison."""
    comparison = compare_runs(runs_dirs, labels, evaluations, allow_mismatch)
    paired = {"paired_" + re.sub(r"[^\w.-]", "_", pair.other): pair.table() for pair in comparison.paired()}
    tables = {"runs": comparison.runs_table(), **paired, "classes": comparison.class_table()[0]}
    doc = Document(out_pdf, CREATOR, comparison.synthetic)
    doc.check(list(tables))
    with typesetting():
        comparison_pages(comparison, doc)
    data = "SYNTHETIC data" if comparison.synthetic else "Cityscapes data"
    footer = "built from each runs folder's config.json, log.jsonl, folds.json, summary.json and the --eval JSONs"
    title = f"cityseg compare - {data} - {', '.join(comparison.labels)}"
    doc.write(title, "semantic segmentation runs compared", footer, tables)
    return comparison
