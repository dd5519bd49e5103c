"""`cityseg submit`: a flat zip of exactly the expected, valid labelIds PNGs, written atomically, or a clear refusal."""

from __future__ import annotations

import io
import shutil
import zipfile

import numpy as np
import pytest
from helpers_noisy import PREDICTION_SUFFIX, write_noisy_predictions
from PIL import Image

from cityseg.cli import main
from cityseg.data.frames import list_frames
from cityseg.errors import UserError
from cityseg.evaluation import TrainIdsWarning
from cityseg.prediction.submit import make_submission


@pytest.fixture
def test_pred(synth_raw_root, tmp_path):
    """Valid labelIds predictions for the synthetic test split (its ground truth stands in for a model)."""
    frames = list_frames(synth_raw_root, "test", label_source=None)
    return tmp_path / "test_predictions", write_noisy_predictions(frames, tmp_path / "test_predictions", seed=3)


def _pngs(path):
    return sorted(path.rglob("*.png"))


def test_zip_holds_every_frame_flat_and_readable(synth_raw_root, test_pred, tmp_path):
    pred, written = test_pred
    out = make_submission(pred, tmp_path / "submission.zip", root=synth_raw_root, workers=2)
    frames = list_frames(synth_raw_root, "test", label_source=None)
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        assert sorted(names) == sorted(f"{f.id}{PREDICTION_SUFFIX}" for f in frames)
        assert all("/" not in name for name in names)  # top level, as the server expects
        for path in written:
            with archive.open(path.name) as member:
                image = Image.open(io.BytesIO(member.read()))
                assert image.mode == "L"
                assert np.array_equal(np.asarray(image), np.asarray(Image.open(path)))
    assert not list(tmp_path.glob(".*"))  # no temp file left beside it


def test_predictions_in_city_subfolders_are_flattened(synth_raw_root, test_pred, tmp_path):
    pred, written = test_pred
    for path in written:
        city = path.name.split("_")[0]
        (pred / city).mkdir(exist_ok=True)
        path.rename(pred / city / path.name)
    out = make_submission(pred, tmp_path / "s.zip", expect=len(written), size=(128, 64))
    assert sorted(zipfile.ZipFile(out).namelist()) == sorted(p.name for p in written)


def test_refuses_to_overwrite_unless_asked(synth_raw_root, test_pred, tmp_path):
    pred, _ = test_pred
    out = tmp_path / "submission.zip"
    out.write_bytes(b"someone else's zip")
    with pytest.raises(UserError, match="already exists"):
        make_submission(pred, out, root=synth_raw_root)
    assert out.read_bytes() == b"someone else's zip"
    make_submission(pred, out, root=synth_raw_root, overwrite=True)
    assert zipfile.is_zipfile(out)


def test_default_expects_the_real_test_split(test_pred, tmp_path):
    pred, written = test_pred
    with pytest.raises(UserError, match=rf"{len(written)} frame\(s\) found, 1525 expected") as info:
        make_submission(pred, tmp_path / "s.zip")
    assert "2048x1024" in str(info.value)  # the real size is expected too
    assert not (tmp_path / "s.zip").exists()


def test_expect_count_mismatch(test_pred, tmp_path):
    pred, written = test_pred
    with pytest.raises(UserError, match=rf"{len(written)} frame\(s\) found, {len(written) + 1} expected"):
        make_submission(pred, tmp_path / "s.zip", expect=len(written) + 1, size=(128, 64))


def test_missing_extra_and_misnamed_files(synth_raw_root, test_pred, tmp_path):
    pred, written = test_pred
    written[0].unlink()
    shutil.copy(written[1], pred / "frankfurt_000000_000019_leftImg8bit.png")  # a val frame
    with pytest.raises(UserError) as info:
        make_submission(pred, tmp_path / "s.zip", root=synth_raw_root)
    message = str(info.value)
    assert written[0].name.removesuffix(PREDICTION_SUFFIX) in message and "without a prediction" in message
    assert "frankfurt_000000_000019_leftImg8bit.png" in message and "matching no frame" in message
    shutil.copy(written[1], pred / "result.png")
    with pytest.raises(UserError, match=r"not named <city>.*result\.png"):
        make_submission(pred, tmp_path / "s.zip", expect=len(written), size=(128, 64))


def test_duplicates_channels_size_and_ids(synth_raw_root, test_pred, tmp_path):
    pred, written = test_pred
    gray = np.asarray(Image.open(written[0]))
    (pred / "copies").mkdir()
    shutil.copy(written[0], pred / "copies" / written[0].name)
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(written[1])
    Image.fromarray(gray[:, :100]).save(written[2])
    bad = np.array(Image.open(written[3]))
    bad[0, 0] = 40
    Image.fromarray(bad).save(written[3])
    with pytest.raises(UserError) as info:
        make_submission(pred, tmp_path / "s.zip", root=synth_raw_root)
    message = str(info.value)
    assert "more than one prediction" in message and str(pred / "copies" / written[0].name) in message
    assert "not single-channel" in message and str(written[1]) in message
    assert "wrong size" in message and "100x64, expected 128x64" in message
    shutil.rmtree(pred / "copies")
    Image.fromarray(gray).save(written[1])
    Image.fromarray(gray).save(written[2])
    with pytest.raises(UserError, match=r"values \[40\]"):
        make_submission(pred, tmp_path / "s.zip", root=synth_raw_root)
    assert not (tmp_path / "s.zip").exists()


def test_trainids_warn(synth_raw_root, test_pred, tmp_path):
    pred, written = test_pred
    for path in written:
        Image.fromarray(np.full((64, 128), 5, dtype=np.uint8)).save(path)
    with pytest.warns(TrainIdsWarning):
        make_submission(pred, tmp_path / "s.zip", root=synth_raw_root)


def test_cli(synth_raw_root, test_pred, tmp_path, capsys):
    pred, written = test_pred
    out = tmp_path / "submission.zip"
    assert main(["submit", str(pred), "--out", str(out), "--root", str(synth_raw_root)]) == 0
    assert len(zipfile.ZipFile(out).namelist()) == len(written) and str(out) in capsys.readouterr().out
    first = out.read_bytes()
    assert main(["submit", str(pred), "--out", str(out), "--root", str(synth_raw_root)]) == 0  # a rerun: same zip
    assert out.read_bytes() == first
    Image.fromarray(np.full((64, 128), 7, dtype=np.uint8)).save(written[0])  # other predictions: refused
    assert main(["submit", str(pred), "--out", str(out), "--root", str(synth_raw_root)]) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == first
    assert (
        main(["submit", str(pred), "--out", str(out), "--expect", str(len(written)), "--size", "128x64", "--overwrite"])
        == 0
    )
    assert main(["submit", str(pred), "--out", str(tmp_path / "x.tar")]) == 2
