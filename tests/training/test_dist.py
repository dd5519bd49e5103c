"""Multi-process: torchrun with gloo trains, its all-reduced validation equals one process on the same inputs, and a
refused run folder stops every rank."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from helpers_training import CLI_ENV
from torch.utils.data import DataLoader

from cityseg.locks import hold_lock
from cityseg.training.config import TrainConfig
from cityseg.training.datasets import build_datasets
from cityseg.training.dist import ShardSampler, all_reduce_sum, cleanup, init_distributed, is_distributed, is_main
from cityseg.training.engine import StepContext, json_float, validate
from cityseg.training.folds import fold_ids
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


def test_under_torchrun_one_process_joins_a_gloo_group_too(monkeypatch):
    """torchrun's environment with one process: the DDP path, as for N (its collectives run all the same)."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    for name, value in {
        "RANK": 0,
        "WORLD_SIZE": 1,
        "LOCAL_RANK": 0,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": port,
    }.items():
        monkeypatch.setenv(name, str(value))
    info = init_distributed("cpu")
    try:
        assert (info.rank, info.world_size, info.device) == (0, 1, torch.device("cpu"))
        assert is_distributed() and dist.get_backend() == "gloo" and is_main()
    finally:
        cleanup()
    assert not is_distributed()


@pytest.mark.trains
def test_torchrun_two_cpu_processes_train_and_a_refused_run_folder_stops_every_rank(synth_root, tmp_path):
    """`torchrun --nproc_per_node=2 -m cityseg cv` (gloo) trains fold 0; fold 1's folder is held by another
    trainer, so both ranks stop there with rank 0's refusal (none waits forever in a collective)."""
    torch.set_num_threads(1)
    runs = tmp_path / "runs"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "cityseg",
        "cv",
        str(synth_root),
        "--out",
        str(runs),
        "--folds",
        "2",
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
        "2",
        "--lr",
        "1e-3",
    ]
    with hold_lock(runs / "fold_1" / ".lock-run", "the test's hold", "-"):
        done = subprocess.run(command, env=CLI_ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0, done.stderr[-3000:]
    assert "".join(done.stderr.split()).count(f"isinusebypid{os.getpid()}") == 2, done.stderr[-3000:]
    assert done.stdout.count("fold_0 epoch 1/1") == 1  # only rank 0 reports
    assert sorted(p.name for p in (runs / "fold_1").iterdir()) == [".lock-run"] and not (runs / "full").exists()

    run_dir = runs / "fold_0"
    info = json.loads((run_dir / "config.json").read_text())
    assert info["world_size"] == 2 and info["n_train"] == 10 and info["n_val"] == 10
    assert info["runtime"]["process_group"] == "gloo"
    (row,) = load_log(run_dir)

    # TensorBoard: rank 0 alone writes, and each step's loss is the mean over both ranks' batches, so the
    # steps average to the epoch's train_loss (rank 0's own losses alone would not).
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    board = EventAccumulator(str(run_dir))
    board.Reload()
    losses = [event.value for event in board.Scalars("train/loss")]
    assert len(losses) == 2 and sum(losses) / 2 == pytest.approx(row["train_loss"], rel=1e-5)  # 5 images a rank

    # The same model and val images in one process, one rank's shard at a time, summed by hand:
    # the all-reduced confusion matrix of the 2-process run must give the same IoUs.
    from cityseg.training.model import load_model

    model, state = load_model(run_dir / "last.pt")
    config = TrainConfig.from_dict(state["config"])
    folds = json.loads((runs / "folds.json").read_text())
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
