"""Cross-validation: folds.json, per-fold runs, --only-folds then --resume, the full fit, summary.json from logs."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch

from cityseg.cli import main
from cityseg.errors import UserError
from cityseg.report.results import summary_text
from cityseg.training.config import resolve_config, with_epochs
from cityseg.training.cv import run_cv, summarize
from cityseg.training.folds import city_of
from cityseg.training.optim import build_scheduler
from cityseg.training.runfolder import load_log


@pytest.mark.trains
def test_cv_only_folds_then_resume_then_summary(tiny_config, synth_root, tmp_path):
    torch.set_num_threads(1)
    runs = tmp_path / "runs"
    config = tiny_config(lr=1e-3, batch_size=10)  # one step an epoch: the summary is the point
    seen = []
    first = run_cv(
        synth_root,
        runs,
        config,
        k=2,
        only_folds=[0],
        progress=False,
        on_epoch=lambda name, row: seen.append((name, row["epoch"])),
    )
    assert seen == [("fold_0", 1), ("fold_0", 2)]
    assert not first["complete"] and first["chosen_epochs"] is None and not (runs / "full").exists()
    assert first["miou_mean"] is None and first["protocol"].startswith("Null until all 2 folds are finished (1 are)")
    assert first["selected"]["miou_mean"] == first["folds"][0]["best_val_miou"]

    folds = json.loads((runs / "folds.json").read_text())
    assert (folds["k"], folds["split"], folds["seed"]) == (2, "city", 0)
    for fold in folds["folds"]:
        assert not {city_of(i) for i in fold["train"]} & {city_of(i) for i in fold["val"]}

    fold0_best = (runs / "fold_0" / "best.pt").stat().st_mtime_ns
    seen.clear()
    summary = run_cv(
        synth_root,
        runs,
        config,
        k=2,
        resume=True,
        progress=False,
        on_epoch=lambda name, row: seen.append((name, row["epoch"])),
    )
    assert (runs / "fold_0" / "best.pt").stat().st_mtime_ns == fold0_best  # finished fold skipped
    best_epochs = [min(load_log(runs / f"fold_{k}"), key=lambda r: r["val_loss"])["epoch"] for k in (0, 1)]
    chosen = int(statistics.median(best_epochs) + 0.5)
    assert seen == [("fold_1", 1), ("fold_1", 2)] + [("full", e) for e in range(1, chosen + 1)]
    assert summary == json.loads((runs / "summary.json").read_text())

    # Recompute the summary from the fold logs alone: the headline at the chosen epoch, `selected` at each best.
    logs = [load_log(runs / f"fold_{k}") for k in (0, 1)]
    best_rows = [min(rows, key=lambda r: r["val_loss"]) for rows in logs]
    # with two folds, each is scored at the other's best epoch
    chosen_rows = [logs[0][best_epochs[1] - 1], logs[1][best_epochs[0] - 1]]
    assert summary["complete"] and summary["chosen_epochs"] == chosen
    assert [f["best_epoch"] for f in summary["folds"]] == [r["epoch"] for r in best_rows]
    assert [f["best_val_loss"] for f in summary["folds"]] == [r["val_loss"] for r in best_rows]
    assert [f["epoch"] for f in summary["folds"]] == [best_epochs[1], best_epochs[0]]
    assert [f["val_miou"] for f in summary["folds"]] == [r["val_miou"] for r in chosen_rows]
    for stats, rows in ((summary, chosen_rows), (summary["selected"], best_rows)):
        mious = [r["val_miou"] for r in rows]
        assert stats["miou_mean"] == pytest.approx(np.mean(mious))
        assert stats["miou_std"] == pytest.approx(np.std(mious, ddof=1))
        for c in range(19):
            values = [r["class_iou"][c] for r in rows if r["class_iou"][c] is not None]
            assert stats["class_iou_mean"][c] == (pytest.approx(np.mean(values)) if values else None)
            assert stats["class_iou_std"][c] == (pytest.approx(np.std(values, ddof=1)) if len(values) > 1 else None)
    assert f"({chosen})" in summary["protocol"] and "optimistic" in summary["selected"]["note"]

    full_rows = load_log(runs / "full")
    assert [r["epoch"] for r in full_rows] == list(range(1, chosen + 1))
    assert all(r["val_loss"] is None and r["val_miou"] is None and r["class_iou"] is None for r in full_rows)
    full_info = json.loads((runs / "full" / "config.json").read_text())
    assert full_info["n_train"] == 20 and full_info["n_val"] == 0 and full_info["config"]["epochs"] == chosen
    assert full_info["config"]["schedule_epochs"] == config.epochs  # the folds' schedule, stopped at `chosen`
    assert summarize(runs) == summary

    with pytest.raises(UserError, match="different folds"):
        run_cv(synth_root, runs, config, k=3, resume=True, progress=False)
    with pytest.raises(UserError, match="--resume"):
        run_cv(synth_root, runs, config, k=2, progress=False)


@pytest.mark.trains
@pytest.mark.parametrize("cache", [False, True])
def test_cv_lists_the_train_folder_at_most_twice(tiny_config, synth_root, tmp_path, monkeypatch, cache):
    """One pass over the data: the folds, the runtime choices, every run's datasets and the cache share one listing."""
    import os

    torch.set_num_threads(1)
    train_dir = (synth_root / "leftImg8bit" / "train").resolve()
    listings = []

    def counting(real):
        def listing(path="."):
            if Path(os.fspath(path)).resolve() == train_dir:
                listings.append(real.__name__)
            return real(path)

        return listing

    for name in ("scandir", "listdir"):
        monkeypatch.setattr(os, name, counting(getattr(os, name)))
    config = tiny_config(epochs=1, batch_size=10, cache=str(tmp_path / "cache") if cache else None)
    summary = run_cv(synth_root, tmp_path / "runs", config, k=2, progress=False)
    assert summary["complete"] and (tmp_path / "runs" / "full" / "best.pt").is_file()
    assert (tmp_path / "cache").is_dir() == cache
    assert 1 <= len(listings) <= 2, listings


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


