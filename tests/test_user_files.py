"""Nothing the user wrote is replaced: a foreign summary.json, an edited prediction PNG, a JSON or CSV at the
evaluation's output path that `cityseg evaluate` cannot prove it wrote (the CLI's commands, in this process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers_noisy import write_noisy_predictions

from cityseg.cli import main
from cityseg.data.frames import list_frames
from cityseg.prediction.ledger import prediction_name
from cityseg.training.checkpoint import save_checkpoint
from cityseg.training.model import build_model

CV_OPTIONS = (
    "--folds",
    "2",
    "--epochs",
    "1",
    "--size",
    "64x32",
    "--batch-size",
    "2",
    "--workers",
    "0",
    "--encoder-weights",
    "none",
    "--device",
    "cpu",
)


def _flat(text: str) -> str:
    return "".join(text.split())


def assert_refused(args, capsys, *named: Path) -> None:
    """`cityseg ARGS` exits 2 with one paragraph, no traceback, naming each of `named`."""
    code, err = main([str(arg) for arg in args]), capsys.readouterr().err
    assert code == 2, err[-3000:]
    assert "Traceback" not in err and err.count("error:") == 1, err
    for path in named:
        assert _flat(str(path)) in _flat(err), err


def test_cv_refuses_a_summary_json_it_did_not_write(synth_root, tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "summary.json").write_text('{"mine": 1}\n')
    assert_refused(["cv", synth_root, "--out", runs, *CV_OPTIONS], capsys, runs / "summary.json")
    assert [p.name for p in runs.iterdir()] == ["summary.json"]  # refused before writing anything
    assert (runs / "summary.json").read_text() == '{"mine": 1}\n'


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained model in the trainer's checkpoint format."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("checkpoint") / "best.pt"
    save_checkpoint(
        path,
        {
            "model": build_model(encoder_weights=None).state_dict(),
            "epoch": 1,
            "config": {"size": None},
            "num_classes": 19,
        },
    )
    return path


def test_predict_refuses_to_replace_a_prediction_edited_after_it_was_written(
    checkpoint, synth_raw_root, tmp_path, capsys
):
    out = tmp_path / "predictions"
    command = ("predict", checkpoint, synth_raw_root, "--split", "val", "--out", out, "--device", "cpu")
    assert main([str(part) for part in command]) == 0
    edited = out / prediction_name(list_frames(synth_raw_root, "val", label_source=None)[0].id)
    edited.write_bytes(edited.read_bytes() + b"the user's own bytes")  # e.g. a hand-corrected label map
    kept = edited.read_bytes()

    assert_refused(command, capsys, edited)
    assert edited.read_bytes() == kept
    assert main([str(part) for part in command] + ["--overwrite"]) == 0  # asked for: predicted again
    assert edited.read_bytes() != kept


@pytest.fixture
def pred(synth_raw_root, tmp_path) -> Path:
    out = tmp_path / "predictions"
    write_noisy_predictions(list_frames(synth_raw_root, "val", label_source="ids"), out, seed=9)
    return out


def test_evaluate_owns_only_files_it_can_prove_it_wrote(pred, synth_raw_root, tmp_path, capsys):
    # A user JSON that happens to have a top-level "cityseg" key is not an evaluation of ours.
    user_json = tmp_path / "mine.json"
    user_json.write_text('{"cityseg": "my notes"}')
    assert_refused(
        ["evaluate", pred, synth_raw_root, "--json", user_json, "--engine", "fast", "--workers", "1"], capsys, user_json
    )
    assert user_json.read_text() == '{"cityseg": "my notes"}'

    # Nor is a CSV with the header the evaluation writes.
    user_csv = tmp_path / "scores.csv"
    user_csv.write_text("class,IoU,iIoU\nroad,0.5,0.5\n")
    assert (
        main(
            [
                "evaluate",
                str(pred),
                str(synth_raw_root),
                "--json",
                str(tmp_path / "scores.json"),
                "--engine",
                "fast",
                "--workers",
                "1",
            ]
        )
        == 2
    )
    assert user_csv.read_text() == "class,IoU,iIoU\nroad,0.5,0.5\n" and not (tmp_path / "scores.json").exists()

    # Its own files it replaces; once the user edits one, it is the user's.
    ours = tmp_path / "eval" / "val.json"
    args = ["evaluate", str(pred), str(synth_raw_root), "--json", str(ours), "--engine", "fast", "--workers", "1"]
    assert main(args) == 0 and main(args) == 0
    for path in (ours.with_suffix(".csv"), ours):
        path.write_text(path.read_text().replace("0.", "0.0", 1))
        assert main(args) == 2
        assert _flat(str(path)) in _flat(capsys.readouterr().err)
        path.unlink()
    assert main(args) == 0
    assert json.loads(ours.read_text())["cityseg"]["written_by"]["command"] == "cityseg evaluate"
