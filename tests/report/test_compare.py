"""`cityseg compare`: two real tiny runs side by side, the paired test against its definition, and refusals."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers_training import CLI_ENV, cityseg_command
from pypdf import PdfReader

from cityseg.errors import UserError
from cityseg.labels import CLASS_NAMES
from cityseg.report import training_config
from cityseg.report.compare import PairedComparison, compare_runs
from cityseg.report.tables import mean_std_text, percent

pytestmark = pytest.mark.slow  # two tiny cv runs, then `cityseg compare` in child processes


@pytest.fixture(scope="module")
def two_runs(one_epoch_cv, tmp_path_factory) -> SimpleNamespace:
    """The same 2 folds trained twice (lr 1e-3: the session's `one_epoch_cv`, and 3e-3 here, one epoch each);
    only the first is evaluated on val."""
    from cityseg.training.cv import run_cv

    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("compare")
    config = training_config(
        "seed", epochs=1, size="128x64", workers=0, device="cpu", encoder_weights="none", overrides={"lr": 3e-3}
    )
    run_cv(one_epoch_cv.root, base / "runs_b", config, k=2, split="city", progress=False)
    return SimpleNamespace(base=base, a=one_epoch_cv.runs, b=base / "runs_b", eval_a=one_epoch_cv.eval_json)


def compare(*args: str | Path) -> subprocess.CompletedProcess:
    """`cityseg compare ...` as a user runs it."""
    return subprocess.run(cityseg_command("compare", *args), env=CLI_ENV, capture_output=True, text=True, timeout=300)


def page_texts(pdf: Path) -> list[str]:
    return [page.extract_text() for page in PdfReader(pdf).pages]


def summary(runs: Path) -> dict:
    return json.loads((runs / "summary.json").read_text())


def test_compare_writes_both_labels_the_runs_table_and_the_per_class_table(two_runs, tmp_path):
    out = tmp_path / "compare.pdf"
    done = compare(
        two_runs.a, two_runs.b, "--labels", "seed,strong", "--eval", two_runs.eval_a, "--eval", "none", "--out", out
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert str(out) in done.stdout
    texts = page_texts(out)
    assert all("SYNTHETIC DATA" in text for text in texts)
    a, b = summary(two_runs.a), summary(two_runs.b)
    evaluation = json.loads(two_runs.eval_a.read_text())
    cv_a, cv_b = mean_std_text(a["miou_mean"], a["miou_std"]), mean_std_text(b["miou_mean"], b["miou_std"])
    first = texts[0]
    assert "Runs compared: seed vs strong" in first
    val = f"{percent(evaluation['averageScoreClasses'])} {percent(evaluation['averageScoreInstClasses'])}"
    assert re.search(rf"^seed seed .*{re.escape(cv_a)} {re.escape(val)} \d+ min \d\d s \d+\.\d$", first, re.M)
    assert re.search(rf"^strong seed .*{re.escape(cv_b)} – – \d+ min \d\d s \d+\.\d$", first, re.M)  # no --eval
    assert re.search(r"^lr 0\.001 0\.003$", first, re.M)  # the one setting that differs

    # Paired per fold: both runs trained the same two folds.
    for fold_a, fold_b in zip(a["folds"], b["folds"], strict=True):
        difference = 100 * (fold_b["val_miou"] - fold_a["val_miou"])
        assert re.search(
            rf"^{fold_a['fold']} {re.escape(percent(fold_a['val_miou']))} "
            rf"{re.escape(percent(fold_b['val_miou']))} {re.escape(f'{difference:+.2f}')}$",
            first,
            re.M,
        )
    assert "fold-to-fold noise" in " ".join(first.split())

    classes = next(text for text in texts if "IoU per class" in text and "Δ strong CV" in text)
    for i, name in enumerate(CLASS_NAMES):
        mean_a, mean_b = a["class_iou_mean"][i], b["class_iou_mean"][i]
        cells = [percent(mean_a), percent(mean_b)]
        if mean_a is not None and mean_b is not None:
            cells.append(f"{100 * (mean_b - mean_a):+.2f}")
        cells.append(percent(evaluation["classScores"][name]))
        assert re.search(rf"^{name} {re.escape(' '.join(cells))}$", classes, re.M), name


def student_t_two_sided_p(statistic: float, dof: int, steps: int = 200_000) -> float:
    """1 − ∫_{-|t|}^{|t|} of the Student t density (written from its definition), by Simpson's rule."""
    constant = math.gamma((dof + 1) / 2) / (math.sqrt(dof * math.pi) * math.gamma(dof / 2))

    def density(x: float) -> float:
        return constant * (1 + x * x / dof) ** (-(dof + 1) / 2)

    h = 2 * abs(statistic) / steps
    total = density(-abs(statistic)) + density(abs(statistic))
    total += sum((4 if n % 2 else 2) * density(-abs(statistic) + n * h) for n in range(1, steps))
    return 1 - total * h / 3


@pytest.mark.parametrize("gains", [[2.0, 2.5, 1.8, 2.2, 3.0], [2.0, -1.5, 0.5, -0.8, 1.0]])
def test_paired_comparison_is_the_corrected_resampled_t_test(gains):
    baseline = [0.60, 0.62, 0.61, 0.63, 0.59]
    other = [b + g / 100 for b, g in zip(baseline, gains, strict=True)]
    pair = PairedComparison("a", "b", [0, 1, 2, 3, 4], baseline, other, val_train_ratio=0.25)
    assert pair.differences == pytest.approx(gains)
    mean = sum(gains) / 5
    std = math.sqrt(sum((g - mean) ** 2 for g in gains) / 4)
    assert (pair.mean, pair.std) == pytest.approx((mean, std))
    statistic = mean / math.sqrt(std**2 * (1 / 5 + 0.25))  # Nadeau & Bengio: var * (1/k + n_val/n_train)
    assert pair.p_value == pytest.approx(student_t_two_sided_p(statistic, 4), abs=1e-6)
    verdict = pair.verdict()
    assert f"b − a: {mean:+.2f} ± {std:.2f} points over 5 folds" in verdict
    if pair.p_value < 0.05:
        assert "b is better than a by more than the fold-to-fold noise" in verdict
    else:
        assert "within the fold-to-fold noise" in verdict
    assert (pair.p_value < 0.05) == (gains[1] > 0)  # the consistent gain passes, the mixed one does not


def copy_runs(runs: Path, to: Path) -> Path:
    shutil.copytree(runs, to, ignore=shutil.ignore_patterns("*.pt", "events.out.tfevents.*"))
    return to


@pytest.mark.parametrize("change", ["other fold split", "other dataset"])
def test_runs_on_another_dataset_or_fold_split_are_refused_unless_allowed(two_runs, tmp_path, change):
    other = copy_runs(two_runs.b, tmp_path / "other")
    folds = json.loads((other / "folds.json").read_text())
    first, second = folds["folds"]
    if change == "other fold split":  # one image moves between the folds: the same images, other folds
        moved = first["val"].pop()
        second["val"].append(moved)
        first["train"].append(moved)
        second["train"].remove(moved)
    else:
        dropped = first["val"].pop()
        second["train"].remove(dropped)
    (other / "folds.json").write_text(json.dumps(folds))
    out = tmp_path / "compare.pdf"
    done = compare(two_runs.a, other, "--labels", "a,b", "--out", out)
    message = " ".join(done.stderr.split())
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert ("different fold splits" if change == "other fold split" else "different datasets") in message
    assert "--allow-mismatch" in message and not out.exists()

    done = compare(two_runs.a, other, "--labels", "a,b", "--out", out, "--allow-mismatch")
    assert done.returncode == 0, done.stderr[-2000:]
    first = " ".join(page_texts(out)[0].split())
    assert "Not strictly comparable" in first and "None: no other run shares the first run's folds" in first


def test_labels_and_evaluations_must_match_the_runs(two_runs, tmp_path):
    with pytest.raises(UserError, match="one distinct, non-empty label per runs folder"):
        compare_runs([two_runs.a, two_runs.b], labels="only-one")
    with pytest.raises(UserError, match="one distinct"):
        compare_runs([two_runs.a, two_runs.b], labels=["same", "same"])
    with pytest.raises(UserError, match="one --eval per run"):
        compare_runs([two_runs.a, two_runs.b], evaluations=[two_runs.eval_a])
    done = compare(two_runs.a, "--out", tmp_path / "one.pdf")
    assert done.returncode == 2 and "at least two runs folders" in done.stderr
    foreign = tmp_path / "notes.pdf"
    foreign.write_bytes(b"%PDF-1.4 someone else's file")
    done = compare(two_runs.a, two_runs.b, "--out", foreign)
    assert done.returncode == 2 and "not written by `cityseg compare`" in " ".join(done.stderr.split())
    assert foreign.read_bytes() == b"%PDF-1.4 someone else's file"


def test_comparison_tables_for_the_notebook(two_runs):
    comparison = compare_runs([two_runs.a, two_runs.b], labels=["seed", "strong"], evaluations=[two_runs.eval_a, None])
    runs = comparison.runs_table()
    assert [row[0] for row in runs.rows] == ["seed", "strong"] and runs.rows[1][4] == "–"
    assert [row[0] for row in comparison.settings_table().rows] == ["lr"]
    (pair,) = comparison.paired()
    assert pair.folds == [0, 1] and len(pair.differences) == 2
    table, styles = comparison.class_table()
    assert [row[0] for row in table.rows] == list(CLASS_NAMES)
    delta = table.columns.index("Δ strong CV")
    for (row, column), style in styles.items():  # a difference is coloured by its sign
        if column == delta:
            value = float(table.rows[row][column])
            assert style.color == ("#1a7f37" if value > 0 else "#b00020" if value < 0 else None)
