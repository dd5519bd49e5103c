"""Checkpoints: plain tensors only, never half-written, and anything else is refused before it can run code."""

from __future__ import annotations

import errno
import io
import os
import pickle
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_training import format_1_checkpoint
from torch import nn

from cityseg.errors import UserError
from cityseg.training.checkpoint import load_checkpoint, save_checkpoint
from cityseg.training.model import build_model, load_model

torch.set_num_threads(1)


class _Payload:
    """Unpickling this writes `marker`: what a booby-trapped checkpoint would do (harmlessly, here)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "this code ran"))


class _TinyNet(nn.Module):
    """Stands in for the U-Net (same parts: an `encoder`, BatchNorm buffers), at a fraction of the bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Conv2d(4, 19, 1)

    def forward(self, x):
        return self.head(self.encoder(x))


def _small_checkpoint(path: Path, **extra) -> Path:
    save_checkpoint(path, {"model": {"w": torch.arange(64, dtype=torch.float32)}, "num_classes": 19, **extra})
    return path


def _assert_same(a, b, where="state"):
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), where  # NaN equals NaN here


# ---------------------------------------------------------------------------------------------- plain types


def test_training_state_loads_with_weights_only(tmp_path):
    from cityseg.training.config import TrainConfig
    from cityseg.training.optim import build_optimizer, build_scheduler, rng_state

    torch.manual_seed(0)
    config = TrainConfig(encoder_weights=None, workers=0, device="cpu", schedule="cosine", warmup_epochs=1.0)
    model = _TinyNet()
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=3)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    loss = nn.functional.cross_entropy(model(torch.randn(2, 3, 8, 8)), torch.randint(0, 19, (2, 8, 8)))
    loss.backward()
    optimizer.step()  # Adam now holds per-parameter moments and step counts
    scheduler.step()
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": 1,
        "best_metric": float("nan"),
        "best_epoch": None,
        "rng": rng_state(),
        "config": config.to_dict(),
        "num_classes": 19,
        "log_row": {"epoch": 1, "train_loss": loss.item(), "class_iou": [None] * 19},
    }
    path = tmp_path / "last.pt"
    save_checkpoint(path, state)

    loaded = torch.load(path, map_location="cpu", weights_only=True)  # raises if anything but plain types
    assert loaded["format"] == "cityseg-checkpoint" and loaded["format_version"] == 2 and "arch" not in loaded
    assert (loaded["config"]["arch"], loaded["config"]["encoder"]) == ("Unet", "resnet34")  # the model is named
    _assert_same({k: loaded[k] for k in state}, state)
    assert loaded["optimizer"]["state"], "the optimizer moments were saved"
    _assert_same(load_checkpoint(path)["rng"], state["rng"])


@pytest.mark.parametrize(
    "value",
    [np.float64(0.5), np.zeros(3), Path("runs/fold_0"), _TinyNet()],
    ids=["numpy-scalar", "numpy-array", "path", "module"],
)
def test_save_refuses_what_a_weights_only_load_would_refuse(tmp_path, value):
    path = tmp_path / "best.pt"
    with pytest.raises(TypeError, match=r"best_metric"):
        save_checkpoint(path, {"model": {}, "best_metric": value})
    assert not list(tmp_path.iterdir())  # nothing written, not even a temp file


# ---------------------------------------------------------------------------------------------- not a checkpoint


def _zip_of_text(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "holiday photos")


def _truncated(path, keep):
    data = _small_checkpoint(path.with_name("full.pt")).read_bytes()
    path.write_bytes(data[: keep(len(data))])


