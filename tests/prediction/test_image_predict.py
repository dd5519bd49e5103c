"""`cityseg predict --images`: any photos -> labelIds, colour and overlay PNGs, with the split writer's guarantees.

Photos are cut from the synthetic street scenes and saved as JPEG, PNG and WebP, one of them
stored sideways with an EXIF orientation tag, one truncated; the model is a real (untrained) U-Net.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_training import CLI_ENV, cityseg_command, cli_in_process, running, signal_when
from PIL import Image

from cityseg.cli import main
from cityseg.data.frames import read_image
from cityseg.data.transforms import normalize
from cityseg.errors import UserError
from cityseg.labels import EVAL_LABEL_IDS, ID_COLORS, ID_TO_TRAIN_ID, TRAIN_ID_COLORS, train_ids_to_ids
from cityseg.prediction.image_files import find_images, read_user_image
from cityseg.prediction.image_predict import output_names, predict_images
from cityseg.prediction.inference import predict_logits
from cityseg.prediction.ledger import MANIFEST_NAME
from cityseg.prediction.options import default_stride
from cityseg.prediction.overlay import classes_present, overlay_image
from cityseg.training.checkpoint import save_checkpoint
from cityseg.training.model import build_model, load_model

EXIF_ORIENTATION = 0x0112
ROTATED_90_CW = 6  # "the camera was turned: rotate 90 degrees clockwise to display"


def make_checkpoint(path: Path, size: tuple[int, int] | None = None) -> Path:
    """An untrained U-Net / resnet18 (the smallest of the default's family: prediction is the same code for any
    encoder) in the trainer's checkpoint format, trained (as far as its config says) at `size`."""
    torch.manual_seed(0)
    state = {
        "model": build_model(encoder_weights=None, encoder="resnet18").state_dict(),
        "epoch": 1,
        "config": {"size": list(size) if size else None, "arch": "Unet", "encoder": "resnet18"},
        "num_classes": 19,
    }
    save_checkpoint(path, state)
    return path


def street(synth_raw_root: Path, index: int = 0) -> np.ndarray:
    """A synthetic street scene (64, 128, 3) uint8."""
    return read_image(sorted((synth_raw_root / "leftImg8bit" / "val").rglob("*.png"))[index])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt")


