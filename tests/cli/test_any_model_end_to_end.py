"""Any smp model end to end through the CLI, in this process: `cv` with --arch/--encoder or a recipe file, then
`predict`, `evaluate`, `export` and `report` on its checkpoint, every text naming the model that ran."""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace

import pytest
import torch
from helpers_training import cli_in_process
from pypdf import PdfReader

from cityseg.prediction.deployed import CARD_JSON, CARD_MD, ONNX_FILE, WEIGHTS_FILE

pytestmark = pytest.mark.trains  # two tiny cv runs (2 folds x 1 epoch and the full fit)

TINY = "--folds 2 --epochs 1 --size 64x32 --workers 0 --device cpu --encoder-weights none".split()


def cli(*args: object) -> SimpleNamespace:
    """`cityseg ARGS` in this process; fails the test unless it exits 0."""
    done = cli_in_process(*args)
    assert done.returncode == 0, (
        f"cityseg {' '.join(map(str, args))}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    )
    return done


def test_deeplabv3plus_resnet18_runs_cv_predict_evaluate_export_and_report_under_its_own_name(mutable_root, tmp_path):
    torch.set_num_threads(1)
    runs, pred, model = tmp_path / "runs", tmp_path / "pred", tmp_path / "model"
    cv = cli("cv", mutable_root, "--out", runs, "--arch", "DeepLabV3Plus", "--encoder", "resnet18", *TINY)
    checkpoint = runs / "full" / "best.pt"
    predicted = cli("predict", checkpoint, mutable_root, "--out", pred, "--device", "cpu", "--no-progress")
    evaluated = cli("evaluate", pred, mutable_root, "--json", tmp_path / "val.json", "--workers", "1")
    exported = cli("export", checkpoint, "--out", model, "--eval", tmp_path / "val.json")
    reported = cli(
        "report", runs, "--eval", tmp_path / "val.json", "--out", tmp_path / "report.pdf", "--predictions", pred
    )
    hints = [
        [line for line in done.stdout.splitlines() if line.startswith("next: ")][-1]
        for done in (cv, predicted, evaluated, exported, reported)
    ]
    expected = ["next: cityseg predict ", "next: cityseg evaluate ", "next: cityseg report ", "next: cityseg predict "]
    for start, hint in zip([*expected, "next: open "], hints, strict=True):  # each command says what to run next
        assert hint.startswith(start), hint

    config = json.loads((runs / "full" / "config.json").read_text())["config"]
    assert (config["arch"], config["encoder"], config["encoder_weights"]) == ("DeepLabV3Plus", "resnet18", None)
    assert sorted(path.name for path in model.iterdir()) == [CARD_JSON, CARD_MD, WEIGHTS_FILE]  # no ONNX_FILE
    card = json.loads((model / CARD_JSON).read_text())
    assert card["model"]["title"] == "DeepLabV3+ / resnet18" and card["files"]["onnx"]["refused"]
    assert (card["model"]["architecture"], card["model"]["encoder"]) == ("DeepLabV3Plus", "resnet18")
    report = " ".join(" ".join(page.extract_text() for page in PdfReader(tmp_path / "report.pdf").pages).split())
    assert "U-Net" not in cv.stdout and "ResNet-34" not in cv.stdout  # cv's summary names no model
    texts = {
        "predict": predicted.stdout,
        "export": exported.stdout,
        "card.json": (model / CARD_JSON).read_text(),
        "card.md": (model / CARD_MD).read_text(),
        "report": report,
    }
    for name, text in texts.items():  # the report's setup page may show seed's values (Unet, resnet34) beside ours
        assert "DeepLabV3+" in text and "resnet18" in text, name
        assert "U-Net" not in text and "ResNet-34" not in text, name
    assert f"No ONNX graph (`{ONNX_FILE}`) is included" in texts["card.md"]

    # --overwrite over an earlier export: its graph (another model's) goes, the user's files stay
    (model / ONNX_FILE).write_bytes(b"an earlier export's graph")
    (model / "notes.txt").write_text("mine")
    cli("export", checkpoint, "--out", model, "--overwrite")
    assert sorted(path.name for path in model.iterdir()) == [CARD_JSON, CARD_MD, WEIGHTS_FILE, "notes.txt"]

    # the export folder predicts as its checkpoint does, through its safetensors weights
    again = cli("predict", model, mutable_root, "--out", tmp_path / "pred_export", "--device", "cpu", "--no-progress")
    assert "DeepLabV3+ / resnet18" in again.stdout
    for png in sorted(pred.glob("**/*.png")):
        assert png.read_bytes() == (tmp_path / "pred_export" / png.relative_to(pred)).read_bytes(), png.name


def test_a_recipe_file_that_extends_seed_trains_its_model_and_loss_and_config_json_records_the_file(
    mutable_root, tmp_path
):
    torch.set_num_threads(1)
    mine = tmp_path / "my.toml"
    mine.write_text('extends = "seed"\narch = "FPN"\nencoder = "resnet18"\nloss = "ce+0.5*dice"\n')
    runs = tmp_path / "runs"
    cli("cv", mutable_root, "--out", runs, "--recipe", mine, *TINY)
    for run in ("fold_0", "fold_1", "full"):
        recorded = json.loads((runs / run / "config.json").read_text())
        config = recorded["config"]
        assert (config["arch"], config["encoder"], config["loss"]) == ("FPN", "resnet18", "ce+0.5*dice"), run
        record = recorded["recipe_file"]
        assert (record["file"], record["extends"]) == (str(mine.resolve()), ["seed"]) == (config["recipe"], ["seed"])
        assert record["sha256"] == hashlib.sha256(mine.read_bytes()).hexdigest(), run
