"""One training run: it learns, writes the run-folder format, repairs its log on resume, fails clearly."""

from __future__ import annotations

import copy
import json
import os
import shutil

import numpy as np
import pytest
import torch

from cityseg.cli import main
from cityseg.data.frames import list_frames, read_train_ids
from cityseg.errors import UserError
from cityseg.training.checkpoint import load_checkpoint
from cityseg.training.config import resolve_config
from cityseg.training.folds import make_folds, write_folds
from cityseg.training.metrics import confusion_matrix, mean_iou
from cityseg.training.runfolder import load_log
from cityseg.training.trainer import train_run

CHECKPOINT_KEYS = {"model", "optimizer", "scheduler", "scaler", "epoch", "rng", "config", "best_metric", "num_classes"}
ROW_KEYS = {
    "epoch",
    "lr",
    "train_loss",
    "val_loss",
    "val_miou",
    "class_iou",
    "images_per_s",
    "data_wait_share",
    "peak_memory_gb",
    "seconds",
}


@pytest.fixture(scope="module")
def learned_run(tiny_config, synth_root, fold0, tmp_path_factory):
    torch.set_num_threads(1)
    # lr 2e-3 (20x the reference's 1e-4) because the net starts from random weights and gets only 32
    # steps; on this data it passes 0.1 mIoU by epoch 4, against ~0.017 for the constant predictor. ResNet-18, the
    # smallest of the default's family: the loop under test is the same for any encoder, at half the cost.
    config = tiny_config(epochs=8, lr=2e-3, encoder="resnet18")
    run_dir = tmp_path_factory.mktemp("learn") / "fold_0"
    rows_seen = []
    result = train_run(
        synth_root,
        run_dir,
        config,
        *fold0,
        progress=False,
        on_epoch=lambda name, row: rows_seen.append((name, row["epoch"])),
    )
    return config, run_dir, result, rows_seen


def constant_predictor_miou(synth_root, train_ids, val_ids):
    """mIoU on the val images of always predicting the most frequent train class."""
    frames = {f.id: f for f in list_frames(synth_root, "train")}
    train_pixels = np.concatenate([read_train_ids(frames[i].label).ravel() for i in train_ids])
    majority = int(np.bincount(train_pixels[train_pixels != 255], minlength=19).argmax())
    confusion = sum(
        confusion_matrix(torch.full(mask.shape, majority), mask)
        for mask in (torch.from_numpy(read_train_ids(frames[i].label)).long() for i in val_ids)
    )
    return mean_iou(confusion)


@pytest.mark.trains
def test_short_run_beats_the_constant_predictor(learned_run, synth_root, fold0):
    _, _, result, _ = learned_run
    baseline = constant_predictor_miou(synth_root, *fold0)
    best = max(row["val_miou"] for row in result.rows)
    # The constant predictor only gets the majority class right (one of ~19 present classes, IoU ~ its
    # pixel share ~0.3), so its mIoU is ~0.02. A margin of 0.05 means the model classifies several
    # classes well beyond that, which a broken loop (no learning, wrong labels, bad upsampling) cannot.
    assert best > baseline + 0.05, (best, baseline)
    assert result.rows[-1]["train_loss"] < result.rows[0]["train_loss"]