@pytest.fixture(scope="module")
def photos(synth_raw_root, tmp_path_factory) -> Path:
    """day1/{a.jpg, b.png}, day2/{a.jpg, c.webp}, rot.jpg (stored sideways + EXIF), damaged.jpg (truncated)."""
    folder = tmp_path_factory.mktemp("photos") / "photos"
    (folder / "day1").mkdir(parents=True)
    (folder / "day2" / "deeper").mkdir(parents=True)
    scene, other = street(synth_raw_root, 0), street(synth_raw_root, 1)
    Image.fromarray(scene[:, :96]).save(folder / "day1" / "a.jpg", quality=92)
    Image.fromarray(scene[8:, 20:]).save(folder / "day1" / "b.png")
    Image.fromarray(other[:50, :80]).save(folder / "day2" / "a.jpg", quality=92)
    Image.fromarray(other).convert("RGBA").save(folder / "day2" / "deeper" / "c.webp", lossless=True)
    sideways = Image.fromarray(np.ascontiguousarray(np.rot90(scene[:, 16:112], k=1)))  # stored 64 wide, 96 high
    exif = sideways.getexif()
    exif[EXIF_ORIENTATION] = ROTATED_90_CW
    sideways.save(folder / "rot.jpg", exif=exif, quality=92)
    whole = (folder / "day1" / "a.jpg").read_bytes()
    (folder / "damaged.jpg").write_bytes(whole[: len(whole) // 3])
    return folder


GOOD = {
    "day1/a": "day1/a.jpg",
    "day1/b": "day1/b.png",
    "day2/a": "day2/a.jpg",
    "day2/deeper/c": "day2/deeper/c.webp",
    "rot": "rot.jpg",
}


def expected_label_ids(checkpoint: Path, image: np.ndarray, **options) -> np.ndarray:
    """The model's argmax as labelIds, computed here the way the split writer's test computes it."""
    model, _ = load_model(checkpoint)
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None]  # (1, 3, H, W) uint8
    probs = predict_logits(model, normalize(pixels, memory_format=torch.channels_last), **options)
    return train_ids_to_ids(probs.argmax(1)[0].to(torch.uint8).numpy())


def outputs_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


@pytest.fixture(scope="module")
def cli_run(checkpoint, photos, tmp_path_factory):
    """`cityseg predict CKPT --images photos --out OUT`, loader workers on (the default)."""
    out = tmp_path_factory.mktemp("cli") / "out"
    args = [
        "predict",
        checkpoint,
        "--images",
        photos,
        "--out",
        out,
        "--device",
        "cpu",
        "--workers",
        "2",
        "--no-progress",
    ]
    return cli_in_process(*args), out


def test_folder_of_mixed_photos_gets_three_outputs_each_and_the_damaged_one_is_named(cli_run, photos):
    result, out = cli_run
    assert result.returncode == 2, result.stderr
    assert "damaged.jpg" in result.stdout and "cannot be decoded" in result.stdout and "Traceback" not in result.stderr
    assert "wrote 5" in result.stdout and "1 failed" in result.stdout
    expected = sorted(name for key in GOOD for name in output_names(key).values())
    assert sorted(outputs_of(out)) == expected  # two a.jpg in two folders: two sets of outputs
    for key, source in GOOD.items():
        upright = read_user_image(photos / source)
        names = output_names(key)
        with Image.open(out / names["labelIds"]) as label_image:
            assert label_image.mode == "L" and label_image.size == (upright.shape[1], upright.shape[0])
            label_ids = np.asarray(label_image)
        assert set(np.unique(label_ids).tolist()) <= EVAL_LABEL_IDS
        np.testing.assert_array_equal(np.asarray(Image.open(out / names["color"])), ID_COLORS[label_ids])
        with Image.open(out / names["overlay"]) as overlay:
            assert overlay.mode == "RGB" and overlay.size == label_image.size


def test_exif_rotated_photo_is_predicted_upright(cli_run, photos, checkpoint):
    _, out = cli_run
    with Image.open(photos / "rot.jpg") as stored:
        assert stored.size == (64, 96)
        upright = np.ascontiguousarray(np.rot90(np.asarray(stored), k=-1))  # what orientation 6 asks for
    assert upright.shape[:2] == (64, 96)
    written = np.asarray(Image.open(out / output_names("rot")["labelIds"]))
    np.testing.assert_array_equal(written, expected_label_ids(checkpoint, upright))


def test_overlay_is_the_photo_blended_with_the_colours_plus_a_legend_of_the_classes_present(synth_raw_root):
    photo = street(synth_raw_root, 0).repeat(2, axis=0).repeat(2, axis=1)  # (128, 256, 3)
    label_path = sorted((synth_raw_root / "gtFine" / "val").rglob("*_gtFine_labelIds.png"))[0]
    label_ids = np.asarray(Image.open(label_path)).repeat(2, axis=0).repeat(2, axis=1)
    label_ids = np.where(np.isin(label_ids, list(EVAL_LABEL_IDS)), label_ids, 7).astype(np.uint8)  # road elsewhere
    overlay = overlay_image(photo, label_ids)
    blended = ((photo.astype(np.uint16) + ID_COLORS[label_ids]) // 2).astype(np.uint8)
    legend = np.any(overlay != blended, axis=2)
    assert overlay.shape == photo.shape and legend.any()
    assert not legend[:, photo.shape[1] // 2 :].any()  # the legend stays in the left half
    ids, counts = np.unique(label_ids, return_counts=True)
    by_size = [int(ID_TO_TRAIN_ID[i]) for i in ids[np.argsort(-counts, kind="stable")]]
    present = classes_present(label_ids)
    assert [train_id for train_id, _ in present] == by_size
    assert [share for _, share in present] == pytest.approx(sorted(counts / label_ids.size, reverse=True))
    swatch = TRAIN_ID_COLORS[by_size[0]]  # the largest class is listed first, its colour drawn unblended
    assert np.all(overlay[:20, :20] == swatch, axis=2).any()


def test_rerun_skips_finished_photos_and_an_edited_output_is_refused(checkpoint, photos, tmp_path):
    out = tmp_path / "out"
    first = predict_images(checkpoint, [photos], out, device="cpu", progress=False)
    assert (first.written, first.skipped, list(first.failed)) == (5, 0, [str(photos / "damaged.jpg")])
    before = outputs_of(out)
    second = predict_images(checkpoint, [photos], out, device="cpu", progress=False)
    assert (second.written, second.skipped) == (0, 5) and outputs_of(out) == before

    edited = out / output_names("day2/a")["overlay"]
    Image.fromarray(np.zeros((50, 80, 3), np.uint8)).save(edited)
    mine = edited.read_bytes()
    with pytest.raises(UserError, match=r"changed after .*day2/a_overlay\.png.*--overwrite"):
        predict_images(checkpoint, [photos], out, device="cpu", progress=False)
    assert edited.read_bytes() == mine  # not replaced

    edited.rename(tmp_path / "kept.png")  # moved away: only that photo is predicted again
    third = predict_images(checkpoint, [photos], out, device="cpu", progress=False)
    assert (third.written, third.skipped) == (1, 4) and outputs_of(out) == before

    Image.fromarray(np.zeros((50, 80, 3), np.uint8)).save(edited)
    forced = predict_images(checkpoint, [photos], out, device="cpu", progress=False, overwrite=True)
    assert forced.written == 5 and outputs_of(out) == before


def test_fixed_damaged_photo_and_a_new_photo_are_predicted_on_rerun(checkpoint, photos, synth_raw_root, tmp_path):
    inputs = tmp_path / "photos"
    shutil.copytree(photos, inputs)
    out = tmp_path / "out"
    assert predict_images(checkpoint, [inputs], out, device="cpu", progress=False).failed
    shutil.copy(inputs / "day1" / "a.jpg", inputs / "damaged.jpg")
    Image.fromarray(street(synth_raw_root, 0)).save(inputs / "new.png")
    again = predict_images(checkpoint, [inputs], out, device="cpu", progress=False)
    assert (again.written, again.skipped, again.failed) == (2, 5, {})
    (inputs / "new.png").unlink()  # outputs of photos no longer given are kept, not a reason to refuse
    last = predict_images(checkpoint, [inputs], out, device="cpu", progress=False)
    assert (last.written, last.skipped) == (0, 6) and (out / "new_overlay.png").is_file()


def test_foreign_png_or_other_settings_are_refused(checkpoint, photos, tmp_path):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "mine.png").write_bytes(b"png of the user")
    with pytest.raises(UserError, match="did not write"):
        predict_images(checkpoint, [photos / "day1"], out, device="cpu", progress=False)
    assert (out / "sub" / "mine.png").read_bytes() == b"png of the user"
    other = tmp_path / "other"
    predict_images(checkpoint, [photos / "day1"], other, device="cpu", progress=False)
    with pytest.raises(UserError, match="tta was 'none', now 'flip'"):
        predict_images(checkpoint, [photos / "day1"], other, device="cpu", progress=False, tta="flip")


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_gives_the_outputs_of_an_uninterrupted_run(checkpoint, photos, cli_run, tmp_path):
    _, reference = cli_run
    out = tmp_path / "out"
    command = cityseg_command(
        "predict", checkpoint, "--images", photos, "--out", out, "--device", "cpu", "--workers", "0", "--no-progress"
    )
    with running(command) as process:
        signal_when(process, lambda: len(list(out.rglob("*_overlay.png"))) >= 2)
    rerun = predict_images(checkpoint, [photos], out, device="cpu", progress=False)  # in-process: same code
    assert rerun.written + rerun.skipped == len(GOOD)
    assert outputs_of(out) == outputs_of(reference)
    assert not list(out.rglob("*.tmp"))
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert sorted(k for k, entry in manifest["frames"].items() if entry["state"] == "done") == sorted(GOOD)


def test_photo_larger_than_the_limit_goes_through_the_sliding_window(checkpoint, synth_raw_root, tmp_path):
    folder = tmp_path / "big"
    folder.mkdir()
    photo = np.concatenate([street(synth_raw_root, 0), street(synth_raw_root, 1)], axis=0)  # (128, 128, 3)
    Image.fromarray(photo).save(folder / "big.png")
    result = predict_images(checkpoint, [folder], tmp_path / "out", device="cpu", progress=False, whole_limit=(64, 64))
    written = np.asarray(Image.open(result.outputs[0]["labelIds"]))
    window = (64, 64)
    slide = expected_label_ids(checkpoint, photo, mode="slide", crop=window, stride=default_stride(window))
    whole = expected_label_ids(checkpoint, photo)
    assert not np.array_equal(slide, whole)  # so the comparison below tells the two paths apart
    np.testing.assert_array_equal(written, slide)


def test_model_trained_on_resized_frames_sees_photos_at_the_training_width(synth_raw_root, tmp_path):
    small = make_checkpoint(tmp_path / "small.pt", size=(64, 32))
    folder = tmp_path / "photos"
    folder.mkdir()
    photo = street(synth_raw_root, 0)[:80]  # (64, 128, 3): network input 64x32, as a 128x64 frame resized
    Image.fromarray(photo).save(folder / "p.png")
    result = predict_images(small, [folder], tmp_path / "out", device="cpu", progress=False)
    written = np.asarray(Image.open(result.outputs[0]["labelIds"]))
    assert written.shape == (64, 128)
    np.testing.assert_array_equal(written, expected_label_ids(small, photo, scale_size=(64, 32)))


def test_find_images_mirrors_folders_and_expands_globs(photos, tmp_path):
    (photos / ".hidden").mkdir(exist_ok=True)
    (photos / ".hidden" / "x.jpg").write_bytes(b"")
    assert {i.key for i in find_images([photos])} == set(GOOD) | {"damaged"}
    assert {i.key for i in find_images([photos / "day1", photos / "day2"])} == {
        "day1/a",
        "day1/b",
        "day2/a",
        "day2/deeper/c",
    }
    assert {i.key for i in find_images([photos / "day1" / "a.jpg", photos / "day2" / "a.jpg"])} == {"day1/a", "day2/a"}
    assert {i.key for i in find_images([str(photos / "**" / "a.jpg")])} == {"day1/a", "day2/a"}
    assert [i.key for i in find_images([photos / "day1", photos / "day1" / "b.png"])] == ["a", "b"]  # once each
    assert len(find_images([photos], limit=2)) == 2


def test_inputs_that_would_share_outputs_or_hold_them_are_refused(photos, tmp_path):
    clash = tmp_path / "clash"
    clash.mkdir()
    shutil.copy(photos / "day1" / "a.jpg", clash / "x.jpg")
    shutil.copy(photos / "day1" / "b.png", clash / "x.png")
    with pytest.raises(UserError, match=r"x\.jpg.*x\.png"):
        find_images([clash])
    with pytest.raises(UserError, match="inside one another"):
        find_images([photos], out_dir=photos / "predictions")
    with pytest.raises(UserError, match="does not exist"):
        find_images([tmp_path / "nowhere"])
    with pytest.raises(UserError, match="no PNG, JPEG or WebP image matches"):
        find_images([str(tmp_path / "*.tif")])


def test_sixteen_bit_photo_is_refused_by_name(tmp_path):
    path = tmp_path / "depth.png"
    Image.fromarray(np.full((40, 40), 40000, dtype=np.uint16)).save(path)
    with pytest.raises(UserError, match=r"depth\.png is a I;16 image"):
        read_user_image(path)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "--images needs --out"),
        (["--out", "o", "ROOT"], "ROOT cannot be combined"),
        (["--out", "o", "--split", "val"], "--split cannot be combined"),
    ],
)
def test_cli_refuses_options_that_do_not_go_with_images(checkpoint, photos, capsys, extra, message):
    root = [str(photos)] if "ROOT" in extra else []
    args = [a for a in extra if a != "ROOT"]
    assert main(["predict", str(checkpoint), *root, "--images", str(photos), *args]) == 2
    assert message in " ".join(capsys.readouterr().err.split())


