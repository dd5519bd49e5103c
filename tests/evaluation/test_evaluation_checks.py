"""Every way a prediction folder goes wrong is one UserError naming the files (never SystemExit), found
before the official script runs; predictions that look like trainIds only warn."""

from __future__ import annotations

import re
import shutil
import struct
import zlib

import numpy as np
import pytest
from helpers_noisy import PREDICTION_SUFFIX, write_noisy_predictions
from PIL import Image, PngImagePlugin

from cityseg.cli import main
from cityseg.data.frames import list_frames
from cityseg.errors import UserError
from cityseg.evaluation import TrainIdsWarning, evaluate
from cityseg.evaluation import runner as runner_module
from cityseg.labels import ids_to_train_ids


@pytest.fixture(scope="module")
def clean_predictions(synth_raw_root, tmp_path_factory):
    """Valid labelIds predictions for the val split, read-only; tests damage a copy."""
    out = tmp_path_factory.mktemp("clean") / "pred"
    write_noisy_predictions(list_frames(synth_raw_root, "val", label_source="ids"), out, seed=11)
    return out


@pytest.fixture
def pred(clean_predictions, tmp_path, monkeypatch):
    """A private copy of the clean predictions; the official script must never be reached with bad input."""
    copy = tmp_path / "pred"
    shutil.copytree(clean_predictions, copy)

    def must_not_run(*args, **kwargs):
        raise AssertionError("the official script ran on invalid input")

    monkeypatch.setattr(runner_module, "run_official", must_not_run)
    return copy


def _files(pred):
    return sorted(pred.rglob("*.png"))


def _rewrite(path, array):
    Image.fromarray(array).save(path)


ENGINES = ["both", "official"]


def _error(pred, root, engine) -> str:
    with pytest.raises(UserError) as info:
        evaluate(pred, root, engine=engine, workers=1)
    return str(info.value)


@pytest.mark.parametrize("engine", ENGINES)
def test_missing_prediction(pred, synth_raw_root, engine):
    gone = _files(pred)[1]
    gone.unlink()
    message = _error(pred, synth_raw_root, engine)
    assert "1 frame(s) without a prediction" in message
    assert gone.name.removesuffix(PREDICTION_SUFFIX) in message


@pytest.mark.parametrize("engine", ENGINES)
def test_extra_prediction_for_a_frame_outside_the_split(pred, synth_raw_root, engine):
    extra = pred / f"aachen_000000_000019{PREDICTION_SUFFIX}"  # a train frame
    shutil.copy(_files(pred)[0], extra)
    message = _error(pred, synth_raw_root, engine)
    assert "1 PNG(s) matching no frame of the split" in message and str(extra) in message


@pytest.mark.parametrize("engine", ENGINES)
def test_duplicate_prediction_in_a_subfolder(pred, synth_raw_root, engine):
    first = _files(pred)[0]
    (pred / "colour").mkdir()
    twin = pred / "colour" / first.name.replace(PREDICTION_SUFFIX, "_color.png")
    shutil.copy(first, twin)
    message = _error(pred, synth_raw_root, engine)
    assert "1 frame(s) with more than one prediction" in message
    assert str(first) in message and str(twin) in message


@pytest.mark.parametrize("engine", ENGINES)
def test_multi_channel_prediction(pred, synth_raw_root, engine):
    target = _files(pred)[2]
    gray = np.asarray(Image.open(target))
    _rewrite(target, np.stack([gray] * 3, axis=-1))  # (H, W, 3): a colour image
    message = _error(pred, synth_raw_root, engine)
    assert "not single-channel" in message and str(target) in message and "RGB" in message


@pytest.mark.parametrize("engine", ENGINES)
def test_wrong_size_prediction(pred, synth_raw_root, engine):
    target = _files(pred)[0]
    _rewrite(target, np.asarray(Image.open(target))[:32, :64])
    message = _error(pred, synth_raw_root, engine)
    assert "of the wrong size" in message and str(target) in message and "64x32, expected 128x64" in message


@pytest.mark.parametrize("engine", ENGINES)
def test_invalid_ids_are_listed_per_file(pred, synth_raw_root, engine):
    first, second = _files(pred)[:2]
    for path, value in ((first, 34), (second, 255)):
        array = np.array(Image.open(path))
        array[3, 5] = value
        _rewrite(path, array)
    message = _error(pred, synth_raw_root, engine)
    assert "2 PNG(s) holding values that are not Cityscapes labelIds" in message
    assert re.search(re.escape(str(first)) + r" \(values \[34\]\)", message)
    assert re.search(re.escape(str(second)) + r" \(values \[255\]\)", message)


def test_sixteen_bit_prediction_above_255_is_invalid_not_a_crash(pred, synth_raw_root):
    target = _files(pred)[0]
    array = np.asarray(Image.open(target)).astype(np.uint16)
    array[0, 0] = 7000
    _rewrite(target, array)
    message = _error(pred, synth_raw_root, "both")
    assert "7000" in message and str(target) in message