@pytest.mark.trains
def test_run_folder_format(learned_run, synth_root):
    config, run_dir, result, rows_seen = learned_run
    names = sorted(p.name for p in run_dir.iterdir())
    assert [n for n in names if not n.startswith("events.out.tfevents.")] == [
        ".lock-run",
        "best.pt",
        "config.json",
        "last.pt",
        "log.jsonl",
    ]
    assert len(names) == 6  # and one TensorBoard event file (tests/training/test_tensorboard.py reads it)
    info = json.loads((run_dir / "config.json").read_text())
    # saved as resolved for this (CPU) machine: concrete values where the config left them at auto
    assert info["config"] == config.to_dict() | {"compile": False, "gpu_aug": False, "cache": None}
    assert info["runtime"] == {
        "device": "cpu",
        "world_size": 1,
        "process_group": None,
        "workers": 0,
        "amp_dtype": None,
        "channels_last": False,
        "compile": False,
        "gpu_aug": False,
        "cache": None,
        "deterministic": False,
    }
    assert {"sha", "dirty"} <= set(info["git"])
    assert {"torch", "segmentation-models-pytorch", "cityscapesscripts"} <= set(info["versions"])
    assert info["synthetic"] is True and info["data_root"] == str(synth_root.resolve())
    assert info["device"] == "cpu" and info["hardware"]["hostname"] and info["started"]

    rows = load_log(run_dir)
    assert [r["epoch"] for r in rows] == list(range(1, config.epochs + 1)) == [e for _, e in rows_seen]
    assert all(set(r) == ROW_KEYS and len(r["class_iou"]) == 19 for r in rows)
    assert all(0 <= r["data_wait_share"] <= 1 and r["peak_memory_gb"] is None for r in rows)  # CPU: no CUDA peak

    last = load_checkpoint(run_dir / "last.pt")
    best = load_checkpoint(run_dir / "best.pt")
    assert CHECKPOINT_KEYS <= set(last) and CHECKPOINT_KEYS <= set(best)
    assert last["epoch"] == config.epochs and last["num_classes"] == 19 and last["config"]["size"] == [64, 32]
    best_epoch = min(rows, key=lambda r: r["val_loss"])["epoch"]  # the seed recipe selects by val loss
    assert best["epoch"] == best_epoch == result.best_epoch
    assert best["best_metric"] == pytest.approx(rows[best_epoch - 1]["val_loss"])

    from cityseg.training.model import load_model

    model, _ = load_model(run_dir / "best.pt")
    assert model(torch.zeros(1, 3, 32, 64)).shape == (1, 19, 32, 64)


@pytest.mark.trains
def test_existing_run_is_never_overwritten(tiny_config, learned_run, synth_root, fold0):
    config, run_dir, _, _ = learned_run

    def files():  # the lock file is rewritten by every process that takes it, to name itself
        return {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir() if p.name != ".lock-run"}

    before = files()
    with pytest.raises(UserError, match="--resume"):
        train_run(synth_root, run_dir, config, *fold0, progress=False)
    with pytest.raises(UserError, match="lr: 0.002 -> 0.001"):
        train_run(synth_root, run_dir, tiny_config(epochs=8, lr=1e-3), *fold0, resume=True, progress=False)
    assert files() == before


@pytest.mark.trains
def test_a_log_row_lost_to_a_kill_comes_back_from_last_pt_without_retraining(learned_run, synth_root, tmp_path):
    """A kill after last.pt was saved but before its row was appended, leaving a torn line; `cityseg train
    --resume` repairs the log. (Kills at other moments: tests/training/test_cv_faults.py.)"""
    config, run_dir, result, _ = learned_run
    killed = tmp_path / "fold_0"
    shutil.copytree(run_dir, killed, ignore=shutil.ignore_patterns("*.pt"))
    for checkpoint in ("last.pt", "best.pt"):
        os.link(run_dir / checkpoint, killed / checkpoint)  # a resume that retrained would replace them
    lines = (killed / "log.jsonl").read_text().splitlines(keepends=True)
    (killed / "log.jsonl").write_text("".join(lines[:-1]) + lines[-1][:20])
    folds_file = tmp_path / "folds.json"
    write_folds(folds_file, make_folds(list_frames(synth_root, "train"), k=5, seed=0))  # fold 0: `fold0`
    flags = ["--epochs", "8", "--lr", "2e-3", "--size", "64x32", "--encoder", "resnet18", "--encoder-weights", "none"]
    flags += ["--workers", "0"]
    argv = ["train", synth_root, "--out", killed, "--fold", "0", "--folds-file", folds_file, *flags, "--resume"]
    assert main([str(arg) for arg in argv + ["--device", "cpu"]]) == 0
    assert load_log(killed) == result.rows == load_log(run_dir)
    assert (killed / "last.pt").stat().st_ino == (run_dir / "last.pt").stat().st_ino  # nothing retrained


