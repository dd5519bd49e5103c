"""Bad input gets one accurate paragraph and exit 2, never a traceback or a silently wrong result: checkpoints of
an unknown format or with a malformed config, unsafe torch versions, camera images that are not 8-bit colour,
image/label pairs of different sizes behind a resizing cache, dangling links, a download without credentials,
flags that fail only after files were written, a full disk, a Ctrl-C before the first checkpoint."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_training import CLI_ENV, cityseg_command
from packaging.requirements import Requirement
from PIL import Image

from cityseg.cli import main
from cityseg.data.cache import ensure_cache
from cityseg.data.dataset import CityscapesDataset
from cityseg.data.frames import list_frames, read_image
from cityseg.errors import UserError
from cityseg.training import checkpoint as checkpoint_module
from cityseg.training.checkpoint import load_checkpoint, save_checkpoint
from cityseg.training.model import build_model

REPO = Path(__file__).resolve().parents[1]
TRAIN_OPTIONS = (
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


def error_of(capsys) -> str:
    """The CLI's one paragraph (checked to be one, without a traceback), unwrapped."""
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err, err
    return " ".join(err[err.index("error:") :].split())


# ---------------------------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def weights() -> dict:
    torch.manual_seed(0)
    return build_model(encoder_weights=None).state_dict()


def _runtime_requirements() -> tuple[list[str], list[str]]:
    """(requirements.txt lines, pyproject.toml dependencies): `make install` reads the first, pip the second."""
    block = re.search(r"^dependencies = \[(.*?)^\]", (REPO / "pyproject.toml").read_text(), re.S | re.M)[1]
    project = re.findall(r'^\s*"([^"]+)",', block, re.M)
    lines = [line.split(" #")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    return [line for line in lines if line and line[0].isalnum()], project


def test_requirements_txt_installs_every_dependency_of_the_package():
    listed, project = _runtime_requirements()
    assert {str(Requirement(r)) for r in project} <= {str(Requirement(r)) for r in listed}


def test_requirements_exclude_torches_whose_weights_only_load_is_unsafe():
    listed, project = _runtime_requirements()
    for source, lines in (("requirements.txt", listed), ("pyproject.toml", project)):
        requirements = {r.name: r.specifier for r in map(Requirement, lines)}
        for unsafe in ("2.4.1", "2.5.1", "2.9.1"):  # CVE-2025-32434 below 2.6, CVE-2026-24747 below 2.10
            assert not requirements["torch"].contains(unsafe), (source, unsafe)
        assert requirements["torch"].contains("2.10.0") and requirements["torch"].contains("2.14.1"), source
        assert not requirements["torchvision"].contains("0.24.1") and requirements["torchvision"].contains("0.25.0")


def test_an_unsafe_torch_does_not_open_checkpoints(tmp_path, monkeypatch):
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}, "num_classes": 19})
    monkeypatch.setattr(checkpoint_module.torch, "__version__", torch.torch_version.TorchVersion("2.9.1"))
    with pytest.raises(UserError, match="CVE-2026-24747"):
        load_checkpoint(path)


def test_unknown_checkpoint_format_version_is_refused(weights, synth_raw_root, tmp_path, capsys):
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"model": weights, "num_classes": 19, "config": {"size": None}, "format_version": 99})
    assert main(["predict", str(path), str(synth_raw_root), "--out", str(tmp_path / "p"), "--device", "cpu"]) == 2
    message = error_of(capsys)
    assert str(path) in message and "format version 99" in message and "newer cityseg" in message
    assert not (tmp_path / "p").exists()


def test_a_malformed_config_in_a_checkpoint_is_refused_on_every_load_path(weights, synth_raw_root, tmp_path, capsys):
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"model": weights, "num_classes": 19, "epoch": 1, "config": {"size": "banana"}})
    assert main(["predict", str(path), str(synth_raw_root), "--out", str(tmp_path / "p"), "--device", "cpu"]) == 2
    message = error_of(capsys)
    assert str(path) in message and "size" in message and "banana" in message

    # the same config in the card of a `cityseg export` folder
    export = tmp_path / "export"
    export.mkdir()
    (export / "card.json").write_text(
        json.dumps(
            {
                "format": "cityseg-export",
                "format_version": 1,
                "files": {
                    kind: {"file": name, "sha256": "0" * 64}
                    for kind, name in (("weights", "model.safetensors"), ("onnx", "model.onnx"))
                },
                "config": {"size": "banana"},
            }
        )
    )
    assert main(["predict", str(export), str(synth_raw_root), "--out", str(tmp_path / "p"), "--device", "cpu"]) == 2
    message = error_of(capsys)
    assert str(export / "card.json") in message and "banana" in message


