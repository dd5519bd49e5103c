"""`predict --score`: the fast engine's numbers from the label maps in memory equal `evaluate`'s from the PNGs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from cityseg.cli import main
from cityseg.errors import UserError
from cityseg.evaluation import compare_exports, evaluate
from cityseg.prediction.predict import predict_split
from cityseg.training.checkpoint import save_checkpoint
from cityseg.training.model import build_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained model: its argmax is spread over many classes, enough to exercise every count."""
    torch.manual_seed(3)
    model = build_model(encoder_weights=None)
    path = tmp_path_factory.mktemp("score") / "model.pt"
    save_checkpoint(path, {"model": model.state_dict(), "epoch": 1, "config": {"size": None}, "num_classes": 19})
    return path


def run_settings(out: Path) -> dict:
    return json.loads((out / ".cityseg-predict.json").read_text())["settings"]


def _same(a: dict, b: dict) -> None:
    assert compare_exports(a, b) == ([], 0.0)


def test_scores_in_memory_equal_both_engines_on_the_written_pngs(checkpoint, mutable_root, tmp_path):
    out = tmp_path / "pred"
    run = predict_split(checkpoint, mutable_root, "val", out_dir=out, device="cpu", progress=False, score=True)
    assert run.written > 0 and "fractions of 1" in run.scores["cityseg"]["units"]
    official = evaluate(out, mutable_root, "val", engine="official")
    fast = evaluate(out, mutable_root, "val", engine="fast")
    made = fast["cityseg"]["predictions"]  # how the predictions were made, copied from predict's manifest
    assert made["checkpoint_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert made["settings"]["mode"] == run_settings(out)["mode"] and made["settings"]["split"] == "val"
    _same(official, run.scores)
    _same(fast, run.scores)
    assert len(set(run.scores["classScores"].values())) > 3  # not a degenerate all-one-class prediction

    # A rerun predicts nothing (all frames done): every frame is scored from its PNG.
    again = predict_split(checkpoint, mutable_root, "val", out_dir=out, device="cpu", progress=False, score=True)
    assert again.written == 0
    _same(official, again.scores)


def test_cli_prints_the_table_and_the_test_split_is_refused(checkpoint, mutable_root, tmp_path, capsys):
    args = ["predict", str(checkpoint), str(mutable_root), "--device", "cpu", "--no-progress", "--score"]
    assert main([*args, "--out", str(tmp_path / "val")]) == 0
    printed = capsys.readouterr().out
    result = evaluate(tmp_path / "val", mutable_root, "val", engine="official")
    mean = next(line for line in printed.splitlines() if line.startswith("mIoU (19 classes)"))
    assert f"{100 * result['averageScoreClasses']:.2f} %" in mean  # percent, as `cityseg evaluate` prints
    assert main([*args, "--split", "test", "--out", str(tmp_path / "test")]) == 2
    assert "withheld" in capsys.readouterr().err
    assert not (tmp_path / "test").exists()  # refused before any prediction


def test_scoring_a_split_without_instance_ids_is_a_user_error_before_predicting(checkpoint, mutable_root, tmp_path):
    next((mutable_root / "gtFine" / "val").rglob("*_instanceIds.png")).unlink()
    with pytest.raises(UserError, match="instanceIds"):
        predict_split(checkpoint, mutable_root, "val", out_dir=tmp_path / "p", device="cpu", progress=False, score=True)
    assert not (tmp_path / "p").exists()
