"""predict_split and `cityseg predict`: PNG format, stale-file safety, resume after SIGKILL, disk errors."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cityseg.cli import main
from cityseg.data.frames import list_frames, read_image
from cityseg.data.transforms import normalize
from cityseg.errors import UserError
from cityseg.fileio import FSYNC_ENV
from cityseg.labels import EVAL_LABEL_IDS, ID_COLORS, NUM_CLASSES, train_ids_to_ids
from cityseg.prediction.inference import predict_logits
from cityseg.prediction.ledger import (
    JOURNAL_NAME,
    MANIFEST_NAME,
    OutputLedger,
    color_names,
    file_sha256,
    prediction_name,
)
from cityseg.prediction.predict import predict_split
from cityseg.training.checkpoint import save_checkpoint
from cityseg.training.model import build_model, load_model

WIDTH, HEIGHT = 128, 64


# ResNet-18, the smallest of the default's family: prediction is the same code for any encoder, at half the cost.
MODEL = {"arch": "Unet", "encoder": "resnet18"}


def _untrained_checkpoint(path: Path, seed: int, num_classes: int = NUM_CLASSES, model=None) -> Path:
    """A real (untrained) model in the checkpoint format the trainer writes; its config names MODEL."""
    torch.manual_seed(seed)
    model = model if model is not None else build_model(encoder_weights=None, num_classes=num_classes, **MODEL)
    state = {"model": model.state_dict(), "epoch": 1, "config": {"size": None, **MODEL}, "num_classes": num_classes}
    save_checkpoint(path, state)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("checkpoints")
    return {name: _untrained_checkpoint(folder / f"{name}.pt", seed) for name, seed in (("a", 0), ("b", 1))}


@pytest.fixture(scope="module")
def reference(checkpoints, synth_raw_root, tmp_path_factory) -> Path:
    """Val predictions of checkpoint a from one uninterrupted run, to compare other runs with byte by byte."""
    out = tmp_path_factory.mktemp("reference") / "predictions"
    predict(checkpoints["a"], synth_raw_root, out)
    return out


def predict(checkpoint: Path, root: Path, out: Path, **options):
    return predict_split(checkpoint, root, out_dir=out, device="cpu", progress=False, **options)


def pngs(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*.png"))}


def temp_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp"))


def assert_manifest_complete(folder: Path, frame_ids: list[str]) -> None:
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    assert sorted(manifest["frames"]) == sorted(frame_ids)
    for frame_id, entry in manifest["frames"].items():
        assert entry["state"] == "done"
        assert entry["files"] == {prediction_name(frame_id): file_sha256(folder / prediction_name(frame_id))}


def test_pngs_are_full_size_label_ids_named_like_cityscapes(checkpoints, synth_raw_root, reference) -> None:
    frames = list_frames(synth_raw_root, "val", label_source=None)
    assert sorted(pngs(reference)) == sorted(prediction_name(f.id) for f in frames)
    for frame in frames:
        with Image.open(reference / prediction_name(frame.id)) as image:
            assert image.mode == "L" and image.size == (WIDTH, HEIGHT)
            values = set(np.unique(np.asarray(image)).tolist())
        assert values <= EVAL_LABEL_IDS
    manifest = json.loads((reference / MANIFEST_NAME).read_text())
    assert manifest["settings"]["checkpoint_sha256"] == file_sha256(checkpoints["a"])
    assert manifest["settings"]["split"] == "val" and manifest["settings"]["mode"] == "whole"
    assert_manifest_complete(reference, [f.id for f in frames])


def test_png_holds_the_argmax_of_the_model_as_label_ids(checkpoints, synth_raw_root, reference) -> None:
    frame = list_frames(synth_raw_root, "val", label_source=None)[0]
    model, _ = load_model(checkpoints["a"])
    pixels = torch.from_numpy(read_image(frame.image)).permute(2, 0, 1)[None]  # (1, 3, H, W) uint8
    image = normalize(pixels, memory_format=torch.channels_last)  # as predict feeds it: same kernels, same bits
    train_ids = predict_logits(model, image).argmax(1)[0].to(torch.uint8).numpy()
    written = np.asarray(Image.open(reference / prediction_name(frame.id)))
    np.testing.assert_array_equal(written, train_ids_to_ids(train_ids))


def test_rerun_skips_finished_frames(checkpoints, synth_raw_root, reference, tmp_path) -> None:
    out = tmp_path / "pred"
    first = predict(checkpoints["a"], synth_raw_root, out, batch_size=3)
    assert (first.written, first.skipped) == (4, 0)
    assert pngs(out) == pngs(reference)  # batching does not change the pixels
    again = predict(checkpoints["a"], synth_raw_root, out)
    assert (again.written, again.skipped) == (0, 4)
    # A finished PNG that no longer matches its recorded sha256 may be someone's edit: refused, kept.
    damaged = out / sorted(pngs(out))[0]
    damaged.write_bytes(b"not a png")
    with pytest.raises(UserError, match="changed after") as refused:
        predict(checkpoints["a"], synth_raw_root, out)
    assert str(damaged) in str(refused.value) and damaged.read_bytes() == b"not a png"
    damaged.unlink()  # once it is gone, only that frame is predicted again
    third = predict(checkpoints["a"], synth_raw_root, out)
    assert (third.written, third.skipped) == (1, 3)
    assert pngs(out) == pngs(reference)


@pytest.mark.parametrize("where", ["frankfurt_000000_000000_leftImg8bit.png", "sub/old.png"])
def test_foreign_png_is_refused_and_never_deleted(checkpoints, synth_raw_root, tmp_path, where) -> None:
    out = tmp_path / "pred"
    foreign = out / where
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"someone else's file")
    for overwrite in (False, True):
        with pytest.raises(UserError, match="did not write") as info:
            predict(checkpoints["a"], synth_raw_root, out, overwrite=overwrite)
        assert where in str(info.value)
    assert foreign.read_bytes() == b"someone else's file"
    assert sorted(pngs(out)) == [where] and not (out / MANIFEST_NAME).exists()


def test_outputs_of_another_checkpoint_are_refused_then_overwritten(
    checkpoints, synth_raw_root, reference, tmp_path
) -> None:
    out = tmp_path / "pred"
    shutil.copytree(reference, out)
    (out / "notes.txt").write_text("kept")
    with pytest.raises(UserError, match="checkpoint_sha256") as info:
        predict(checkpoints["b"], synth_raw_root, out)
    assert "--overwrite" in str(info.value)
    assert pngs(out) == pngs(reference)  # refused before touching anything

    result = predict(checkpoints["b"], synth_raw_root, out, overwrite=True)
    assert (result.written, result.skipped) == (4, 0)
    fresh_b = tmp_path / "fresh_b"
    predict(checkpoints["b"], synth_raw_root, fresh_b)
    assert pngs(out) == pngs(fresh_b) != pngs(reference)
    assert (out / "notes.txt").read_text() == "kept"


def test_other_split_or_settings_are_refused(checkpoints, synth_raw_root, reference, tmp_path) -> None:
    out = tmp_path / "pred"
    shutil.copytree(reference, out)
    with pytest.raises(UserError, match="split was 'val', now 'test'"):
        predict(checkpoints["a"], synth_raw_root, out, split="test")
    with pytest.raises(UserError, match="tta was 'none', now 'flip'"):
        predict(checkpoints["a"], synth_raw_root, out, tta="flip")
    # --overwrite removes exactly the val files it recorded and writes the test split.
    predict(checkpoints["a"], synth_raw_root, out, split="test", overwrite=True)
    test_ids = [f.id for f in list_frames(synth_raw_root, "test", label_source=None)]
    assert sorted(pngs(out)) == sorted(prediction_name(i) for i in test_ids)


def test_frames_no_longer_in_the_split_are_refused(checkpoints, synth_raw_root, reference, tmp_path) -> None:
    root = tmp_path / "cityscapes"
    shutil.copytree(synth_raw_root, root)
    out = tmp_path / "pred"
    shutil.copytree(reference, out)
    gone = list_frames(root, "val", label_source=None)[0]
    gone.image.unlink()
    with pytest.raises(UserError, match="not in this run"):
        predict(checkpoints["a"], root, out)
    predict(checkpoints["a"], root, out, overwrite=True)
    assert prediction_name(gone.id) not in pngs(out)
    assert len(pngs(out)) == 3


def test_corrupt_manifest_is_a_user_error(checkpoints, synth_raw_root, reference, tmp_path) -> None:
    out = tmp_path / "pred"
    shutil.copytree(reference, out)
    (out / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(UserError, match="not a readable cityseg predict manifest"):
        predict(checkpoints["a"], synth_raw_root, out, overwrite=True)
    assert pngs(out) == pngs(reference)


def test_default_output_folder_depends_on_split(checkpoints, synth_raw_root, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = predict_split(checkpoints["a"], synth_raw_root, split="test", device="cpu", progress=False)
    assert result.out_dir == Path("test_predictions")
    assert len(pngs(tmp_path / "test_predictions")) == 4


def test_color_images_and_overlays(checkpoints, synth_raw_root, reference, tmp_path) -> None:
    out, colors = tmp_path / "pred", tmp_path / "colors"
    shutil.copytree(reference, out)
    # Predictions are done, so colours come from the saved PNGs without a forward pass.
    result = predict(checkpoints["a"], synth_raw_root, out, color_out=colors)
    assert (result.written, result.skipped) == (0, 4)
    frames = list_frames(synth_raw_root, "val", label_source=None)
    for frame in frames:
        label_ids = np.asarray(Image.open(out / prediction_name(frame.id)))
        color_name, overlay_name = color_names(frame.id)
        color = np.asarray(Image.open(colors / color_name))
        np.testing.assert_array_equal(color, ID_COLORS[label_ids])
        overlay = np.asarray(Image.open(colors / overlay_name)).astype(int)
        np.testing.assert_array_equal(overlay, (read_image(frame.image).astype(int) + color) // 2)
    assert len(pngs(colors)) == 2 * len(frames)
    # Written alongside predictions, the colours are identical.
    both, both_colors = tmp_path / "both", tmp_path / "both_colors"
    predict(checkpoints["a"], synth_raw_root, both, color_out=both_colors)
    assert pngs(both_colors) == pngs(colors)


@pytest.mark.parametrize("color_rel", ["pred/color", "pred", "."])
def test_color_folder_nested_with_predictions_is_refused(checkpoints, synth_raw_root, tmp_path, color_rel) -> None:
    out = tmp_path / "pred"
    with pytest.raises(UserError, match="inside one another"):
        predict(checkpoints["a"], synth_raw_root, out, color_out=tmp_path / color_rel)
    assert not out.exists()
    code = main(
        [
            "predict",
            str(checkpoints["a"]),
            str(synth_raw_root),
            "--out",
            str(out),
            "--color-out",
            str(tmp_path / color_rel),
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    assert code == 2


def _fail_fsync_of_png_temp_files_after(monkeypatch, successes: int) -> None:
    """Simulate a disk that fills up while PNGs are written: fsync of the (successes+1)-th PNG fails."""
    monkeypatch.setenv(FSYNC_ENV, "1")  # the suite skips fsync (conftest); this disk fails inside it
    real_fsync = os.fsync
    calls = {"png": 0}

    def fsync(fd: int) -> None:
        if "_leftImg8bit.png." in os.readlink(f"/proc/self/fd/{fd}"):
            calls["png"] += 1
            if calls["png"] > successes:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_disk_full_is_a_user_error_and_leaves_nothing_half_written(
    checkpoints, synth_raw_root, reference, tmp_path, monkeypatch
) -> None:
    out = tmp_path / "pred"
    _fail_fsync_of_png_temp_files_after(monkeypatch, successes=2)
    with pytest.raises(UserError, match="No space left on device") as info:
        predict(checkpoints["a"], synth_raw_root, out)
    assert str(out) in str(info.value)
    assert temp_files(out) == []
    written = pngs(out)
    assert len(written) == 2 and all(written[name] == pngs(reference)[name] for name in written)
    monkeypatch.undo()
    result = predict(checkpoints["a"], synth_raw_root, out)
    assert result.written + result.skipped == 4 and result.skipped == 2
    assert pngs(out) == pngs(reference)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_folder_is_a_user_error(checkpoints, synth_raw_root, tmp_path) -> None:
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        with pytest.raises(UserError, match="could not write predictions"):
            predict(checkpoints["a"], synth_raw_root, parent / "pred")
    finally:
        parent.chmod(0o755)


def test_cli_writes_predictions(checkpoints, synth_raw_root, reference, tmp_path, capsys) -> None:
    out = tmp_path / "pred"
    code = main(
        [
            "predict",
            str(checkpoints["a"]),
            str(synth_raw_root),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--workers",
            "0",
            "--no-progress",
        ]
    )
    assert code == 0
    assert pngs(out) == pngs(reference)
    printed = capsys.readouterr().out
    assert "wrote 4" in printed and "PredictResult(" not in printed
    assert printed.splitlines()[-1] == f"next: cityseg evaluate {out} {synth_raw_root} --split val"


def test_the_manifest_records_the_precision_and_follows_the_checkpoints_amp(synth_raw_root, tmp_path) -> None:
    torch.manual_seed(0)
    state = {"model": build_model(encoder_weights=None).state_dict(), "epoch": 1, "num_classes": NUM_CLASSES}
    save_checkpoint(tmp_path / "amp.pt", {**state, "config": {"size": None, "amp": True}})
    for amp, expected in ((None, True), (False, False)):
        out = tmp_path / f"pred_{amp}"
        result = predict(tmp_path / "amp.pt", synth_raw_root, out, amp=amp)
        settings = json.loads((out / MANIFEST_NAME).read_text())["settings"]
        assert (settings["amp"], settings["precision"]) == (expected, "float32")  # a CPU has no autocast
        assert str(result).startswith("U-Net / resnet34: wrote 4 and kept 0 finished prediction(s)")


def test_the_ledger_costs_the_same_bytes_per_photo_however_many_photos(checkpoints, synth_raw_root, tmp_path) -> None:
    """Each finished file is one journal line; the manifest is written at the start and the end only."""
    from cityseg.prediction.image_predict import predict_images

    io_stats = Path("/proc/self/io")
    if not io_stats.exists():
        pytest.skip("counts bytes written through /proc/self/io (Linux)")
    scene = read_image(list_frames(synth_raw_root, "val", label_source=None)[0].image)
    per_photo = {}
    for count in (8, 64):
        folder = tmp_path / f"photos{count}"
        folder.mkdir()
        for index in range(count):
            Image.fromarray(np.roll(scene, index, axis=1)[:32, :32]).save(folder / f"{index:03d}.png")
        out = tmp_path / f"out{count}"
        before = int(io_stats.read_text().split("wchar:")[1].split()[0])
        predict_images(checkpoints["a"], [folder], out, device="cpu", progress=False)
        written = int(io_stats.read_text().split("wchar:")[1].split()[0]) - before
        outputs = sum(path.stat().st_size for path in out.rglob("*.png"))
        per_photo[count] = (written - outputs) / count  # the ledger's bytes (and the lock file's few)
    assert per_photo[64] <= 1.25 * per_photo[8], per_photo


def test_a_journal_cut_mid_line_by_a_kill_resumes_from_its_complete_lines(tmp_path) -> None:
    names = {"a": ["a.png"], "b": ["b.png"]}
    ledger = OutputLedger(tmp_path, {"kind": "labelIds"}, names, "predictions")
    ledger.check(overwrite=False)
    assert ledger.commit() == set()
    ledger.mark_pending(["a", "b"])
    ledger.mark_done("a", {"a.png": ledger.write_png("a.png", np.zeros((4, 4), np.uint8))})
    ledger.write_png("b.png", np.ones((4, 4), np.uint8))  # written, not yet recorded: the kill lands here
    with open(tmp_path / JOURNAL_NAME, "ab") as journal:
        journal.write(b'{"done":"b","fil')
    rerun = OutputLedger(tmp_path, {"kind": "labelIds"}, names, "predictions")
    rerun.check(overwrite=False)  # b.png is known as claimed (pending), not foreign
    assert rerun.commit() == {"a"}
    assert rerun.entries["b"]["state"] == "pending"


def test_cli_rejects_checkpoints_that_do_not_fit(tmp_path, synth_raw_root, capsys) -> None:
    import segmentation_models_pytorch as smp

    not_a_checkpoint = tmp_path / "notes.pt"
    not_a_checkpoint.write_text("these are my notes")
    five_classes = _untrained_checkpoint(tmp_path / "five.pt", seed=0, num_classes=5)
    other_arch = _untrained_checkpoint(  # weights of another encoder than its config names
        tmp_path / "r34.pt", seed=0, model=smp.Unet("resnet34", encoder_weights=None, classes=NUM_CLASSES)
    )
    for checkpoint in (not_a_checkpoint, five_classes, other_arch):
        out = tmp_path / f"pred_{checkpoint.stem}"
        code = main(["predict", str(checkpoint), str(synth_raw_root), "--out", str(out), "--device", "cpu"])
        assert code == 2, checkpoint
        assert "".join(str(checkpoint).split()) in "".join(capsys.readouterr().err.split())
        assert not out.exists() or pngs(out) == {}


def test_cli_rejects_bad_window_options(checkpoints, synth_raw_root, tmp_path) -> None:
    args = [
        "predict",
        str(checkpoints["a"]),
        str(synth_raw_root),
        "--out",
        str(tmp_path / "p"),
        "--device",
        "cpu",
    ]
    assert main([*args, "--crop", "64x64"]) == 2  # crop without --mode slide
    assert main([*args, "--mode", "slide", "--crop", "32", "--stride", "64"]) == 2
    with pytest.raises(SystemExit) as info:
        main([*args, "--stride", "0x5"])
    assert info.value.code == 2


@pytest.mark.slow
def test_sigkill_at_random_moments_resumes_to_identical_outputs(checkpoints, synth_raw_root, tmp_path) -> None:
    frame_ids = [f.id for f in list_frames(synth_raw_root, "train", label_source=None)]
    assert len(frame_ids) > 12  # the kills below land early and mid-run, well before the end
    expected = tmp_path / "uninterrupted"
    predict(checkpoints["a"], synth_raw_root, expected, split="train")
    command = [
        sys.executable,
        "-m",
        "cityseg",
        "predict",
        str(checkpoints["a"]),
        str(synth_raw_root),
        "--split",
        "train",
        "--device",
        "cpu",
        "--workers",
        "0",
        "--no-progress",
    ]
    for k in (2, 10):
        out = tmp_path / f"killed_after_{k}"
        process = subprocess.Popen([*command, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            if out.is_dir() and len(list(out.glob("*.png"))) >= k:
                break
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
        _, stderr = process.communicate()
        assert process.returncode == -signal.SIGKILL, f"finished before the kill: {stderr.decode()[-2000:]}"

        resumed = predict(checkpoints["a"], synth_raw_root, out, split="train")
        # Every frame recorded as done before the kill is skipped (the journal has a line per frame); at most the
        # one being recorded at the kill is recomputed.
        assert resumed.skipped >= k - 1
        assert resumed.written + resumed.skipped == len(frame_ids)
        assert pngs(out) == pngs(expected)
        assert temp_files(out) == []
        assert_manifest_complete(out, frame_ids)