@pytest.mark.trains
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny_config, synth_root, fold0, tmp_path, monkeypatch):
    import cityseg.training.losses
    import cityseg.training.trainer

    calls = []

    def diverging_loss(*args, **kwargs):
        real = cityseg.training.losses.build_loss(*args, **kwargs)

        def loss(logits, target):
            calls.append(1)
            value = real(logits, target)
            return value * float("nan") if len(calls) > 1 else value  # NaN from the 2nd step on

        return loss

    monkeypatch.setattr(cityseg.training.trainer, "build_loss", diverging_loss)
    config = tiny_config(epochs=3, batch_size=4)
    with pytest.raises(UserError, match=r"epoch 2, step 1.*--lr.*--no-amp"):
        train_run(synth_root, tmp_path / "run", config, fold0[0][:4], fold0[1][:2], progress=False)
    assert [r["epoch"] for r in load_log(tmp_path / "run")] == [1]
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1
    assert load_checkpoint(tmp_path / "run" / "best.pt")["epoch"] == 1


@pytest.mark.trains
def test_out_of_memory_becomes_a_user_error(tiny_config, synth_root, fold0, tmp_path, monkeypatch):
    import cityseg.training.model

    real_build = cityseg.training.model.build_model

    def model_that_runs_out_of_memory(*args, **kwargs):
        model = real_build(*args, **kwargs)

        def forward(image):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        model.forward = forward
        return model

    monkeypatch.setattr(cityseg.training.model, "build_model", model_that_runs_out_of_memory)
    with pytest.raises(UserError, match=r"out of memory.*--batch-size.*--crop.*--size"):
        train_run(synth_root, tmp_path / "run", tiny_config(), fold0[0][:4], fold0[1][:2], progress=False)


def test_gpu_aug_moves_the_colour_ops_from_the_loader_to_the_step(tiny_config, synth_root, fold0):
    from cityseg.training.datasets import build_datasets
    from cityseg.training.runtime import step_context

    config = tiny_config(aug=("flip", "photometric"), gpu_aug=True)
    train_set, _ = build_datasets(config, synth_root, fold0[0][:2])
    context = step_context(config, torch.device("cpu"))
    assert "PhotoMetricDistortion" not in repr(train_set.transform) and "RandomHorizontalFlip" in repr(
        train_set.transform
    )
    assert "BatchPhotometric" in repr(context.augment)
    in_loader, _ = build_datasets(tiny_config(aug=("flip", "photometric")), synth_root, fold0[0][:2])
    assert "PhotoMetricDistortion" in repr(in_loader.transform)
    assert step_context(tiny_config(aug=("flip", "photometric")), torch.device("cpu")).augment is None


