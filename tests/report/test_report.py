"""The PDF report and the notebook helpers, built on the files of a real tiny run.

One tiny run (2 folds x 1 epoch at 128x64, full fit, val predictions, official evaluation; the
session's `one_epoch_cv`) supplies every file the report reads; nothing here is a hand-written number.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from pypdf import PdfReader

from cityseg.cli import main
from cityseg.errors import UserError
from cityseg.labels import CATEGORY_NAMES, CLASS_NAMES
from cityseg.report import (
    best_and_worst,
    build_report,
    dataset_counts,
    figures_dir,
    folds_table,
    histories,
    load_examples,
    load_runs,
    parse_size,
    require_dataset,
    score_frames,
    training_config,
)
from cityseg.report.tables import mean_std_text, percent

FIGURES = ("curves", "class_iou", "confusion", "examples")


@pytest.fixture(scope="module")
def tiny_run(one_epoch_cv, tmp_path_factory) -> SimpleNamespace:
    """CV (2 folds, 1 epoch) + full fit + val predictions + official evaluation (`one_epoch_cv`) + the report."""
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("report_run")
    pdf = build_report(
        one_epoch_cv.runs,
        one_epoch_cv.eval_json,
        base / "report.pdf",
        pred_dir=one_epoch_cv.pred,
        root=one_epoch_cv.root,
    )
    return SimpleNamespace(
        base=base,
        root=one_epoch_cv.root,
        runs=one_epoch_cv.runs,
        eval_json=one_epoch_cv.eval_json,
        pred=one_epoch_cv.pred,
        pdf=pdf,
        evaluation=json.loads(one_epoch_cv.eval_json.read_text()),
    )


def page_texts(pdf: Path) -> list[str]:
    return [page.extract_text() for page in PdfReader(pdf).pages]


def copy_runs(tiny_run, tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run.runs, runs, ignore=shutil.ignore_patterns("*.pt"))
    return runs


# ----------------------------------------------------------------------------------------------------------
# The PDF
# ----------------------------------------------------------------------------------------------------------


PAGE_TITLES = (
    "U-Net / resnet34 semantic segmentation: results",
    "What was trained",
    "Cross-validation",
    "Per-class results",
    "Confusion matrix on val",
    "Best and worst val frames",
)


def test_report_has_every_page_and_each_says_synthetic(tiny_run):
    texts = page_texts(tiny_run.pdf)
    assert len(texts) == len(PAGE_TITLES)
    for number, (text, title) in enumerate(zip(texts, PAGE_TITLES, strict=True), start=1):
        assert "SYNTHETIC DATA" in text and title in text and f"{number} / {len(texts)}" in text
    # No reference beside synthetic numbers, and nothing about how the committed demo is kept.
    assert "no reference number is shown" in " ".join(texts[0].split())
    assert not any("66.79" in text or "reference (%)" in text or "byte" in text for text in texts)
    sizes = {
        (round(float(page.mediabox.width)), round(float(page.mediabox.height)))
        for page in PdfReader(tiny_run.pdf).pages
    }
    assert sizes == {(595, 842)}, f"every page A4 portrait (595 x 842 pt), got {sizes}"


def test_report_numbers_match_summary_and_evaluation_json(tiny_run):
    texts = page_texts(tiny_run.pdf)
    summary = json.loads((tiny_run.runs / "summary.json").read_text())
    evaluation = json.loads(tiny_run.eval_json.read_text())
    # summary.json of either generation: with "selected" (selection-free headline, best-epoch numbers beside
    # it) or without (the best-epoch numbers alone, their protocol said in words).
    selected = summary.get("selected")
    cv_text = re.escape(mean_std_text(summary["miou_mean"], summary["miou_std"]))
    beside = f" {re.escape(mean_std_text(selected['miou_mean'], selected['miou_std']))}" if selected else ""
    val, iiou = percent(evaluation["averageScoreClasses"]), percent(evaluation["averageScoreInstClasses"])
    headline = texts[0]
    assert re.search(rf"^cross-validation mIoU, 2 folds \(mean ± std\) {cv_text}{beside}$", headline, re.M)
    dashes = " –" if selected else ""
    assert re.search(rf"^val mIoU, official Cityscapes metric {re.escape(val)}{dashes}$", headline, re.M)
    assert re.search(rf"^val iIoU, official Cityscapes metric {re.escape(iiou)}{dashes}$", headline, re.M)
    flat = [" ".join(text.split()) for text in texts]
    assert sum(text.count(summary["protocol"]) for text in flat) == 1  # the protocol once, under the headline
    assert summary["protocol"] in flat[0]
    assert "by cityseg's fast engine, checked to agree" in " ".join(headline.split())  # evaluated with both engines
    for fold in summary["folds"]:  # the numbers end the row (a wrapped cities cell may come before them)
        cells = [fold.get("epoch", fold["best_epoch"]), f"{fold['val_loss']:.4f}", percent(fold["val_miou"])]
        cells += [fold["best_epoch"], percent(fold["best_val_miou"])] if selected else []
        assert re.search(rf"(^| ){re.escape(' '.join(map(str, cells)))}$", texts[2], re.M)
    for i, name in enumerate(CLASS_NAMES):
        cells = [mean_std_text(summary["class_iou_mean"][i], summary["class_iou_std"][i])]
        cells += [mean_std_text(selected["class_iou_mean"][i], selected["class_iou_std"][i])] if selected else []
        cells += [percent(evaluation["classScores"][name]), percent(evaluation["classInstScores"][name])]
        assert re.search(rf"^{name} {re.escape(' '.join(cells))}$", texts[3], re.M), name
    assert re.search(rf"^mean {cv_text}{beside} {re.escape(val)} {re.escape(iiou)}$", texts[3], re.M)
    for name in CATEGORY_NAMES:
        assert re.search(rf"^{name} {re.escape(percent(evaluation['categoryScores'][name]))} ", texts[3], re.M)


def test_report_reads_the_selection_free_summary_and_shows_the_selected_numbers_beside(tiny_run, tmp_path):
    runs = copy_runs(tiny_run, tmp_path)
    summary = json.loads((runs / "summary.json").read_text())
    # summary.json as `cityseg cv` writes it with the selection-free protocol: the headline at the full fit's
    # epoch count, the best-epoch numbers under "selected" (here shifted so the two can be told apart).
    shifted = [None if v is None else v + 0.01 for v in summary["class_iou_mean"]]
    summary.update(
        protocol="every fold scored at epoch 1, the epoch count of the full fit",
        selected={
            "miou_mean": summary["miou_mean"] + 0.01,
            "miou_std": summary["miou_std"],
            "class_iou_mean": shifted,
            "class_iou_std": summary["class_iou_std"],
            "note": "each fold at the epoch with its lowest val loss",
        },
    )
    for fold in summary["folds"]:
        fold.update(epoch=1, best_val_miou=fold["val_miou"] + 0.01, best_val_loss=fold["val_loss"])
    (runs / "summary.json").write_text(json.dumps(summary))
    texts = page_texts(build_report(runs, tiny_run.eval_json, tmp_path / "report.pdf"))
    headline = mean_std_text(summary["miou_mean"], summary["miou_std"])
    selected = mean_std_text(summary["selected"]["miou_mean"], summary["miou_std"])
    assert re.search(
        rf"^cross-validation mIoU, 2 folds \(mean ± std\) {re.escape(headline)} {re.escape(selected)}$", texts[0], re.M
    )
    flat = " ".join(texts[0].split())
    assert "every fold scored at epoch 1, the epoch count of the full fit." in flat
    assert "best-epoch column is optimistic" in flat and "best epoch by loss" not in flat
    for fold in summary["folds"]:  # epoch, val loss, mIoU, best epoch, best mIoU (the cities may wrap above)
        assert re.search(
            rf"(^| )1 {fold['val_loss']:.4f} {re.escape(percent(fold['val_miou']))} 1 "
            rf"{re.escape(percent(fold['best_val_miou']))}$",
            texts[2],
            re.M,
        )
    road = [
        mean_std_text(summary["class_iou_mean"][0], summary["class_iou_std"][0]),
        mean_std_text(shifted[0], summary["class_iou_std"][0]),
    ]
    assert re.search(rf"^road {re.escape(' '.join(road))} ", texts[3], re.M)


def test_two_renders_of_one_run_are_byte_identical_and_undated(tiny_run, tmp_path):
    again = build_report(
        tiny_run.runs, tiny_run.eval_json, tmp_path / "a" / "b.pdf", pred_dir=tiny_run.pred, root=tiny_run.root
    )  # another name in another folder: neither may show in the bytes
    assert again.read_bytes() == tiny_run.pdf.read_bytes()
    assert b"/CreationDate" not in again.read_bytes() and b"/ModDate" not in again.read_bytes()


def test_demo_report_prints_nothing_that_depends_on_machine_time_or_commit(tiny_run):
    text = "\n".join(page_texts(tiny_run.pdf))
    info = json.loads((tiny_run.runs / "fold_0" / "config.json").read_text())
    for varying in (
        socket.gethostname(),
        info["started"][:10],
        str(tiny_run.runs),
        str(tiny_run.root),
        "img/s",
        info["versions"]["torch"],
    ):
        assert varying not in text, varying
    if info["git"]["sha"]:
        assert info["git"]["sha"][:12] not in text


def test_report_metadata_and_figures_beside_the_pdf(tiny_run):
    reader = PdfReader(tiny_run.pdf)
    assert "SYNTHETIC" in reader.metadata.title and reader.metadata.creator == "cityseg report"
    folder = figures_dir(tiny_run.pdf)
    assert folder == tiny_run.pdf.with_name("report_figures")
    for name in FIGURES:
        with Image.open(folder / f"{name}.png") as image:
            assert image.format == "PNG" and image.width > 300


def test_report_rebuilds_over_its_own_files_but_never_over_foreign_ones(tiny_run, tmp_path):
    out = tmp_path / "report.pdf"
    build_report(tiny_run.runs, tiny_run.eval_json, out)  # no predictions: no examples page
    assert len(PdfReader(out).pages) == len(PAGE_TITLES) - 1
    build_report(tiny_run.runs, tiny_run.eval_json, out)  # again: our own PDF may be replaced
    foreign = tmp_path / "notes.pdf"
    foreign.write_bytes(b"%PDF-1.4 someone else's file")
    with pytest.raises(UserError, match="not written by `cityseg report`"):
        build_report(tiny_run.runs, tiny_run.eval_json, foreign)
    assert foreign.read_bytes() == b"%PDF-1.4 someone else's file"


def as_cityscapes_run(tiny_run, tmp_path: Path) -> tuple[Path, Path]:
    """The tiny run's files as if trained and evaluated on Cityscapes (what a real run's report reads)."""
    runs = copy_runs(tiny_run, tmp_path)
    for config_path in runs.glob("*/config.json"):
        config = json.loads(config_path.read_text())
        config.update(synthetic=False, data_root=str(tmp_path / "cityscapes"))
        config_path.write_text(json.dumps(config))
    evaluation = json.loads(tiny_run.eval_json.read_text())
    evaluation["cityseg"]["synthetic"] = False
    eval_json = tmp_path / "val.json"
    eval_json.write_text(json.dumps(evaluation))
    return runs, eval_json


def test_report_on_cityscapes_puts_the_reference_beside_val_with_its_caveat_and_gives_machine_and_speed(
    tiny_run, tmp_path
):
    runs, eval_json = as_cityscapes_run(tiny_run, tmp_path)
    evaluation = json.loads(eval_json.read_text())
    texts = page_texts(build_report(runs, eval_json, tmp_path / "real.pdf"))
    assert all("Cityscapes" in text and "SYNTHETIC" not in text for text in texts)
    val = re.escape(percent(evaluation["averageScoreClasses"]))
    assert re.search(rf"^val mIoU, official Cityscapes metric {val}( –)? 66\.79$", texts[0], re.M)
    assert re.search(r"^cross-validation mIoU, .* –$", texts[0], re.M)  # the reference only beside val
    flat = " ".join(texts[0].split())
    assert "not a controlled baseline" in flat and "docs/reference.md" in flat
    assert "Difference to the reference" not in flat and "NOTES.md" not in flat
    rows = [json.loads(line) for log in sorted(runs.glob("*/log.jsonl")) for line in log.read_text().splitlines()]
    speed = np.median([row["images_per_s"] for row in rows])
    wait = np.median([row["data_wait_share"] for row in rows])
    setup = " ".join(texts[1].split())  # the PDF text wraps long cells
    assert f"throughput {speed:.1f} img/s, {100 * wait:.0f}% of it waiting for data" in setup
    assert "peak GPU memory" not in setup  # a CPU run logs none
    sha = json.loads((runs / "fold_0" / "config.json").read_text())["git"]["sha"]
    if sha:
        assert f"git {sha[:12]}" in texts[0] and f"git {sha[:12]}" in setup


def test_changes_from_the_recipe_are_listed_on_the_setup_page(tiny_run, tmp_path):
    from cityseg.training.config import TrainConfig, recipe_differences, value_text

    text = page_texts(tiny_run.pdf)[1]
    config = TrainConfig.from_dict(json.loads((tiny_run.runs / "fold_0" / "config.json").read_text())["config"])
    changes = recipe_differences(config)
    assert {name for name, _, _ in changes} >= {"epochs", "lr", "size"}  # what the tiny run set
    assert re.search(r"^field recipe this run$", text, re.M)
    for name, recipe, value in changes:
        assert re.search(rf"^{name} {re.escape(value_text(recipe))} {re.escape(value_text(value))}$", text, re.M), name

    runs = copy_runs(tiny_run, tmp_path)  # a config.json from another cityseg version: said, not guessed
    for path in runs.glob("*/config.json"):
        record = json.loads(path.read_text())
        record["config"]["future_field"] = 1
        path.write_text(json.dumps(record))
    text = page_texts(build_report(runs, tiny_run.eval_json, tmp_path / "report.pdf"))[1]
    assert "Cannot be listed: config.json was not written by this version of cityseg" in " ".join(text.split())


def test_setup_page_reads_in_words_and_names_the_model_that_ran(tiny_run, tmp_path):
    setup = " ".join(page_texts(tiny_run.pdf)[1].split())
    for words in ("model U-Net / resnet34; random init (from scratch)", "input resized to 128x64, no crop"):
        assert words in setup, words
    for words in ("loss cross-entropy, ignoring label 255", "schedule constant lr, no warm-up", "horizontal flip"):
        assert words in setup, words
    assert "none / none" not in setup and "warm-up 0.0" not in setup and "loss ce" not in setup

    runs = copy_runs(tiny_run, tmp_path)  # the same files, as if another architecture had trained them
    for path in runs.glob("*/config.json"):
        record = json.loads(path.read_text())
        record["config"].update(arch="DeepLabV3Plus", encoder="resnet18", loss="ce+0.5*dice", size=None)
        path.write_text(json.dumps(record))
    pdf = build_report(runs, tiny_run.eval_json, tmp_path / "deeplab.pdf")
    texts = [" ".join(text.split()) for text in page_texts(pdf)]
    assert "DeepLabV3+ / resnet18 semantic segmentation: results" in texts[0]
    assert "model DeepLabV3+ / resnet18" in texts[1] and "loss cross-entropy + 0.5 × Dice" in texts[1]
    assert "input full resolution, no crop" in texts[1]
    assert not any("U-Net" in text or "ResNet-34" in text for text in texts)
    assert "DeepLabV3+ / resnet18" in PdfReader(pdf).metadata.subject


def test_run_folders_written_before_models_were_named_report_the_default_unet(tiny_run, tmp_path):
    runs = copy_runs(tiny_run, tmp_path)  # config.json as cityseg wrote it at checkpoint format 1: no arch, encoder
    for path in runs.glob("*/config.json"):
        record = json.loads(path.read_text())
        del record["config"]["arch"], record["config"]["encoder"]
        path.write_text(json.dumps(record))
    texts = [
        " ".join(text.split()) for text in page_texts(build_report(runs, tiny_run.eval_json, tmp_path / "old.pdf"))
    ]
    assert "U-Net / resnet34 semantic segmentation: results" in texts[0] and "model U-Net / resnet34" in texts[1]


def test_tables_beside_the_pdf_parse_and_hold_the_pdf_numbers(tiny_run):
    folder = tiny_run.pdf.with_name("report_tables")
    summary = json.loads((tiny_run.runs / "summary.json").read_text())
    evaluation = tiny_run.evaluation
    with open(folder / "classes.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["class"] for row in rows] == [*CLASS_NAMES, "mean"]
    classes = page_texts(tiny_run.pdf)[3]
    for i, (name, row) in enumerate(zip(CLASS_NAMES, rows, strict=False)):
        assert float(row["val IoU (fraction)"]) == evaluation["classScores"][name]  # full precision, not rounded
        mean, std = summary["class_iou_mean"][i], summary["class_iou_std"][i]
        assert (row["CV IoU (fraction)"], row["CV IoU std (fraction)"]) == (repr(mean), repr(std))
        # the same numbers as the PDF, which prints them in percent with two decimals
        assert f"{name} {mean_std_text(mean, std)}" in classes and percent(float(row["val IoU (fraction)"])) in classes
    with open(folder / "headline.csv", newline="") as handle:
        headline = list(csv.reader(handle))
    assert headline[2][:2] == ["val mIoU, official Cityscapes metric", repr(evaluation["averageScoreClasses"])]
    tex = (folder / "classes.tex").read_text()
    assert r"\begin{tabular}{lrrrr}" in tex and r"\toprule" in tex and r"\bottomrule" in tex
    for line in tex.splitlines()[5:-2]:  # each body row, its markup taken out, is a line of the PDF's table
        assert line.removesuffix(r" \\").replace(r" $\pm$ ", " ± ").replace(" & ", " ") in classes.splitlines()


def test_make_demo_replaces_a_demo_report_but_refuses_a_real_one(tiny_run, tmp_path):
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(Path(__file__).resolve().parents[2] / "scripts" / "demo.sh", repo / "scripts" / "demo.sh")
    tools = tmp_path / "bin"  # stand-ins that say they ran: the demo itself must not run here
    tools.mkdir()
    for tool in ("cityseg", "papermill", "python"):
        (tools / tool).write_text(f"#!/bin/sh\necho '{tool} ran' >&2\nexit 1\n")
        (tools / tool).chmod(0o755)
    env = os.environ | {"PATH": f"{tools}:/usr/bin:/bin"}

    runs, eval_json = as_cityscapes_run(tiny_run, tmp_path)
    build_report(runs, eval_json, repo / "report.pdf")
    real = (repo / "report.pdf").read_bytes()
    done = subprocess.run(["bash", "scripts/demo.sh"], cwd=repo, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "report.pdf exists and is not a demo report" in done.stderr
    assert (repo / "report.pdf").read_bytes() == real and not (repo / "demo").exists()

    shutil.copy(tiny_run.pdf, repo / "report.pdf")  # a demo report: the demo goes ahead (to the stand-ins)
    done = subprocess.run(["bash", "scripts/demo.sh"], cwd=repo, env=env, capture_output=True, text=True, timeout=60)
    assert "not a demo report" not in done.stderr and "cityseg ran" in done.stderr


def truncate(path: Path) -> None:
    """Cut a file in the middle of its last line, as a copy interrupted by a full disk leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 10])