def test_several_problems_in_one_message_with_counts_and_examples(pred, synth_raw_root):
    files = _files(pred)
    files[0].unlink()
    _rewrite(files[1], np.zeros((10, 10), dtype=np.uint8))
    for k in range(7):
        shutil.copy(files[2], pred / f"nowhere_{k:06d}_000019.png")
    message = _error(pred, synth_raw_root, "both")
    assert "1 frame(s) without a prediction" in message
    assert "7 PNG(s) matching no frame" in message and "(and 2 more)" in message
    assert "1 PNG(s) of the wrong size" in message
    assert message.index("without a prediction") < message.index("matching no frame") < message.index("wrong size")


def test_not_a_folder(synth_raw_root, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        evaluate(tmp_path / "nope", synth_raw_root)


def test_unknown_engine(pred, synth_raw_root):
    with pytest.raises(UserError, match="unknown evaluation engine"):
        evaluate(pred, synth_raw_root, engine="quick")


def test_trainids_predictions_warn_but_evaluate(synth_raw_root, tmp_path):
    pred = tmp_path / "pred"
    pred.mkdir()
    for frame in list_frames(synth_raw_root, "val", label_source="ids"):
        train = ids_to_train_ids(np.asarray(Image.open(frame.label_ids)))
        _rewrite(pred / f"{frame.id}{PREDICTION_SUFFIX}", np.where(train == 255, 0, train).astype(np.uint8))
    with pytest.warns(TrainIdsWarning, match="look like trainIds"):
        result = evaluate(pred, synth_raw_root, engine="both", workers=1)
    assert result["cityseg"]["warnings"] and "train_ids_to_ids" in result["cityseg"]["warnings"][0]
    assert result["averageScoreClasses"] < 0.5  # read as labelIds they are mostly wrong
    with pytest.warns(TrainIdsWarning):
        evaluate(pred, synth_raw_root, engine="official", workers=1)  # its own check pass sees them too


def test_labelids_predictions_do_not_warn(clean_predictions, synth_raw_root, recwarn):
    result = evaluate(clean_predictions, synth_raw_root, engine="fast", workers=1)
    assert result["cityseg"]["n_frames"] == len(list_frames(synth_raw_root, "val", label_source="ids"))
    assert not [w for w in recwarn if issubclass(w.category, TrainIdsWarning)] and not result["cityseg"]["warnings"]


def test_the_official_engines_check_pass_catches_invalid_ids(pred, synth_raw_root):
    target = _files(pred)[0]
    array = np.array(Image.open(target))
    array[0, 0] = 200
    _rewrite(target, array)
    with pytest.raises(UserError, match=r"values \[200\]"):
        evaluate(pred, synth_raw_root, engine="official", workers=2)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _crafted(data: bytes, kind: str) -> bytes:
    """A valid prediction PNG with one chunk inserted right after its IHDR (ends at byte 33)."""
    width, height = struct.unpack(">II", data[16:24])
    text = b"Comment\0\0" + zlib.compress(b"a" * (PngImagePlugin.MAX_TEXT_CHUNK + 1))
    extra = {
        "second IHDR": _chunk(b"IHDR", data[16:29]),
        "second IHDR, 16-bit and narrower": _chunk(
            b"IHDR", struct.pack(">IIBBBBB", width // 2, height, 16, 0, 0, 0, 0)
        ),
        "short pHYs": _chunk(b"pHYs", b"\0\0\0\1"),
        "zTXt over PIL's limit": _chunk(b"zTXt", text),
    }[kind]
    return data[:33] + extra + data[33:]


@pytest.mark.parametrize(
    "kind, pil_reads, exit_code",
    [
        ("second IHDR", True, 0),  # PIL reads it (the second header agrees): scored, both engines equal
        ("second IHDR, 16-bit and narrower", True, 2),  # PIL reads other pixels, the wrong size: refused as such
        ("short pHYs", False, 2),
        ("zTXt over PIL's limit", False, 2),
    ],
)
def test_crafted_pngs_are_read_as_pil_reads_them_or_refused_as_pil_refuses(
    clean_predictions, synth_raw_root, tmp_path, capsys, kind, pil_reads, exit_code
):
    pred = tmp_path / "pred"
    shutil.copytree(clean_predictions, pred)
    victim = _files(pred)[0]
    victim.write_bytes(_crafted(victim.read_bytes(), kind))
    try:
        np.array(Image.open(victim))  # what the official script reads
        read = True
    except Exception:  # noqa: BLE001 - whatever PIL raises is a refusal
        read = False
    assert read == pil_reads
    args = ["evaluate", str(pred), str(synth_raw_root), "--engine", "both", "--json", str(tmp_path / "e.json")]
    assert main(args) == exit_code
    error = " ".join(capsys.readouterr().err.split())
    if exit_code == 2:
        assert str(victim) in error and ("wrong size" if pil_reads else "unreadable") in error