NOT_CHECKPOINTS = {
    "missing": (lambda p: None, "does not exist"),
    "empty": (lambda p: p.write_bytes(b""), "empty"),
    "text": (lambda p: p.write_text("these are my notes\n"), "cannot be read"),
    "zip": (_zip_of_text, "cannot be read"),
    "half": (lambda p: _truncated(p, lambda n: n // 2), "cannot be read"),
    "head": (lambda p: _truncated(p, lambda n: 100), "cannot be read"),
    "dict-without-marker": (lambda p: torch.save({"model": {}}, p), "not a cityseg checkpoint"),
    "list": (lambda p: torch.save([torch.zeros(2)], p), "not a cityseg checkpoint"),
    "other-arch-stamp": (
        lambda p: torch.save({"format": "cityseg-checkpoint", "format_version": 1, "arch": "deeplabv3-resnet50"}, p),
        "deeplabv3-resnet50",
    ),
    "newer-format": (lambda p: torch.save({"format": "cityseg-checkpoint", "format_version": 3}, p), "newer cityseg"),
}


@pytest.mark.parametrize("kind", list(NOT_CHECKPOINTS))
def test_not_a_checkpoint_is_a_user_error_naming_the_file(tmp_path, kind):
    make, message = NOT_CHECKPOINTS[kind]
    path = tmp_path / "best.pt"
    make(path)
    with pytest.raises(UserError, match=message) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_a_flipped_bit_in_the_weights_is_refused(tmp_path):
    path = _small_checkpoint(tmp_path / "best.pt")
    data = bytearray(path.read_bytes())
    weights = torch.arange(64, dtype=torch.float32).numpy().tobytes()
    offset = bytes(data).index(weights) + 4 * 33  # inside the tensor's bytes
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    # torch itself loads the damaged file without a word: the changed weight goes unnoticed.
    assert not torch.equal(torch.load(path, weights_only=True)["model"]["w"], torch.arange(64.0))
    with pytest.raises(UserError, match="damaged") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_weights_of_another_architecture_are_refused(tmp_path):
    import segmentation_models_pytorch as smp

    other = smp.Unet("resnet18", encoder_weights=None, classes=19)  # right class count, not the network named
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"model": other.state_dict(), "num_classes": 19})  # no config: the default U-Net/ResNet-34
    with pytest.raises(UserError, match="another architecture.*U-Net / resnet34") as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_load_model_builds_the_architecture_the_stored_config_names(tmp_path):
    from cityseg.training.config import resolve_config

    config = resolve_config("seed", arch="FPN", encoder="resnet18", encoder_weights=None)
    torch.manual_seed(3)
    network = build_model(None, arch="FPN", encoder="resnet18")
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"model": network.state_dict(), "num_classes": 19, "config": config.to_dict()})
    loaded, state = load_model(path)
    assert type(loaded).__name__ == "FPN" and loaded.encoder.layer1[0].conv1.weight.shape[0] == 64
    with torch.no_grad():
        torch.testing.assert_close(loaded(torch.ones(1, 3, 64, 64)), network.eval()(torch.ones(1, 3, 64, 64)))


def test_a_format_1_checkpoint_still_loads_predicts_and_resumes_as_the_default_unet(tmp_path):
    from cityseg.prediction.deployed import load_network
    from cityseg.prediction.inference import forward_padded
    from cityseg.training.config import TrainConfig, config_differences, resolve_config

    torch.manual_seed(4)
    network = build_model(None).eval()
    path = format_1_checkpoint(tmp_path / "best.pt", network)
    loaded, state = load_network(path)
    assert type(loaded).__name__ == "Unet" and state["epoch"] == 3
    image = torch.randn(1, 3, 70, 90)
    with torch.no_grad():
        torch.testing.assert_close(forward_padded(loaded, image), forward_padded(network, image))
    stored = TrainConfig.from_dict(state["config"])  # no arch/encoder: the model format 1 always held
    assert (stored.arch, stored.encoder) == ("Unet", "resnet34")
    assert config_differences(stored, resolve_config("seed", encoder_weights=None, size=(128, 64))) == []


