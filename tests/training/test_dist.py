"""Multi-process: torchrun with gloo trains, and its all-reduced validation equals one process on the same inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torch.utils.data import DataLoader

from cityseg.data.frames import list_frames
from cityseg.training.config import TrainConfig
from cityseg.training.datasets import build_datasets
from cityseg.training.dist import ShardSampler, all_reduce_sum, is_distributed, is_main
from cityseg.training.engine import StepContext, json_float, validate
from cityseg.training.folds import fold_ids, make_folds, write_folds
from cityseg.training.runfolder import load_log


def test_shards_cover_every_index_once_without_padding():
    for length in (0, 1, 5, 8):
        shards = [list(ShardSampler(length, shard=r, shards=3)) for r in range(3)]
        assert sorted(i for shard in shards for i in shard) == list(range(length))
        assert [len(ShardSampler(length, shard=r, shards=3)) for r in range(3)] == [len(s) for s in shards]


def test_single_process_helpers_are_no_ops():
    assert not is_distributed() and is_main()
    tensor = torch.tensor([1, 2, 3])
    assert all_reduce_sum(tensor) is tensor and tensor.tolist() == [1, 2, 3]


def torchrun_train(synth_root, tmp_path, processes: int) -> subprocess.CompletedProcess:
    """`torchrun -m cityseg train` of fold 0 for one epoch on the CPU (gloo) into tmp_path/run."""
    folds = make_folds(list_frames(synth_root, "train"), k=5, seed=0)
    write_folds(tmp_path / "folds.json", folds)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
        "cityseg",
        "train",
        str(synth_root),
        "--out",
        str(tmp_path / "run"),
        "--fold",
        "0",
        "--folds-file",
        str(tmp_path / "folds.json"),
        "--epochs",
        "1",
        "--size",
        "64x32",
        "--encoder-weights",
        "none",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--batch-size",
        "4",
        "--lr",
        "1e-3",
    ]
    done = subprocess.run(
        command, env=os.environ | {"OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("done:") == 1  # only rank 0 reports
    return done


@pytest.mark.slow
def test_torchrun_one_process_takes_the_ddp_path(synth_root, tmp_path):
    torchrun_train(synth_root, tmp_path, 1)
    info = json.loads((tmp_path / "run" / "config.json").read_text())
    assert info["world_size"] == 1 and info["runtime"]["process_group"] == "gloo"  # joined the group: DDP ran
    assert len(load_log(tmp_path / "run")) == 1


@pytest.mark.slow
def test_torchrun_two_cpu_processes(synth_root, tmp_path):
    torch.set_num_threads(1)
    torchrun_train(synth_root, tmp_path, 2)
    folds = make_folds(list_frames(synth_root, "train"), k=5, seed=0)
    run_dir = tmp_path / "run"
    info = json.loads((run_dir / "config.json").read_text())
    assert info["world_size"] == 2 and info["n_train"] == 16 and info["n_val"] == 4
    assert info["runtime"]["process_group"] == "gloo"
    (row,) = load_log(run_dir)

    # TensorBoard: rank 0 alone writes, and each step's loss is the mean over both ranks' batches, so the
    # steps average to the epoch's train_loss (rank 0's own losses alone would not).
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    board = EventAccumulator(str(run_dir))
    board.Reload()
    losses = [event.value for event in board.Scalars("train/loss")]
    assert len(losses) == 2 and sum(losses) / 2 == pytest.approx(row["train_loss"], rel=1e-5)  # 8 images a rank

    # The same model and val images in one process, one rank's shard at a time, summed by hand:
    # the all-reduced confusion matrix of the 2-process run must give the same IoUs.
    from cityseg.training.model import load_model

    model, state = load_model(run_dir / "last.pt")
    config = TrainConfig.from_dict(state["config"])
    _, val_set = build_datasets(config, synth_root, *fold_ids(folds, 0))
    context = StepContext(torch.device("cpu"))
    results = [
        validate(
            model,
            DataLoader(val_set, batch_size=4, sampler=ShardSampler(len(val_set), shard=r, shards=2)),
            context,
            size=config.size,
            progress=False,
        )
        for r in range(2)
    ]
    from cityseg.training.metrics import iou_per_class

    confusion = results[0].confusion + results[1].confusion
    assert [json_float(v) for v in iou_per_class(confusion)] == row["class_iou"]
    whole = validate(model, DataLoader(val_set, batch_size=4), context, size=config.size, progress=False)
    assert whole.confusion.sum() == confusion.sum()
