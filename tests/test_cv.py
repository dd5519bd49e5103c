"""Cross-validation: folds.json, per-fold runs, --only-folds then --resume, the full fit, summary.json from logs."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest
import torch

from cityseg.cli import main
from cityseg.config import resolve_config
from cityseg.cv import run_cv, summarize
from cityseg.errors import UserError
from cityseg.folds import city_of
from cityseg.trainer import load_log


def tiny_config(**overrides):
    values = {"size": (64, 32), "encoder_weights": None, "workers": 0, "device": "cpu", "epochs": 2,
              "lr": 1e-3, "batch_size": 5}
    return resolve_config("seed", **(values | overrides))


def test_cv_only_folds_then_resume_then_summary(synth_root, tmp_path):
    torch.set_num_threads(1)
    runs = tmp_path / "runs"
    config = tiny_config()
    seen = []
    first = run_cv(synth_root, runs, config, k=2, only_folds=[0], progress=False,
                   on_epoch=lambda name, row: seen.append((name, row["epoch"])))
    assert seen == [("fold_0", 1), ("fold_0", 2)]
    assert not first["complete"] and first["chosen_epochs"] is None and not (runs / "full").exists()

    folds = json.loads((runs / "folds.json").read_text())
    assert (folds["k"], folds["split"], folds["seed"]) == (2, "city", 0)
    for fold in folds["folds"]:
        assert not {city_of(i) for i in fold["train"]} & {city_of(i) for i in fold["val"]}

    fold0_best = (runs / "fold_0" / "best.pt").stat().st_mtime_ns
    seen.clear()
    summary = run_cv(synth_root, runs, config, k=2, resume=True, progress=False,
                     on_epoch=lambda name, row: seen.append((name, row["epoch"])))
    assert (runs / "fold_0" / "best.pt").stat().st_mtime_ns == fold0_best  # finished fold skipped
    best_epochs = [min(load_log(runs / f"fold_{k}"), key=lambda r: r["val_loss"])["epoch"] for k in (0, 1)]
    chosen = int(statistics.median(best_epochs) + 0.5)
    assert seen == [("fold_1", 1), ("fold_1", 2)] + [("full", e) for e in range(1, chosen + 1)]
    assert summary == json.loads((runs / "summary.json").read_text())

    # Recompute the summary from the fold logs alone.
    best_rows = [min(load_log(runs / f"fold_{k}"), key=lambda r: r["val_loss"]) for k in (0, 1)]
    assert summary["complete"] and summary["chosen_epochs"] == chosen
    assert [f["best_epoch"] for f in summary["folds"]] == [r["epoch"] for r in best_rows]
    assert [f["val_loss"] for f in summary["folds"]] == [r["val_loss"] for r in best_rows]
    mious = [r["val_miou"] for r in best_rows]
    assert summary["miou_mean"] == pytest.approx(np.mean(mious))
    assert summary["miou_std"] == pytest.approx(np.std(mious, ddof=1))
    for c in range(19):
        values = [r["class_iou"][c] for r in best_rows if r["class_iou"][c] is not None]
        assert summary["class_iou_mean"][c] == (pytest.approx(np.mean(values)) if values else None)
        assert summary["class_iou_std"][c] == (pytest.approx(np.std(values, ddof=1)) if len(values) > 1 else None)

    full_rows = load_log(runs / "full")
    assert [r["epoch"] for r in full_rows] == list(range(1, chosen + 1))
    assert all(r["val_loss"] is None and r["val_miou"] is None and r["class_iou"] is None for r in full_rows)
    full_info = json.loads((runs / "full" / "config.json").read_text())
    assert full_info["n_train"] == 20 and full_info["n_val"] == 0 and full_info["config"]["epochs"] == chosen
    assert summarize(runs) == summary

    with pytest.raises(UserError, match="different folds"):
        run_cv(synth_root, runs, config, k=3, resume=True, progress=False)
    with pytest.raises(UserError, match="--resume"):
        run_cv(synth_root, runs, config, k=2, progress=False)


@pytest.mark.parametrize(
    "options",
    [
        ["--batch-size", "0"],
        ["--folds", "1"],
        ["--folds", "11"],  # the synthetic train split has 10 cities
        ["--crop", "256x256"],  # larger than the 128x64 images
        ["--size", "64x32", "--crop", "128x64"],  # larger than the resized images
        ["--only-folds", "5"],
        ["--lr", "0"],
    ],
)
def test_cli_bad_values_exit_2(synth_root, tmp_path, options, capsys):
    code = main(["cv", str(synth_root), "--out", str(tmp_path / "runs"), "--encoder-weights", "none", *options])
    assert code == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # refused before writing anything


def test_cli_train_needs_fold_or_full(synth_root, tmp_path):
    assert main(["train", str(synth_root), "--out", str(tmp_path / "run")]) == 2
    assert main(["train", str(synth_root), "--out", str(tmp_path / "run"), "--fold", "0"]) == 2