def test_cli_without_root_or_images_explains_both(checkpoint, capsys):
    assert main(["predict", str(checkpoint)]) == 2
    assert "--images" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["../outside.png", "/tmp/outside.png", "a/../../outside.png"])
def test_manifest_naming_a_file_outside_the_folder_is_refused(checkpoint, photos, tmp_path, name):
    out = tmp_path / "out"
    predict_images(checkpoint, [photos / "day1"], out, device="cpu", progress=False)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    manifest["frames"]["a"]["files"] = {name: "0" * 64}  # subfolders are allowed; a way out is not
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="not a readable cityseg predict manifest"):
        predict_images(checkpoint, [photos / "day1"], out, device="cpu", progress=False, overwrite=True)


def test_a_second_predict_into_a_held_output_folder_is_refused_before_writing(checkpoint, photos, tmp_path, capsys):
    """Another predict holds OUT (its lock file is taken here): refused at once, naming it."""
    import os

    from cityseg.locks import hold_lock
    from cityseg.prediction.ledger import LOCK_NAME

    out = tmp_path / "out"
    with hold_lock(out / LOCK_NAME, "another predict", "wait for it"):
        before = sorted(p.name for p in out.iterdir())
        command = ["predict", str(checkpoint), "--images", str(photos), "--out", str(out), "--device", "cpu"]
        assert main(command) == 2
        message = "".join(capsys.readouterr().err.split())
        assert f"pid{os.getpid()}" in message and str(out).replace(" ", "") in message
        assert sorted(p.name for p in out.iterdir()) == before
    assert main(command) == 2  # free again: it runs (exit 2 for the one damaged photo)
    assert "wrote 5 and kept 0" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- hostile inputs