# ----------------------------------------------------------------------------------------------------------
# Optimizer groups and weight decay; mixed precision
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unet() -> torch.nn.Module:
    """The default model, built once: each test changes a deep copy."""
    from cityseg.training.model import build_model

    torch.manual_seed(0)
    return build_model(encoder_weights=None)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_norm_weights_and_biases_never_decay_and_the_encoder_gets_its_share(unet, optimizer):
    from cityseg.training.optim import build_optimizer

    model = copy.deepcopy(unet)
    config = resolve_config("strong", optimizer=optimizer, workers=0)  # wd 1e-4, encoder x 0.25 for lr and wd
    built = build_optimizer(model, config)
    assert [g["name"] for g in built.param_groups] == ["decoder", "decoder_no_decay", "encoder", "encoder_no_decay"]
    assert built.param_groups[0]["lr"] == 4e-4 and built.param_groups[0]["weight_decay"] == 1e-4  # the logged lr
    encoder = {id(p) for p in model.encoder.parameters()}
    seen = []
    for group in built.param_groups:
        in_encoder = group["name"].startswith("encoder")
        assert group["lr"] == pytest.approx(1e-4 if in_encoder else 4e-4)
        expected_decay = 0.0 if group["name"].endswith("no_decay") else (2.5e-5 if in_encoder else 1e-4)
        assert group["weight_decay"] == pytest.approx(expected_decay)
        for param in group["params"]:
            assert (param.ndim == 1) == (group["weight_decay"] == 0.0) and (id(param) in encoder) == in_encoder
            seen.append(id(param))
    assert sorted(seen) == sorted(id(p) for p in model.parameters())  # every parameter exactly once
    one_d = [p for p in model.parameters() if p.ndim == 1]
    assert len(one_d) == 93 and len(list(model.parameters())) == 140  # BatchNorm weights and biases, conv biases


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_a_step_with_zero_gradient_changes_each_parameter_by_its_decay_alone(unet, optimizer):
    from cityseg.training.optim import build_optimizer

    # float64, so the check is the optimizer's formula and not float32 rounding (in float32, AdamW's factor
    # 1 - 4e-8 rounds to 1 - 6e-8, and the encoder's 1 - 2.5e-9 to exactly 1)
    model = copy.deepcopy(unet).double()
    config = resolve_config("strong", optimizer=optimizer, workers=0)
    built = build_optimizer(model, config)
    before = {id(p): p.detach().clone() for p in model.parameters()}
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    built.step()
    eps = 1e-8  # torch.optim.Adam's default
    for group in built.param_groups:
        lr, decay = group["lr"], group["weight_decay"]
        for param in group["params"]:
            p0 = before[id(param)]
            if optimizer == "adam":
                # coupled L2: g = wd * p; first step m_hat = g, sqrt(v_hat) = |g|, so p -= lr * g / (|g| + eps)
                gradient = decay * p0
                expected = p0 - lr * gradient / (gradient.abs() + eps)
            else:
                expected = p0 * (1 - lr * decay)  # AdamW's decoupled decay; SGD's first step on g = wd * p
            torch.testing.assert_close(param.detach(), expected, rtol=1e-13, atol=1e-16)
            if decay == 0.0:
                assert torch.equal(param.detach(), p0)
            else:
                assert not torch.equal(param.detach(), p0)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_the_optimizer_runs_fused_and_updates_like_torchs_per_tensor_loop(unet, optimizer):
    from cityseg.training.optim import build_optimizer, parameter_groups

    torch.manual_seed(0)
    model = copy.deepcopy(unet)
    reference_model = copy.deepcopy(model)
    config = resolve_config("strong", optimizer=optimizer, workers=0)
    built = build_optimizer(model, config)
    assert all(group["fused"] is True for group in built.param_groups)
    groups = parameter_groups(reference_model, config)
    if optimizer == "sgd":
        loop = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, foreach=False, fused=False)
    else:
        adam = torch.optim.Adam if optimizer == "adam" else torch.optim.AdamW
        loop = adam(groups, lr=config.lr, betas=config.betas, foreach=False, fused=False)
    for _ in range(3):  # moments and bias correction past the first step
        for param, twin in zip(model.parameters(), reference_model.parameters(), strict=True):
            param.grad = torch.randn_like(param) * 1e-3
            twin.grad = param.grad.clone()
        built.step()
        loop.step()
    for param, twin in zip(model.parameters(), reference_model.parameters(), strict=True):
        torch.testing.assert_close(param, twin, rtol=1e-6, atol=1e-8)  # one update, rounded in another order
    assert not torch.equal(next(model.parameters()), next(unet.parameters()))  # it did update


def test_fused_only_where_torch_has_the_kernels():
    from cityseg.training.optim import fused_where_supported

    assert fused_where_supported([{"params": [torch.zeros(2)]}]) is True
    assert fused_where_supported([{"params": [torch.zeros(2, device="meta")]}]) is None  # torch's default there
    assert fused_where_supported([{"params": [torch.zeros(2)]}, {"params": [torch.zeros(2, device="meta")]}]) is None


@pytest.mark.parametrize(("native", "expected"), [(True, torch.bfloat16), (False, torch.float16)])
def test_bf16_only_where_the_gpu_has_it_natively_else_fp16_with_a_scaler(tiny_config, monkeypatch, native, expected):
    from cityseg.prediction import inference
    from cityseg.training.runtime import needs_grad_scaler, step_context

    asked = []

    def is_bf16_supported(including_emulation=True):
        asked.append(including_emulation)
        return native or including_emulation  # a T4/V100 emulates bf16: True unless native support is asked for

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    cuda = torch.device("cuda")
    context = step_context(tiny_config(amp=True), cuda)
    assert context.amp_dtype == expected and needs_grad_scaler(context) == (expected == torch.float16)
    assert inference.inference_dtype(cuda, True) == expected
    assert asked and not any(asked)  # always asked with including_emulation=False
    assert step_context(tiny_config(amp=False), cuda).amp_dtype is None
    assert step_context(tiny_config(amp=True), torch.device("cpu")).amp_dtype is None
    assert inference.inference_dtype(torch.device("cpu"), True) is None