def test_a_checkpoint_path_that_is_a_folder_is_called_a_folder(synth_raw_root, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(run / "best.pt", {"model": {"w": torch.ones(2)}, "num_classes": 19})
    assert main(["predict", str(run), str(synth_raw_root), "--device", "cpu"]) == 2
    message = error_of(capsys)
    assert "is a folder" in message and str(run / "best.pt") in message and "does not exist" not in message


# ---------------------------------------------------------------------------------------------- images


def _replace(path: Path, image: Image.Image, **save) -> None:
    image.save(path, format=save.pop("format", "PNG"), **save)


@pytest.mark.parametrize("mode", ["I;16", "I", "F", "1", "CMYK"])
def test_camera_images_that_are_not_8_bit_colour_are_refused(mutable_root, mode):
    frame = list_frames(mutable_root, "train")[0]
    rgb = np.asarray(Image.open(frame.image))  # (H, W, 3) uint8
    grey = rgb.mean(axis=2)
    if mode == "I;16":  # a 16-bit grey photo: PIL's convert("RGB") would clip it to almost all white
        image = Image.fromarray((grey * 257).astype(np.uint16))
    elif mode in ("I", "F"):
        image = Image.fromarray(grey.astype(np.int32 if mode == "I" else np.float32), mode)
    else:
        image = Image.fromarray(rgb).convert(mode)
    # PNG holds neither CMYK nor float: such files exist as TIFF or JPEG bytes behind a .png name
    _replace(frame.image, image, format={"CMYK": "JPEG", "F": "TIFF", "I": "TIFF"}.get(mode, "PNG"))
    assert Image.open(frame.image).mode == mode
    with pytest.raises(UserError, match="8-bit") as refused:
        CityscapesDataset([frame], label_source="trainIds")[0]
    assert str(frame.image) in str(refused.value)


@pytest.mark.parametrize("mode", ["RGBA", "L", "LA", "P"])
def test_8_bit_grey_palette_and_alpha_images_are_read_as_rgb(mutable_root, mode):
    frame = list_frames(mutable_root, "train")[0]
    image = Image.open(frame.image).convert(mode)
    _replace(frame.image, image)
    np.testing.assert_array_equal(read_image(frame.image), np.asarray(image.convert("RGB")))


def test_cache_compares_image_and_label_sizes_before_resizing(mutable_root, tmp_path):
    frame = list_frames(mutable_root, "train")[0]
    Image.open(frame.label).resize((100, 50), Image.NEAREST).save(frame.label)  # beside a 128x64 image
    with pytest.raises(UserError, match="same size") as refused:
        ensure_cache(mutable_root, "train", (64, 32), tmp_path / "cache", workers=1, progress=False)
    assert str(frame.label) in str(refused.value) and "100x50" in str(refused.value)


def test_a_dangling_image_link_is_called_a_dangling_link(mutable_root):
    frame = list_frames(mutable_root, "train")[0]
    link = frame.image.with_name(frame.image.name.replace(frame.id, frame.id[:-6] + "999999"))
    link.symlink_to(mutable_root / "unmounted-drive" / link.name)
    with pytest.raises(UserError, match="symbolic links to files that do not exist") as refused:
        list_frames(mutable_root, "train")
    assert str(link) in str(refused.value) and "name pattern" not in str(refused.value)


# ---------------------------------------------------------------------------------------------- commands


def test_download_without_credentials_or_terminal_says_which_variables_to_set(tmp_path):
    env = {k: v for k, v in CLI_ENV.items() if k not in ("CITYSCAPES_USERNAME", "CITYSCAPES_PASSWORD")}
    done = subprocess.run(
        cityseg_command("download", "--dest", tmp_path / "dl"),
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "CITYSCAPES_USERNAME" in done.stderr
    assert "CITYSCAPES_PASSWORD" in done.stderr and not (tmp_path / "dl").exists()


def test_a_bad_flag_fails_before_cv_writes_anything(synth_root, tmp_path, capsys):
    runs = tmp_path / "runs"
    weights = tmp_path / "nonexist.pth"
    argv = ["cv", synth_root, "--out", runs, "--folds", "2", *TRAIN_OPTIONS, "--encoder-weights", weights]
    assert main([str(arg) for arg in argv]) == 2
    assert str(weights) in error_of(capsys)
    assert not runs.exists()  # so the corrected command, or --resume, finds nothing in its way


@pytest.mark.parametrize("command", [pytest.param("train", marks=pytest.mark.trains), "cv"])  # train_run refuses it
def test_an_out_folder_that_is_a_file_is_refused(synth_root, tmp_path, command, capsys):
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    which = ("--full",) if command == "train" else ("--folds", "2")
    assert main([command, str(synth_root), "--out", str(taken), *which, *TRAIN_OPTIONS]) == 2
    assert str(taken) in error_of(capsys) and taken.read_text() == "mine"


@pytest.mark.trains
def test_a_full_disk_while_saving_a_checkpoint_names_the_file_and_the_disk(synth_root, tmp_path, monkeypatch, capsys):
    """Simulated as torch 2.14 fails on a full disk: RuntimeError 'unexpected pos', the OSError only its context."""
    real_save = torch.save

    def save_on_a_full_disk(obj, handle, *args, **kwargs):
        if not (isinstance(obj, dict) and obj.get("format") == "cityseg-checkpoint"):
            return real_save(obj, handle, *args, **kwargs)
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None

    monkeypatch.setattr(checkpoint_module.torch, "save", save_on_a_full_disk)
    run = tmp_path / "run"
    assert main(["train", str(synth_root), "--out", str(run), "--full", *TRAIN_OPTIONS]) == 2
    message = error_of(capsys)
    assert str(run / "last.pt") in message and "full" in message and "--resume" in message
    # the epoch's TensorBoard events are flushed before last.pt (tests/training/test_tensorboard.py), the lock is ours
    kept = [p.name for p in run.iterdir() if not p.name.startswith((".lock-", "events.out.tfevents."))]
    assert kept == ["config.json"]


@pytest.mark.trains
def test_a_full_tmpfs_while_saving_a_checkpoint_exits_2(synth_root, tmp_path, capsys):
    disk = tmp_path / "disk"
    disk.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(disk)], capture_output=True).returncode
        != 0
    ):
        pytest.skip("mounting a 5 MB tmpfs needs root; the simulated full disk above covers this case")
    try:
        code = main(["cv", str(synth_root), "--out", str(disk / "runs"), "--folds", "2", *TRAIN_OPTIONS])
    finally:
        subprocess.run(["umount", str(disk)], check=True)
    assert code == 2
    message = error_of(capsys)
    assert "last.pt" in message and "No space left on device" in message


