"""`prepare` equals the official csCreateTrainIdLabelImgs output, skips current files, and fails cleanly."""

from __future__ import annotations

import datetime
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from cityseg.data.prepare import prepare_dataset
from cityseg.errors import UserError


def _outputs(root):
    return sorted(p.relative_to(root) for p in root.glob("gt*/*/*/*_labelTrainIds.png"))


def _hidden_files(root):
    return [p for p in root.rglob(".*") if p.is_file()]


def test_prepare_equals_official_conversion_pixel_for_pixel(synth_raw_root, tmp_path, monkeypatch):
    ours, official = tmp_path / "ours", tmp_path / "official"
    shutil.copytree(synth_raw_root, ours)
    shutil.copytree(synth_raw_root, official)
    result = prepare_dataset(ours, workers=2, progress=False)  # several chunks: the process pool runs

    # createTrainIdLabelImgs.main reads CITYSCAPES_DATASET when called (not at import), so setenv suffices.
    monkeypatch.setenv("CITYSCAPES_DATASET", str(official))
    from cityscapesscripts.preparation import createTrainIdLabelImgs

    createTrainIdLabelImgs.main()

    names = _outputs(official)
    assert names and _outputs(ours) == names
    assert result.converted == len(names) and result.skipped == 0
    for name in names:
        expected = np.asarray(Image.open(official / name))
        actual = Image.open(ours / name)
        assert actual.mode == "L" and np.array_equal(np.asarray(actual), expected), name
    assert not _hidden_files(ours)  # no temp files left behind


def test_second_run_skips_and_touched_json_is_reconverted(mutable_root):
    outputs = sorted(mutable_root.glob("gtFine/*/*/*_labelTrainIds.png"))
    again = prepare_dataset(mutable_root, workers=1, progress=False)
    assert again.converted == 0 and again.skipped == len(outputs)

    json_path = sorted(mutable_root.glob("gtFine/train/*/*_gtFine_polygons.json"))[0]
    target = json_path.with_name(json_path.name.replace("_polygons.json", "_labelTrainIds.png"))
    stamps = {p: p.stat().st_mtime_ns for p in outputs}
    # The JSON is now newer than its PNG (explicit times: no dependence on timestamp granularity).
    past = json_path.stat().st_mtime - 10
    os.utime(target, (past, past))
    stamps[target] = target.stat().st_mtime_ns
    touched = prepare_dataset(mutable_root, workers=1, progress=False)
    assert touched.converted == 1 and touched.skipped == len(outputs) - 1
    assert target.stat().st_mtime_ns >= json_path.stat().st_mtime_ns
    assert [p for p in outputs if p.stat().st_mtime_ns != stamps[p]] == [target]


def test_an_edited_json_with_an_old_date_is_converted_again(mutable_root):
    """Corrected annotations unpacked over a prepared root keep the archive's old dates (unzip, tar, cp -p)."""
    json_path = sorted(mutable_root.glob("gtFine/train/*/*_gtFine_polygons.json"))[0]
    target = json_path.with_name(json_path.name.replace("_polygons.json", "_labelTrainIds.png"))
    before = np.asarray(Image.open(target))
    annotation = json.loads(json_path.read_text())
    width, height = annotation["imgWidth"], annotation["imgHeight"]
    square = [[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]]
    annotation["objects"].append({"label": "sky", "polygon": square})  # drawn last: the whole frame is sky
    json_path.write_text(json.dumps(annotation))
    old = datetime.datetime(2016, 2, 1).timestamp()  # touch -d 2016-02-01
    os.utime(json_path, (old, old))
    result = prepare_dataset(mutable_root, workers=1, progress=False)
    assert result.converted == 1
    after = np.asarray(Image.open(target))
    assert not np.array_equal(after, before) and (after == 10).all()  # 10: the trainId of sky
    assert prepare_dataset(mutable_root, workers=1, progress=False).converted == 0


def test_stale_or_missing_output_is_rewritten_correctly(mutable_root):
    target = sorted(mutable_root.glob("gtFine/val/*/*_labelTrainIds.png"))[0]
    expected = np.asarray(Image.open(target))
    target.unlink()
    assert prepare_dataset(mutable_root, workers=1, progress=False).converted == 1
    assert np.array_equal(np.asarray(Image.open(target)), expected)


@pytest.mark.parametrize("workers", [1, 2])
def test_corrupt_json_is_a_user_error_naming_the_file(mutable_root, workers):
    json_path = sorted(mutable_root.glob("gtFine/train/*/*_gtFine_polygons.json"))[-1]
    json_path.write_text('{"imgHeight": 64, "imgWidth": ')  # truncated JSON, newer than its PNG
    target = json_path.with_name(json_path.name.replace("_polygons.json", "_labelTrainIds.png"))
    before = target.read_bytes()
    for path in mutable_root.glob("gtFine/*/*/*_polygons.json"):
        path.write_bytes(path.read_bytes() + b" ")  # everything outdated: with 2 workers the pool reports the error
    with pytest.raises(UserError, match=str(json_path)):
        prepare_dataset(mutable_root, workers=workers, progress=False)
    assert target.read_bytes() == before  # the old output was not replaced by a partial one
    assert not _hidden_files(mutable_root)


def test_unknown_label_is_a_user_error_not_an_exit(mutable_root):
    json_path = sorted(mutable_root.glob("gtFine/val/*/*_gtFine_polygons.json"))[0]
    json_path.write_text(
        '{"imgHeight": 8, "imgWidth": 8, "objects": [{"label": "dragon", "polygon": [[0,0],[4,0],[4,4]]}]}'
    )
    with pytest.raises(UserError, match="dragon") as info:
        prepare_dataset(mutable_root, workers=1, progress=False)
    assert str(json_path) in str(info.value)


def test_root_is_validated_first(synth_raw_root, tmp_path):
    with pytest.raises(UserError, match="inside the dataset"):
        prepare_dataset(synth_raw_root / "gtFine", workers=1, progress=False)
    with pytest.raises(UserError, match="does not exist"):
        prepare_dataset(tmp_path / "missing", workers=1, progress=False)


def test_coarse_annotations(mutable_root):
    with pytest.raises(UserError, match="gtCoarse"):
        prepare_dataset(mutable_root, coarse=True, progress=False)
    fine_json = sorted(mutable_root.glob("gtFine/train/*/*_gtFine_polygons.json"))[0]
    coarse_dir = mutable_root / "gtCoarse" / "train" / fine_json.parent.name
    coarse_dir.mkdir(parents=True)
    coarse_json = coarse_dir / fine_json.name.replace("gtFine", "gtCoarse")
    shutil.copy(fine_json, coarse_json)
    result = prepare_dataset(mutable_root, coarse=True, workers=1, progress=False)
    assert result.converted == 1
    fine_png = fine_json.with_name(fine_json.name.replace("_polygons.json", "_labelTrainIds.png"))
    coarse_png = coarse_dir / coarse_json.name.replace("_polygons.json", "_labelTrainIds.png")
    assert np.array_equal(np.asarray(Image.open(coarse_png)), np.asarray(Image.open(fine_png)))