# ----------------------------------------------------------------------------------------------------------
# summary.json from hand-written logs, and the full fit's schedule
# ----------------------------------------------------------------------------------------------------------


def write_fold(runs, fold, config, mious, losses, finished=True):
    """A fold folder as the trainer leaves it: config.json, one log row per epoch, best.pt when finished."""
    run = runs / f"fold_{fold}"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"config": config.to_dict()}))
    rows = [
        {"epoch": e, "val_loss": loss, "val_miou": miou, "class_iou": [miou / 2] + [None] * 17 + [miou]}
        for e, (miou, loss) in enumerate(zip(mious, losses, strict=True), start=1)
    ]
    (run / "log.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    if finished:
        (run / "best.pt").write_bytes(b"")


def write_folds_file(runs, k):
    runs.mkdir(parents=True, exist_ok=True)
    folds = [{"train": [f"t{n}"], "val": [f"v{n}"]} for n in range(k)]
    (runs / "folds.json").write_text(json.dumps({"k": k, "split": "city", "seed": 0, "folds": folds}))


def three_folds(runs, config, fold_0_losses=(0.9, 0.5, 0.6, 0.7)):
    """Best epochs by val loss: fold 0 by `fold_0_losses` (2 by default), fold 1 3, fold 2 4."""
    write_folds_file(runs, 3)
    write_fold(runs, 0, config, mious=[0.30, 0.50, 0.40, 0.35], losses=list(fold_0_losses))
    write_fold(runs, 1, config, mious=[0.20, 0.30, 0.45, 0.44], losses=[0.9, 0.8, 0.4, 0.5])
    write_fold(runs, 2, config, mious=[0.10, 0.20, 0.30, 0.60], losses=[0.9, 0.8, 0.7, 0.3])
    return summarize(runs)


def test_headline_scores_each_fold_at_the_other_folds_median_best_epoch(tmp_path):
    summary = three_folds(tmp_path / "runs", resolve_config("seed", epochs=4, workers=0))
    # best epochs 2, 3, 4: the full fit trains median(2, 3, 4) = 3; fold 0 is scored at median(3, 4) = 3.5 -> 4,
    # fold 1 at median(2, 4) = 3, fold 2 at median(2, 3) = 2.5 -> 3 (halves round up)
    assert summary["chosen_epochs"] == 3
    assert [f["epoch"] for f in summary["folds"]] == [4, 3, 3]
    assert [f["best_epoch"] for f in summary["folds"]] == [2, 3, 4]
    assert [f["val_loss"] for f in summary["folds"]] == [0.7, 0.4, 0.7]
    assert summary["miou_mean"] == pytest.approx((0.35 + 0.45 + 0.30) / 3)
    assert summary["miou_std"] == pytest.approx(np.std([0.35, 0.45, 0.30], ddof=1))
    assert summary["class_iou_mean"][18] == pytest.approx((0.35 + 0.45 + 0.30) / 3)
    assert summary["class_iou_mean"][1] is None and summary["class_iou_std"][1] is None  # absent class
    assert summary["selected"]["miou_mean"] == pytest.approx((0.50 + 0.45 + 0.60) / 3)
    assert summary["selected"]["class_iou_mean"][0] == pytest.approx((0.25 + 0.225 + 0.30) / 3)
    protocol = summary["protocol"]
    assert "median of the other folds' best epochs by val loss (epochs 4, 3, 3)" in protocol and "(3)" in protocol
    assert "(optimistic)" in summary["selected"]["note"]
    assert "optimistic" in summary_text(summary)


def test_moving_a_folds_best_epoch_leaves_its_own_headline_epoch_alone(tmp_path):
    config = resolve_config("seed", epochs=4, workers=0)
    before = three_folds(tmp_path / "before", config)
    after = three_folds(tmp_path / "after", config, fold_0_losses=(0.9, 0.8, 0.7, 0.2))  # fold 0's best: 2 -> 4
    assert [f["best_epoch"] for f in after["folds"]] == [4, 3, 4]
    assert after["folds"][0]["epoch"] == before["folds"][0]["epoch"] == 4  # its own choice does not score it
    assert [f["epoch"] for f in after["folds"][1:]] == [4, 4]  # the others' may move ([3, 3] before)


def test_select_last_scores_the_last_epoch_as_soon_as_a_fold_finishes(tmp_path):
    runs, config = tmp_path / "runs", resolve_config("seed", epochs=3, select="last", workers=0)
    write_folds_file(runs, 2)
    write_fold(runs, 0, config, mious=[0.2, 0.5, 0.4], losses=[0.9, 0.5, 0.6])
    write_fold(runs, 1, config, mious=[0.1, 0.3], losses=[0.9, 0.8], finished=False)
    summary = summarize(runs)
    assert not summary["complete"] and summary["chosen_epochs"] is None
    assert [f["epoch"] for f in summary["folds"]] == [3, None]
    assert summary["miou_mean"] == pytest.approx(0.4) and summary["miou_std"] is None
    assert summary["folds"][0]["best_epoch"] == 3 and summary["selected"]["miou_mean"] == pytest.approx(0.4)
    assert "last epoch (3)" in summary["protocol"] and "1 finished of 2" in summary["protocol"]

    (runs / "fold_1").rename(tmp_path / "unfinished")
    write_fold(runs, 1, config, mious=[0.1, 0.3, 0.2], losses=[0.9, 0.8, 0.85])
    summary = summarize(runs)
    assert summary["complete"] and summary["chosen_epochs"] == 3  # a fixed budget: the full fit trains all 3
    assert summary["miou_mean"] == pytest.approx(0.3) == summary["selected"]["miou_mean"]


def scheduled_lrs(config, steps_per_epoch, steps):
    """The lr of each of the first `steps` optimizer steps under `build_scheduler`."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize("schedule", ["cosine", "poly"])
def test_full_fit_runs_the_folds_schedule_stopped_at_the_chosen_epoch(schedule):
    fold = resolve_config("strong", epochs=10, warmup_epochs=1.0, schedule=schedule, workers=0)
    full = with_epochs(fold, 6)
    assert (full.epochs, full.schedule_length, full.warmup_epochs) == (6, 10, 1.0)
    # Same steps per epoch: the full fit's lr at every step is the fold's lr at that step.
    assert scheduled_lrs(full, 7, 6 * 7) == scheduled_lrs(fold, 7, 10 * 7)[: 6 * 7]
    # All train images give more steps per epoch than a fold's share; the lr at each epoch start still agrees.
    fold_lrs, full_lrs = scheduled_lrs(fold, 8, 10 * 8), scheduled_lrs(full, 10, 6 * 10)
    for epoch in range(1, 6):
        assert full_lrs[epoch * 10] == pytest.approx(fold_lrs[epoch * 8], rel=1e-12)
    assert full_lrs[-1] > fold_lrs[-1] * 10  # stopped mid-schedule, far above the cosine's end
    assert with_epochs(fold, 10).schedule_length == 10 and scheduled_lrs(with_epochs(fold, 10), 7, 70) == scheduled_lrs(
        fold, 7, 70
    )


def bar_counts(err: str) -> list[tuple[int, int]]:
    """(done, total) of every state the cv bar was drawn in."""
    return [(int(a), int(b)) for a, b in re.findall(r"cv:\s+\d+%\|[^|]*\| (\d+)/(\d+) epochs", err)]


@pytest.mark.trains
def test_the_notebooks_two_calls_each_get_one_bar_counted_from_the_run_folders(
    tiny_config, synth_root, tmp_path, capsys
):
    torch.set_num_threads(1)
    config = tiny_config(epochs=1, lr=1e-3, batch_size=10)
    runs = tmp_path / "runs"
    run_cv(synth_root, runs, config, k=2, resume=True, full=False)  # the notebook's cross-validation cell
    first = capsys.readouterr()
    counts = bar_counts(first.err)
    assert counts[0] == (0, 2) and counts[-1] == (2, 2)  # folds only: 2 folds x 1 epoch
    assert first.out.count("runtime: device cpu") == 1  # printed once, not once per fold

    run_cv(synth_root, runs, config, k=2, resume=True, full=True)  # the notebook's full-fit cell
    counts = bar_counts(capsys.readouterr().err)
    assert counts[0] == (2, 3) and counts[-1] == (3, 3)  # the folds' epochs counted from their folders
