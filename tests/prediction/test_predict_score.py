"""`predict --score`: the fast engine's numbers from the label maps in memory equal `evaluate`'s from the PNGs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cityseg.cli import main
from cityseg.errors import UserError
from cityseg.evaluation import compare_exports, evaluate
from cityseg.evaluation.gt_cache import default_gt_cache_dir
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


def _same(a: dict, b: dict) -> None:
    assert compare_exports(a, b) == ([], 0.0)


def test_scores_in_memory_equal_both_engines_on_the_written_pngs(checkpoint, mutable_root, tmp_path):
    out = tmp_path / "pred"
    run = predict_split(checkpoint, mutable_root, "val", out_dir=out, device="cpu", progress=False, score=True)
    assert run.written > 0 and run.scores["cityseg"]["gt_cache"] is None  # no cache yet: gtFine decoded
    official = evaluate(out, mutable_root, "val", engine="official")
    fast = evaluate(out, mutable_root, "val", engine="fast")  # notes the split: the next evaluation caches it
    evaluate(out, mutable_root, "val", engine="fast")  # builds the default ground-truth cache
    _same(official, run.scores)
    _same(fast, run.scores)
    assert len(set(run.scores["classScores"].values())) > 3  # not a degenerate all-one-class prediction

    # A rerun predicts nothing (all frames done): every frame is scored from its PNG, ground truth from the cache.
    again = predict_split(checkpoint, mutable_root, "val", out_dir=out, device="cpu", progress=False, score=True)
    assert again.written == 0 and again.scores["cityseg"]["gt_cache"]["status"] == "fresh"
    assert Path(again.scores["cityseg"]["gt_cache"]["path"]).is_relative_to(default_gt_cache_dir(mutable_root))
    _same(official, again.scores)


def test_cli_prints_the_table_and_the_test_split_is_refused(checkpoint, mutable_root, tmp_path, capsys):
    args = ["predict", str(checkpoint), str(mutable_root), "--device", "cpu", "--no-progress", "--score"]
    assert main([*args, "--out", str(tmp_path / "val")]) == 0
    printed = capsys.readouterr().out
    result = evaluate(tmp_path / "val", mutable_root, "val", engine="official", gt_cache=False)
    assert f"{result['averageScoreClasses']:.3f}" in next(line for line in printed.splitlines() if "mIoU" in line)
    assert main([*args, "--split", "test", "--out", str(tmp_path / "test")]) == 2
    assert "withheld" in capsys.readouterr().err
    assert not (tmp_path / "test").exists()  # refused before any prediction


def test_scoring_a_split_without_instance_ids_is_a_user_error_before_predicting(checkpoint, mutable_root, tmp_path):
    next((mutable_root / "gtFine" / "val").rglob("*_instanceIds.png")).unlink()
    with pytest.raises(UserError, match="instanceIds"):
        predict_split(checkpoint, mutable_root, "val", out_dir=tmp_path / "p", device="cpu", progress=False, score=True)
    assert not (tmp_path / "p").exists()