@pytest.mark.parametrize(
    ("damage", "named", "command"),
    [
        (lambda runs, ev: (runs / "summary.json").unlink(), "summary.json", "cityseg cv"),
        (lambda runs, ev: (runs / "folds.json").write_text("{not json"), "folds.json", "cityseg cv"),
        (
            lambda runs, ev: (runs / "fold_1" / "log.jsonl").write_text('{"epoch": 1}\n{oops\n{"epoch": 2}\n'),
            "log.jsonl",
            "cityseg cv",
        ),
        (lambda runs, ev: (runs / "full" / "config.json").unlink(), "config.json", "cityseg cv"),
        (lambda runs, ev: shutil.rmtree(runs / "fold_1"), "fold_1", "cityseg cv"),  # a deleted fold
        (lambda runs, ev: (runs / "fold_0" / "log.jsonl").write_bytes(b""), "fold_0/log.jsonl", "cityseg cv"),
        (lambda runs, ev: truncate(runs / "full" / "log.jsonl"), "full/log.jsonl", "cityseg cv"),
        (lambda runs, ev: ev.unlink(), "val.json", "cityseg evaluate"),
        (lambda runs, ev: ev.write_text('{"confMatrix": []}'), "val.json", "cityseg evaluate"),
    ],
)
def test_missing_or_corrupt_run_files_name_the_file_and_the_command(tiny_run, tmp_path, damage, named, command):
    runs = copy_runs(tiny_run, tmp_path)
    eval_json = tmp_path / "val.json"
    shutil.copy(tiny_run.eval_json, eval_json)
    damage(runs, eval_json)
    with pytest.raises(UserError) as caught:
        build_report(runs, eval_json, tmp_path / "report.pdf")
    assert named in str(caught.value) and command in str(caught.value)
    assert not (tmp_path / "report.pdf").exists()


