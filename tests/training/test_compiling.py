"""torch.compile's fallback (cityseg.training.compiling): a model that fails to compile, in its first forward or its first
backward, trains on eagerly after one warning line, with the numbers of an eager run. torch.compile is mocked
(compiling for real takes minutes on a CPU and cannot be made to fail on demand)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from cityseg.training.checkpoint import load_checkpoint
from cityseg.training.compiling import WARNING_PREFIX, CompiledOrEager
from cityseg.training.runfolder import load_log
from cityseg.training.trainer import train_run


class FailsInForward(nn.Module):
    """What torch.compile returns without a working Triton: compiling (at the first call) raises."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image):
        raise RuntimeError("Cannot find a working triton installation.\nMore details follow")


class _RaiseInBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor):
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("inductor failed to compile the backward graph")


class FailsInBackward(nn.Module):
    """A compiled forward that runs (and updates BatchNorm's running statistics) but whose backward fails."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image):
        return _RaiseInBackward.apply(self.model(image))


@pytest.fixture(scope="module")
def fold(fold0):
    """8 train images (two steps of 4) and 2 val images of fold 0: the failure comes in the first step."""
    return fold0[0][:8], fold0[1][:2]


@pytest.fixture(scope="module")
def eager_run(tiny_config, synth_root, fold, tmp_path_factory):
    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("eager") / "run"
    train_run(synth_root, run_dir, tiny_config(epochs=1, compile=False), *fold, progress=False)
    return run_dir


def numbers(run_dir):
    """What a run computed: its log's losses and scores, and its final weights."""
    rows = [
        {k: row[k] for k in ("epoch", "lr", "train_loss", "val_loss", "val_miou", "class_iou")}
        for row in load_log(run_dir)
    ]
    return rows, load_checkpoint(run_dir / "last.pt")["model"]


@pytest.mark.trains
@pytest.mark.parametrize("compiled", [FailsInForward, FailsInBackward], ids=["forward", "backward"])
def test_a_failed_compile_trains_on_eagerly_with_one_warning(
    tiny_config, compiled, synth_root, fold, eager_run, tmp_path, monkeypatch, capsys
):
    calls = []

    def fake_compile(model, *args, **kwargs):
        calls.append(model)
        return compiled(model)

    monkeypatch.setattr(torch, "compile", fake_compile)
    torch.set_num_threads(1)
    run_dir = tmp_path / "run"
    train_run(synth_root, run_dir, tiny_config(epochs=1, compile=True), *fold, progress=False)
    assert len(calls) == 1  # compiled once; the failure surfaced in the first training step
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith(WARNING_PREFIX)]
    assert len(warnings) == 1 and "training continues eagerly" in warnings[0]

    rows, weights = numbers(run_dir)
    eager_rows, eager_weights = numbers(eager_run)
    assert rows == eager_rows  # the failed step was redone from the same state: identical losses and scores
    assert weights.keys() == eager_weights.keys()
    assert all(torch.equal(weights[name], eager_weights[name]) for name in weights)

    runtime = json.loads((run_dir / "config.json").read_text())["runtime"]
    assert runtime["compile"] is False and runtime["compile_failed"].startswith("RuntimeError: ")


def test_out_of_memory_is_not_taken_for_a_compile_failure(monkeypatch):
    class OutOfMemory(nn.Module):
        def forward(self, image):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(torch, "compile", lambda model, *args, **kwargs: OutOfMemory())
    model = CompiledOrEager(nn.Conv2d(3, 4, 1))
    with pytest.raises(torch.cuda.OutOfMemoryError):
        model(torch.zeros(1, 3, 4, 4))
    assert model.failure is None  # still compiled: the eager model would need more memory, not less