def test_resume_refuses_a_changed_architecture_or_encoder(tmp_path):
    from cityseg.training.config import resolve_config
    from cityseg.training.runfolder import check_run_dir

    config = resolve_config("seed", encoder_weights=None, workers=0, device="cpu")
    run = tmp_path / "fold_0"
    run.mkdir()
    save_checkpoint(run / "last.pt", {"model": {}, "num_classes": 19, "epoch": 1, "config": config.to_dict()})
    assert check_run_dir(run, config, resume=True)["epoch"] == 1
    for change in ({"arch": "FPN"}, {"encoder": "resnet18"}):
        with pytest.raises(UserError, match=f"{next(iter(change))}: "):
            check_run_dir(run, resolve_config("seed", encoder_weights=None, workers=0, device="cpu", **change), True)


# ---------------------------------------------------------------------------------------------- malicious files


def _booby_trap(path: Path, marker: Path, how: str) -> None:
    if how == "bare":
        torch.save(_Payload(marker), path)
    elif how == "inside-a-real-looking-checkpoint":
        model = {"w": torch.zeros(4)}
        torch.save(
            {
                "format": "cityseg-checkpoint",
                "arch": "unet-resnet34",
                "model": model,
                "num_classes": 19,
                "extra": _Payload(marker),
            },
            path,
        )
    else:  # a plain pickle, the pre-zip torch format
        with open(path, "wb") as handle:
            pickle.dump({"model": _Payload(marker)}, handle, protocol=2)


@pytest.mark.parametrize("how", ["bare", "inside-a-real-looking-checkpoint", "plain-pickle"])
def test_malicious_pickle_is_refused_without_running_it(tmp_path, how):
    marker = tmp_path / f"pwned-{uuid.uuid4().hex}"
    path = tmp_path / "shared.pt"
    _booby_trap(path, marker, how)

    with pytest.raises(UserError, match="not a plain-tensor") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and "weights_only" not in str(info.value)  # no advice to load unsafely
    with pytest.raises(UserError):
        load_model(path)
    with pytest.raises(UserError, match="cannot read encoder weights"):
        build_model(encoder_weights=path)
    assert not marker.exists()

    # The trap is live: an unsafe load does run it. This is why every load above must refuse.
    torch.load(path, weights_only=False) if how != "plain-pickle" else pickle.loads(path.read_bytes())
    assert marker.read_text() == "this code ran"


# ---------------------------------------------------------------------------------------------- full or read-only disk


def _old_and_new(tmp_path):
    path = _small_checkpoint(tmp_path / "last.pt", epoch=1)
    return path, path.read_bytes(), {"model": {"w": torch.ones(4096)}, "num_classes": 19, "epoch": 2}


def test_disk_full_mid_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path, before, newer = _old_and_new(tmp_path)
    real_save = torch.save

    def save_half_then_fill_the_disk(obj, handle, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        handle.write(buffer.getvalue()[: buffer.tell() // 2])
        handle.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", save_half_then_fill_the_disk)
    with pytest.raises(OSError) as info:
        save_checkpoint(path, newer)
    assert info.value.errno == errno.ENOSPC
    assert info.value.filename == str(path)  # names the checkpoint, not the hidden temp file
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1


def test_read_only_folder_is_a_clear_os_error_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path, before, newer = _old_and_new(tmp_path)
    real_open = os.open

    def read_only_open(file, flags, *args, **kwargs):
        # What a read-only mount answers (chmod cannot show it: tests may run as root).
        if Path(os.fsdecode(file)).parent == tmp_path and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", os.fsdecode(file))
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only_open)
    with pytest.raises(OSError) as info:
        save_checkpoint(path, newer)
    monkeypatch.undo()
    assert info.value.errno == errno.EROFS and info.value.filename == str(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_checkpoint_whose_stored_size_is_absurd_is_refused_naming_the_file(tmp_path):
    from cityseg.training.config import resolve_config

    config = resolve_config("seed", encoder_weights=None).to_dict() | {"size": [2**35, 32]}
    path = _small_checkpoint(tmp_path / "best.pt", config=config)
    with pytest.raises(UserError, match="--size") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