@pytest.mark.trains
def test_ctrl_c_before_the_first_checkpoint_does_not_claim_one(synth_root, tmp_path, monkeypatch, capsys):
    """Ctrl-C in the first step (a real SIGINT at other moments: tests/training/test_cv_faults.py)."""
    import cityseg.training.model

    real_build = cityseg.training.model.build_model

    def interrupted_in_the_first_step(*args, **kwargs):
        model = real_build(*args, **kwargs)

        def forward(image):
            raise KeyboardInterrupt  # what Python raises for SIGINT

        model.forward = forward
        return model

    monkeypatch.setattr(cityseg.training.model, "build_model", interrupted_in_the_first_step)
    runs = tmp_path / "runs"
    assert main(["cv", str(synth_root), "--out", str(runs), "--folds", "2", *TRAIN_OPTIONS]) == 130
    said = " ".join(capsys.readouterr().err.split())
    assert not (runs / "fold_0" / "last.pt").exists()
    assert "holds epoch 0" not in said and "no checkpoint was saved" in said and "--resume" in said
    assert json.loads((runs / "fold_0" / "config.json").read_text())["run_name"] == "fold_0"


# ---------------------------------------------------------------------------------------------- outputs below a file

BELOW_A_FILE = {  # the cheapest valid invocation of each command that writes, its output below the file TAKEN
    "predict photos": "predict {ckpt} --images {root}/leftImg8bit/val --out {taken}/out --device cpu --workers 0",
    "predict split": "predict {ckpt} {root} --out {taken}/out --device cpu --workers 0",
    "export": "export {ckpt} --out {taken}/model",
    "evaluate --json": "evaluate {pred} {root} --json {taken}/eval.json --workers 1",
    "compare": "compare {runs} {runs} --labels a,b --out {taken}/compare.pdf",
    "cache": "cache {root} --out {taken}/cache --size 64x32 --workers 1",
    "cv": "cv {root} --out {taken}/runs --folds 2 " + " ".join(TRAIN_OPTIONS),
    "synth": "synth {taken}/data --size 128x64 --workers 1",
}


@pytest.mark.parametrize("command", BELOW_A_FILE)
def test_an_output_path_below_a_regular_file_exits_2_naming_the_file(one_epoch_cv, tmp_path, command, capsys):
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    paths = {"ckpt": one_epoch_cv.runs / "full" / "best.pt", "root": one_epoch_cv.root, "pred": one_epoch_cv.pred}
    argv = BELOW_A_FILE[command].format(taken=taken, runs=one_epoch_cv.runs, **paths).split()
    assert main(argv) == 2
    message = error_of(capsys)
    assert str(taken) in message and "a file, not a folder" in message, message
    assert taken.read_text() == "mine" and [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
