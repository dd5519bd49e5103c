"""What the report is given: an evaluation of another split is refused, predictions of another checkpoint than
RUNS/full/best.pt are flagged (real evaluations of real prediction folders)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from helpers_noisy import write_noisy_predictions
from helpers_training import CLI_ENV, cityseg_command

from cityseg.data.frames import list_frames
from cityseg.evaluation import evaluate
from cityseg.prediction.predict import predict_split
from cityseg.report import load_evaluation, predictions_checkpoint_warning
from cityseg.training.checkpoint import save_checkpoint
from cityseg.training.model import build_model


def _checkpoint(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(
        path,
        {
            "model": build_model(encoder_weights=None).state_dict(),
            "epoch": 3,
            "config": {"size": None},
            "num_classes": 19,
        },
    )
    return path


def test_report_refuses_an_evaluation_of_the_train_split(synth_raw_root, tmp_path):
    pred = tmp_path / "predictions_train"
    write_noisy_predictions(list_frames(synth_raw_root, "train", label_source="ids"), pred, seed=3)
    train_json = tmp_path / "train_split.json"
    evaluate(pred, synth_raw_root, "train", engine="fast", json_out=train_json, workers=1)

    done = subprocess.run(
        cityseg_command("report", tmp_path / "runs", "--eval", train_json, "--out", tmp_path / "report.pdf"),
        env=CLI_ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    message = " ".join(done.stderr.split())
    assert str(train_json) in message and "'train' split" in message and "--split val" in message
    assert not (tmp_path / "report.pdf").exists()


def test_predictions_of_another_checkpoint_than_the_final_model_are_flagged(synth_raw_root, tmp_path):
    runs = tmp_path / "runs"
    final = _checkpoint(runs / "full" / "best.pt", seed=0)
    fold = _checkpoint(runs / "fold_0" / "best.pt", seed=1)
    for checkpoint, out in ((fold, tmp_path / "fold_pred"), (final, tmp_path / "final_pred")):
        predict_split(checkpoint, synth_raw_root, "val", out_dir=out, device="cpu", progress=False)
    scored = {
        name: evaluate(tmp_path / name, synth_raw_root, "val", engine="fast", workers=1)
        for name in ("fold_pred", "final_pred")
    }

    warning = predictions_checkpoint_warning(runs, scored["fold_pred"])
    assert warning is not None and str(fold.resolve()) in warning and str(final) in warning
    assert predictions_checkpoint_warning(runs, scored["final_pred"]) is None


def test_load_evaluation_accepts_the_val_split(synth_raw_root, tmp_path):
    pred = tmp_path / "predictions"
    write_noisy_predictions(list_frames(synth_raw_root, "val", label_source="ids"), pred, seed=3)
    val_json = tmp_path / "val.json"
    evaluate(pred, synth_raw_root, "val", engine="fast", json_out=val_json, workers=1)
    assert load_evaluation(val_json)["cityseg"]["split"] == "val"
    with pytest.raises(Exception, match="'val' split"):
        load_evaluation(val_json, split="test")