def blank_png(path: Path, width: int, height: int) -> Path:
    """A black RGB PNG of any size, written row by row: a few MB on disk and little memory to make."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(1)
    row = bytes(1 + 3 * width)  # filter byte 0, then black pixels
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def test_a_photo_over_the_pixel_limit_is_refused_from_its_header_and_the_others_go_on(checkpoint, photos, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(photos / "day1" / "a.jpg", folder / "small.jpg")
    huge = blank_png(folder / "huge.png", 12000, 12000)  # 144 Mpx (2 MB): between PIL's warning and error limits
    result = predict_images(checkpoint, [folder], tmp_path / "out", device="cpu", progress=False)
    assert result.written == 1 and list(result.failed) == [str(huge)]
    assert re.search(
        r"12000x12000, 144,000,000 pixels: more than --max-pixels .*--max-pixels 144000000", result.failed[str(huge)]
    )
    # The network input is bounded too: a photo upscaled past the limit is refused, not predicted.
    scaled = predict_images(
        checkpoint, [folder / "small.jpg"], tmp_path / "o2", device="cpu", progress=False, scale=100.0
    )
    assert "network input would be 9600x6400" in scaled.failed[str(folder / "small.jpg")]
    ms_flip = predict_images(
        checkpoint, [folder / "small.jpg"], tmp_path / "o3", device="cpu", progress=False, scale=60.0, tta="ms-flip"
    )  # 5760x3840 fits the limit, but not at ms-flip's largest scale
    assert "1.75x that per side for --tta ms-flip" in ms_flip.failed[str(folder / "small.jpg")]


def test_symlink_loops_give_each_photo_once(photos, tmp_path):
    folder = tmp_path / "loops"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(photos / "day1" / "a.jpg", folder / "a.jpg")
    shutil.copy(photos / "day1" / "b.png", folder / "sub" / "b.png")
    (folder / "sub" / "up").symlink_to("..")  # one loop
    pattern = str(folder / "**" / "*.jpg")
    assert [i.key for i in find_images([pattern])] == ["a"]
    assert [i.key for i in find_images([folder])] == ["a", "sub/b"]
    (folder / "sub" / "again").symlink_to("../sub")  # a second loop: the glob used to branch without end
    code = "from cityseg.prediction.image_files import find_images; print(sorted(i.key for i in find_images([{!r}])))"
    for argument in (pattern, str(folder / "**"), str(folder)):
        done = subprocess.run(
            [sys.executable, "-c", code.format(argument)], env=CLI_ENV, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == ("['a']" if argument == pattern else "['a', 'sub/b']")


def test_an_out_folder_linked_into_the_inputs_is_refused(photos, tmp_path):
    link = tmp_path / "out"
    link.symlink_to(photos / "day2", target_is_directory=True)
    with pytest.raises(UserError, match="inside one another"):
        find_images([photos], out_dir=link)
    with pytest.raises(UserError, match="inside one another"):
        find_images([photos / "day2"], out_dir=link / "preds")
    assert not (photos / "day2" / "preds").exists()


def test_fifos_devices_and_dangling_links_are_named_for_what_they_are(photos, tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    dangling = tmp_path / "gone.jpg"
    dangling.symlink_to(tmp_path / "nowhere.jpg")
    for path, kind in ((fifo, "a FIFO"), (Path("/dev/zero"), "a character device"), (dangling, "a symbolic link")):
        with pytest.raises(UserError, match=f"{re.escape(str(path))} is {kind}.*only regular image files"):
            find_images([path])
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(photos / "day1" / "b.png", folder / "b.png")
    os.mkfifo(folder / "c.png")  # inside a folder: skipped, never opened (opening a FIFO would block)
    assert [i.key for i in find_images([folder])] == ["b"]


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--scale", "inf", "positive finite factor"),
        ("--scale", "nan", "positive finite factor"),
        ("--scale", "0", "positive finite factor"),
        ("--scale", "-2", "positive finite factor"),
        ("--whole-limit", "4x4", "smaller than the smallest window"),
        ("--whole-limit", "32", "smaller than the smallest window"),
    ],
)
def test_bad_scales_and_tiny_windows_exit_2_naming_the_flag(checkpoint, photos, tmp_path, capsys, flag, value, message):
    out = tmp_path / "out"
    command = ["predict", str(checkpoint), "--images", str(photos / "day1"), "--out", str(out), "--device", "cpu"]
    try:
        code = main([*command, flag, value])
    except SystemExit as exit_:  # argparse refuses it
        code = exit_.code
    assert code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert flag in err and message in err and "Traceback" not in err
    assert not out.exists()  # refused before anything was written
    if flag == "--scale":
        with pytest.raises(UserError, match="--scale must be a positive finite factor"):
            predict_images(checkpoint, [photos / "day1"], out, device="cpu", scale=float(value))
    else:
        with pytest.raises(UserError, match="--whole-limit 4x4 is smaller .* 64x64"):
            predict_images(checkpoint, [photos / "day1"], out, device="cpu", whole_limit=(4, 4))


def test_an_out_folder_that_is_a_dangling_link_or_below_a_file_exits_2(checkpoint, photos, tmp_path, capsys):
    link = tmp_path / "out"
    link.symlink_to(tmp_path / "missing" / "deeper")
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    for out, named in ((link, "symbolic link"), (taken / "sub", "is a file")):
        command = ["predict", str(checkpoint), "--images", str(photos / "day1"), "--out", str(out), "--device", "cpu"]
        assert main(command) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert named in err and str(out) in err and "Traceback" not in err
    assert not (tmp_path / "missing").exists() and taken.read_text() == "mine"


def test_a_users_file_named_like_a_temp_file_survives_a_rerun_and_ours_do_not(checkpoint, photos, tmp_path):
    out = tmp_path / "out"
    predict_images(checkpoint, [photos / "day1"], out, device="cpu", progress=False)
    users = out / ".a_labelIds.png.draft.tmp"  # the pattern of our temp files, but not written by us
    users.write_text("my draft")
    again = predict_images(checkpoint, [photos / "day1"], out, device="cpu", progress=False, overwrite=True)
    assert again.written == 2 and users.read_text() == "my draft"
    token = json.loads((out / MANIFEST_NAME).read_text())["token"]
    ours = out / f".a_overlay.png.{token}x1y2z3w4.tmp"  # what a kill during the last run leaves
    ours.write_bytes(b"half a png")
    again = predict_images(checkpoint, [photos / "day1"], out, device="cpu", progress=False)
    assert again.skipped == 2 and users.read_text() == "my draft" and not ours.exists()


@pytest.mark.parametrize("settings", ["[1, 2]", "[" * 100_000 + "]" * 100_000])
def test_a_manifest_with_settings_of_the_wrong_shape_is_refused_by_name(checkpoint, photos, tmp_path, settings):
    out = tmp_path / "out"
    predict_images(checkpoint, [photos / "day1"], out, device="cpu", progress=False)
    text = (out / MANIFEST_NAME).read_text()
    start = text.index('"settings": ') + len('"settings": ')
    end = text.index("}", start) + 1
    (out / MANIFEST_NAME).write_text(text[:start] + settings + text[end:])
    with pytest.raises(UserError, match=f"{re.escape(str(out / MANIFEST_NAME))} .*not a readable"):
        predict_images(checkpoint, [photos / "day1"], out, device="cpu", progress=False, overwrite=True)