def test_a_log_with_an_epoch_twice_is_refused_naming_it(tiny_run, tmp_path):
    """What two trainers of one run folder would leave, were it not locked (tests/training/test_cv_faults.py)."""
    runs = copy_runs(tiny_run, tmp_path)
    log = runs / "fold_0" / "log.jsonl"
    log.write_text(log.read_text() * 2)
    with pytest.raises(UserError, match="twice") as refused:
        load_runs(runs)
    assert str(log) in str(refused.value)


def test_cli_report_writes_pdf_and_maps_bad_input_to_exit_2(tiny_run, tmp_path, capsys):
    out = tmp_path / "cli.pdf"
    code = main(
        [
            "report",
            str(tiny_run.runs),
            "--eval",
            str(tiny_run.eval_json),
            "--out",
            str(out),
            "--predictions",
            str(tiny_run.pred),
            "--root",
            str(tiny_run.root),
        ]
    )
    assert code == 0 and len(PdfReader(out).pages) == len(PAGE_TITLES)
    assert str(out) in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nowhere"), "--eval", str(tiny_run.eval_json), "--out", str(out)]) == 2
    assert "cityseg cv" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# Frames: per-frame scores and examples
# ----------------------------------------------------------------------------------------------------------


def test_perfect_predictions_score_one_and_show_no_errors(tiny_run, tmp_path):
    from cityseg.data.frames import list_frames

    perfect = tmp_path / "perfect"
    perfect.mkdir()
    frames = list_frames(tiny_run.root, "val", label_source="ids")
    for frame in frames:
        shutil.copy(frame.label_ids, perfect / f"{frame.id}_leftImg8bit.png")
    scores = score_frames(perfect, tiny_run.root)
    assert [s.miou for s in scores] == [1.0] * len(frames)
    example = load_examples([frames[0].id], perfect, tiny_run.root)[0]
    labelled = example.truth != 255
    assert labelled.any() and (example.prediction[labelled] == example.truth[labelled]).all()


