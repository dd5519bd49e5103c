"""`cityseg compare`: two real tiny runs side by side, the paired test against its definition, and refusals."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers_training import cli_in_process
from pypdf import PdfReader

from cityseg.errors import UserError
from cityseg.labels import CLASS_NAMES
from cityseg.report import training_config
from cityseg.report.compare import PairedComparison, compare_runs
from cityseg.report.tables import mean_std_text, percent


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


def compare(*args: str | Path) -> SimpleNamespace:
    """`cityseg compare ...`, in this process (tests/cli/ start the commands as processes)."""
    return cli_in_process("compare", *args)


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
    texts = page_texts(out)
    assert all("SYNTHETIC DATA" in text for text in texts)
    a, b = summary(two_runs.a), summary(two_runs.b)
    evaluation = json.loads(two_runs.eval_a.read_text())
    cv_a, cv_b = mean_std_text(a["miou_mean"], a["miou_std"]), mean_std_text(b["miou_mean"], b["miou_std"])
    first = texts[0]
    assert "Runs compared: seed vs strong" in first
    val = f"{percent(evaluation['averageScoreClasses'])} {percent(evaluation['averageScoreInstClasses'])}"
    runs_row = r"^{} U-Net / resnet34 seed .*{} {} \d+ min \d\d s \d+\.\d$"
    assert re.search(runs_row.format("seed", re.escape(cv_a), re.escape(val)), first, re.M)
    assert re.search(runs_row.format("strong", re.escape(cv_b), "– –"), first, re.M)  # no --eval
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
    flat = " ".join(first.split())
    assert "fold-to-fold noise" in flat
    for caveat in ("derived for repeated random", "degrees of freedom", "one seed", "multiple comparisons"):
        assert caveat in flat, caveat
    assert '"Within the noise" is not evidence that two runs are equal' in flat

    # The command prints the headline (each run's CV mIoU, the paired result), where the files are, and what next.
    pair = compare_runs([two_runs.a, two_runs.b], labels="seed,strong").paired()[0]
    lines = done.stdout.splitlines()
    assert f"seed: CV mIoU {cv_a} %, val mIoU {percent(evaluation['averageScoreClasses'])} %" in lines
    assert f"strong: CV mIoU {cv_b} %, not evaluated on val" in lines
    assert pair.verdict() in lines and f"comparison: {out}" in lines and lines[-1].startswith("next: ")
    with open(out.with_name("compare_tables") / "runs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["run"] for row in rows] == ["seed", "strong"] and rows[1]["val mIoU (fraction)"] == ""
    assert float(rows[0]["CV mIoU (fraction)"]) == a["miou_mean"]  # fractions at full precision

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
    # The smallest mean gain that reaches p < .05: t(0.975, 4 dof) = 2.776445 (statistical tables) times the
    # corrected standard error of the mean.
    assert pair.smallest_significant_gain == pytest.approx(2.776445 * std * math.sqrt(1 / 5 + 0.25), rel=1e-6)
    if pair.p_value < 0.05:
        assert "b is better than a by more than the fold-to-fold noise" in verdict
    else:
        assert "within the fold-to-fold noise" in verdict
    assert (pair.p_value < 0.05) == (gains[1] > 0)  # the consistent gain passes, the mixed one does not


def test_folds_that_print_as_zero_are_ties_and_the_needed_gain_is_stated():
    pair = PairedComparison("a", "b", [0, 1], [0.50, 0.60], [0.52, 0.600001], val_train_ratio=1.0)
    verdict = pair.verdict()
    assert "b higher on 1, lower on 0, tied on 1 at 0.01 points" in verdict  # the +0.0001-point fold is a tie
    needed = 12.706205 * pair.std * math.sqrt(1 / 2 + 1.0)  # t(0.975, 1 dof) from the tables
    assert f"a mean gain of at least {needed:.2f} points would be needed for p < 0.05" in verdict


def test_protocols_that_differ_only_in_the_epoch_are_called_the_same_protocol(two_runs, tmp_path):
    from cityseg.report.compare import ComparedRun, Comparison
    from cityseg.report.results import cv_result, load_runs

    runs = {name: load_runs(folder) for name, folder in (("a", two_runs.a), ("b", two_runs.b))}
    summaries = {name: dict(run.summary) for name, run in runs.items()}
    summaries["a"]["protocol"] = "Each fold is scored at epoch 3, the median of the folds' best epochs by val loss."
    summaries["b"]["protocol"] = "Each fold is scored at epoch 5, the median of the folds' best epochs by val loss."
    summaries["b"]["folds"] = [{**fold, "epoch": 5} for fold in summaries["b"]["folds"]]
    compared = [ComparedRun(name, runs[name], cv_result(summaries[name])) for name in ("a", "b")]
    text = Comparison(compared).protocol_text()
    assert "different protocols" not in text.lower() and "the same protocol, at different epochs" in text
    assert "a 1, 1; b 5, 5" in text
    summaries["b"]["protocol"] = "Each fold is scored at its last epoch of a fixed budget that selects nothing."
    compared[1] = ComparedRun("b", runs["b"], cv_result(summaries["b"]))
    assert Comparison(compared).protocol_text().startswith("CV mIoU follows different protocols: a: Each fold")


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
    assert [row[0] for row in runs.rows] == ["seed", "strong"] and runs.rows[1][
        runs.columns.index("val mIoU (%)")
    ] == "–"
    assert [row[0] for row in comparison.settings_table().rows] == ["lr"]
    (pair,) = comparison.paired()
    assert pair.folds == [0, 1] and len(pair.differences) == 2
    table, styles = comparison.class_table()
    assert [row[0] for row in table.rows] == list(CLASS_NAMES)
    delta = table.columns.index("Δ strong CV")
    for (row, column), style in styles.items():  # a difference is coloured by its sign
        if column == delta:
            value = float(str(table.rows[row][column]))
            assert style.color == ("#1a7f37" if value > 0 else "#b00020" if value < 0 else None)


def test_the_model_that_ran_is_named_in_the_runs_table(two_runs, tmp_path):
    other = copy_runs(two_runs.b, tmp_path / "deeplab")
    for path in other.glob("*/config.json"):
        record = json.loads(path.read_text())
        record["config"].update(arch="DeepLabV3Plus", encoder="resnet18")
        path.write_text(json.dumps(record))
    runs = compare_runs([two_runs.a, other], labels="unet,deeplab").runs_table()
    assert [row[1] for row in runs.rows] == ["U-Net / resnet34", "DeepLabV3+ / resnet18"]


def cut_last_line(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 10])


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda runs: shutil.rmtree(runs / "fold_1"), "fold_1 is missing"),
        (lambda runs: (runs / "fold_0" / "log.jsonl").write_bytes(b""), "fold_0/log.jsonl holds 0 epoch rows"),
        (lambda runs: cut_last_line(runs / "full" / "log.jsonl"), "full/log.jsonl holds 0 epoch rows"),
        (lambda runs: (runs / "fold_1" / "log.jsonl").write_bytes(b"\x00\x8f garbage"), "fold_1/log.jsonl holds 0"),
    ],
)
def test_a_damaged_runs_folder_is_refused_not_skipped(two_runs, tmp_path, damage, named):
    damaged = copy_runs(two_runs.b, tmp_path / "damaged")
    damage(damaged)
    with pytest.raises(UserError) as caught:  # a UserError is exit 2 with its paragraph (the next test's CLI run)
        compare_runs([two_runs.a, damaged])
    message = " ".join(str(caught.value).split())
    assert f"{damaged}/{named}" in message and "understate" in message


def test_a_runs_folder_still_training_is_refused_in_compare_words(two_runs, tmp_path):
    training = copy_runs(two_runs.b, tmp_path / "training")
    (training / "summary.json").unlink()  # `cityseg cv` writes it when the first fold finishes
    done = compare(two_runs.a, training, "--out", tmp_path / "compare.pdf")
    message = " ".join(done.stderr.split())
    assert done.returncode == 2 and "still training" in message and "Run `cityseg compare` once" in message
    assert "report" not in message

    summary = json.loads((two_runs.b / "summary.json").read_text())
    summary.update(complete=False, folds=[{**summary["folds"][0], "finished": False}, summary["folds"][1]])
    (training / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(UserError, match=r"has finished 1 of its 2 folds.*cityseg cv \.\.\. --resume"):
        compare_runs([two_runs.a, training])