def test_frame_scores_sorted_worst_first_and_best_and_worst_pick_both_ends(tiny_run):
    scores = score_frames(tiny_run.pred, tiny_run.root)
    assert len(scores) == tiny_run.evaluation["cityseg"]["n_frames"]
    assert [s.miou for s in scores] == sorted(s.miou for s in scores)
    picked = best_and_worst(scores, count=1)
    assert picked == [scores[-1], scores[0]]


# ----------------------------------------------------------------------------------------------------------
# Notebook helpers
# ----------------------------------------------------------------------------------------------------------


def test_training_config_turns_notebook_parameters_into_a_config():
    config = training_config(
        "seed", epochs=3, size="256x128", workers=0, encoder_weights="none", overrides={"lr": 1e-3}
    )
    assert (config.epochs, config.size, config.workers, config.encoder_weights, config.lr) == (
        3,
        (256, 128),
        0,
        None,
        1e-3,
    )
    assert training_config("seed", workers=0).epochs == 10  # None keeps the recipe's value
    assert parse_size(None) is None and parse_size([64, 32]) == (64, 32)
    with pytest.raises(UserError, match="WIDTHxHEIGHT"):
        parse_size("large")


def test_require_dataset_explains_download_prepare_and_demo(tmp_path):
    with pytest.raises(UserError) as caught:
        require_dataset(tmp_path / "cityscapes")
    message = str(caught.value)
    for hint in (
        "cityseg download",
        "gtFine_trainvaltest.zip",
        "leftImg8bit_trainvaltest.zip",
        "cityseg prepare",
        "make demo",
    ):
        assert hint in message


def test_dataset_counts_and_folds_table_match_the_data(tiny_run):
    from cityseg.data.frames import list_frames

    table = dataset_counts(tiny_run.root)
    totals = {row[0]: int(row[2]) for row in table.rows if row[1].startswith("total")}
    assert totals == {
        split: len(list_frames(tiny_run.root, split, label_source=None)) for split in ("train", "val", "test")
    }
    folds = json.loads((tiny_run.runs / "folds.json").read_text())
    rows = folds_table(folds).rows
    assert [int(r[2]) for r in rows] == [len(f["val"]) for f in folds["folds"]]
    assert sum(int(r[2]) for r in rows) == totals["train"]  # each train image is validated exactly once


def test_histories_read_back_every_logged_epoch(tiny_run, tmp_path):
    logged = histories(tiny_run.runs)
    assert list(logged) == ["fold_0", "fold_1", "full"]
    assert all(len(rows) == 1 and rows[0]["epoch"] == 1 for rows in logged.values())
    assert list(histories(tiny_run.runs, names=["full"])) == ["full"]
    assert histories(tmp_path / "new") == {}
    assert np.isfinite(logged["fold_0"][0]["train_loss"])
