"""The fast engine's decoded-ground-truth cache: same numbers as the official script with and without it,
rebuilt when ground truth changes, and it never writes into (or deletes) a folder cityseg did not write."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cityseg.cli import main
from cityseg.data.frames import list_frames
from cityseg.errors import UserError
from cityseg.evaluation import compare_exports, evaluate
from cityseg.evaluation.fast import read_ground_truth_pair
from cityseg.evaluation.gt_cache import COMPLETE_FILE, MARKER, GtCacheWarning, open_gt_cache
from cityseg.evaluation.noisy import write_noisy_predictions
from cityseg.evaluation.runner import ground_truth_frames, prediction_pairs


def _predictions(root, out):
    write_noisy_predictions(list_frames(root, "val", label_source="ids"), out, seed=3)
    return out


def _assert_agree(official: dict, fast: dict) -> None:
    diffs, worst = compare_exports(official, fast)  # exact counts, |diff| < 1e-9, NaN in the same places
    assert diffs == [] and worst < 1e-9


def _fast(pred, root, cache) -> tuple[dict, dict]:
    result = evaluate(pred, root, "val", engine="fast", gt_cache=cache)
    return result, result["cityseg"]


def _rewrite_label(path, value: int) -> None:
    """Paint the top half of a labelIds PNG with `value` and push its mtime forward, like a re-annotation."""
    array = np.array(Image.open(path))
    array[: array.shape[0] // 2] = value
    Image.fromarray(array).save(path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))


def test_fast_with_cache_equals_official_and_the_pngs(synth_raw_root, tmp_path):
    pred = _predictions(synth_raw_root, tmp_path / "pred")
    cache = tmp_path / "gt-cache"
    official = evaluate(pred, synth_raw_root, "val", engine="official", gt_cache=cache)
    assert not cache.exists()  # the official engine reads the PNGs itself
    built, info = _fast(pred, synth_raw_root, cache)
    assert info["gt_cache"]["status"] == "built" and (cache / "val" / COMPLETE_FILE).is_file()
    fresh, info = _fast(pred, synth_raw_root, cache)
    assert info["gt_cache"]["status"] == "fresh" and info["gt_cache"]["build_s"] == 0
    uncached, info = _fast(pred, synth_raw_root, False)
    assert info["gt_cache"] is None
    for result in (built, fresh, uncached):
        _assert_agree(official, result)
    # The cached segments decode back to exactly what PIL gives, frame by frame.
    pairs = prediction_pairs(pred, ground_truth_frames(synth_raw_root, "val"))
    gt = open_gt_cache(cache, synth_raw_root, "val", pairs, workers=1)
    for pair in pairs:
        segments, table = gt.read(pair)
        labels, instances = read_ground_truth_pair(pair)
        np.testing.assert_array_equal(table[segments, 0], labels)
        np.testing.assert_array_equal(table[segments, 1], np.where(instances > 1000, instances, 0))


def test_changed_ground_truth_rebuilds_and_results_follow(mutable_root, tmp_path):
    pred = _predictions(mutable_root, tmp_path / "pred")
    cache = tmp_path / "gt-cache"
    before, _ = _fast(pred, mutable_root, cache)
    frame = list_frames(mutable_root, "val", label_source="ids")[0]
    _rewrite_label(frame.label_ids, 7)  # road
    after, info = _fast(pred, mutable_root, cache)
    assert info["gt_cache"]["status"] == "rebuilt"
    assert after["confMatrix"] != before["confMatrix"]
    _assert_agree(evaluate(pred, mutable_root, "val", engine="official"), after)
    # A touch alone (same bytes) is also a change: the cache never trusts a source it cannot vouch for.
    stat = frame.instance_ids.stat()
    os.utime(frame.instance_ids, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert _fast(pred, mutable_root, cache)[1]["gt_cache"]["status"] == "rebuilt"


def test_partial_entry_is_rebuilt(synth_raw_root, tmp_path):
    pred = _predictions(synth_raw_root, tmp_path / "pred")
    cache = tmp_path / "gt-cache"
    first, _ = _fast(pred, synth_raw_root, cache)
    (cache / "val" / COMPLETE_FILE).unlink()  # as if killed before the last write
    again, info = _fast(pred, synth_raw_root, cache)
    assert info["gt_cache"]["status"] == "rebuilt" and (cache / "val" / COMPLETE_FILE).is_file()
    assert again["confMatrix"] == first["confMatrix"]


def test_foreign_folder_is_refused_with_exit_2_and_left_alone(synth_raw_root, tmp_path, capsys):
    pred = _predictions(synth_raw_root, tmp_path / "pred")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    code = main(["evaluate", str(pred), str(synth_raw_root), "--engine", "fast", "--json", str(tmp_path / "e.json"),
                 "--gt-cache", str(foreign)])  # fmt: skip
    assert code == 2
    assert "not a cityseg ground-truth cache" in " ".join(capsys.readouterr().err.split())
    assert (
        sorted(p.name for p in foreign.iterdir()) == ["notes.txt"] and (foreign / "notes.txt").read_text() == "keep me"
    )


def test_stale_entry_with_a_stranger_file_is_not_deleted(mutable_root, tmp_path):
    pred = _predictions(mutable_root, tmp_path / "pred")
    cache = tmp_path / "gt-cache"
    _fast(pred, mutable_root, cache)
    (cache / "val" / "mine.txt").write_text("keep me")
    _rewrite_label(list_frames(mutable_root, "val", label_source="ids")[0].label_ids, 7)
    with pytest.raises(UserError, match="did not write"):
        _fast(pred, mutable_root, cache)
    assert (cache / "val" / "mine.txt").read_text() == "keep me"


def test_default_location_and_no_gt_cache(mutable_root, tmp_path):
    pred = _predictions(mutable_root, tmp_path / "pred")
    default = tmp_path / "cityseg-cache"  # mutable_root is tmp_path / "cityscapes"
    args = ["evaluate", str(pred), str(mutable_root), "--json", str(tmp_path / "e.json")]
    assert main([*args, "--no-gt-cache"]) == 0
    assert not default.exists()
    assert main(args) == 0  # the first evaluation of the split only notes it; the second builds
    assert main(args) == 0
    assert (default / "eval-gt" / "val" / COMPLETE_FILE).is_file()
    assert json.loads((default / "eval-gt" / MARKER).read_text())["format"] == "cityseg-eval-gt"
    # The shared folder carries the training cache's marker, so `cityseg cache`/train accept it later.
    from cityseg.data import cache as training_cache

    assert (default / training_cache.MARKER).is_file()


def test_unwritable_default_falls_back_with_a_note(mutable_root, tmp_path, monkeypatch):
    pred = _predictions(mutable_root, tmp_path / "pred")
    default = tmp_path / "cityseg-cache"
    real_mkdir = os.mkdir

    def read_only_mkdir(path, *args, **kwargs):  # what a read-only mount answers (works as root, unlike chmod)
        if str(path).startswith(str(default)):
            raise PermissionError(13, "Permission denied", str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", read_only_mkdir)
    with pytest.warns(GtCacheWarning, match="cannot write"):
        result = evaluate(pred, mutable_root, "val", engine="fast")
    monkeypatch.undo()
    assert result["cityseg"]["gt_cache"] is None and not default.exists()
    _assert_agree(evaluate(pred, mutable_root, "val", engine="official"), result)


def _counts_both_ways(labels, instances, pred):
    """FrameCounts from the decoded arrays (the PNG path's counting) and from their segment encoding."""
    from cityseg.evaluation.fast import _instance_counts, _joint_counts, _segment_counts, encode_segments

    where = Path("frame.png")
    segments, table = encode_segments(labels, instances, where, where)
    cached = _segment_counts(segments, table, pred, where)
    return (_joint_counts(labels, pred, where), _instance_counts(instances, pred, where)), (
        cached.joint,
        cached.instances,
    )


@pytest.mark.parametrize("seed, shape", [(0, (24, 40)), (1, (24, 40)), (2, (24, 40)), (3, (96, 128))])
def test_segment_counts_equal_png_counts_even_when_the_two_files_disagree(seed, shape):
    # the largest frame has more (labelId, instance) segments than a byte can number (16-bit counting)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 34, shape).astype(np.uint8)
    # instance ids of scored and ignored instance classes (person..bicycle, caravan, trailer), plain ids <= 1000,
    # and ids whose class does not match the labelIds pixel under them (files that disagree)
    choices = np.array([0, 7, 24, 26, 1000, 24001, 24002, 26001, 29001, 30002, 33001, 33005, 32001], dtype=np.int32)
    instances = rng.choice(choices, shape).astype(np.int32 if seed % 2 else np.uint16)
    pred = rng.integers(0, 34, shape).astype(np.uint8)
    (joint, inst), (joint_c, inst_c) = _counts_both_ways(labels, instances, pred)
    np.testing.assert_array_equal(joint_c, joint)
    np.testing.assert_array_equal(inst_c, inst)
    assert len(inst) > 0
    if shape == (96, 128):
        from cityseg.evaluation.fast import encode_segments

        assert len(encode_segments(labels, instances, Path("f.png"), Path("f.png"))[1]) > 256


def test_segment_counts_refuse_the_same_bad_instances():
    labels = np.full((4, 6), 7, np.uint8)
    instances = np.full((4, 6), 7001, np.uint16)  # road has no instances
    with pytest.raises(UserError, match="no instances"):
        _counts_both_ways(labels, instances, np.zeros((4, 6), np.uint8))


def test_first_evaluation_decodes_each_ground_truth_png_once_and_builds_the_cache_on_the_way(
    synth_raw_root, tmp_path, monkeypatch
):
    """The cache is written by the scoring pass itself: no second pass over the ground truth, then none at all."""
    from cityseg.evaluation import fast

    pred = _predictions(synth_raw_root, tmp_path / "pred")
    decoded: list[Path] = []
    real = fast.decode_png
    monkeypatch.setattr(fast, "decode_png", lambda path: decoded.append(Path(path)) or real(path))
    cache = tmp_path / "gt-cache"
    first, info = _fast(pred, synth_raw_root, cache)
    frames = list_frames(synth_raw_root, "val", label_source="ids")
    ground_truth = sorted([f.label_ids for f in frames] + [f.instance_ids for f in frames])
    assert info["gt_cache"]["status"] == "built" and sorted(decoded) == ground_truth
    decoded.clear()
    second, info = _fast(pred, synth_raw_root, cache)
    assert info["gt_cache"]["status"] == "fresh" and decoded == []
    _assert_agree(evaluate(pred, synth_raw_root, "val", engine="official"), first)
    _assert_agree(first, second)


def test_cache_is_kept_when_the_predictions_are_bad(synth_raw_root, tmp_path):
    pred = _predictions(synth_raw_root, tmp_path / "pred")
    victim = sorted(pred.glob("*.png"))[0]
    victim.write_bytes(victim.read_bytes()[:100])  # truncated
    cache = tmp_path / "gt-cache"
    with pytest.raises(UserError, match="unreadable"):
        _fast(pred, synth_raw_root, cache)
    assert (cache / "val" / COMPLETE_FILE).is_file() and not (cache / ".tmp-val").exists()


def test_a_frame_the_encoding_cannot_hold_falls_back_to_the_pngs(synth_raw_root, tmp_path, monkeypatch):
    from cityseg.evaluation import fast

    pred = _predictions(synth_raw_root, tmp_path / "pred")
    monkeypatch.setattr(fast, "MAX_SEGMENTS", fast.N_IDS)  # every frame with an instance is "too many pairs"
    cache = tmp_path / "gt-cache"
    with pytest.warns(GtCacheWarning, match="distinct"):
        result, info = _fast(pred, synth_raw_root, cache)
    assert info["gt_cache"] is None and not (cache / "val").exists() and not (cache / ".tmp-val").exists()
    _assert_agree(evaluate(pred, synth_raw_root, "val", engine="official"), result)


def test_no_room_for_the_cache_is_a_note_not_a_failure(synth_raw_root, tmp_path, monkeypatch):
    import shutil

    from cityseg.data import cache_core  # asks for free space for every cache

    pred = _predictions(synth_raw_root, tmp_path / "pred")
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(cache_core.shutil, "disk_usage", lambda path: usage._replace(free=10**6))
    cache = tmp_path / "gt-cache"
    with pytest.warns(GtCacheWarning, match="GB free"):
        result, info = _fast(pred, synth_raw_root, cache)
    assert info["gt_cache"] is None and not (cache / "val").exists()
    _assert_agree(evaluate(pred, synth_raw_root, "val", engine="official"), result)


def test_default_cache_is_built_by_the_second_evaluation_of_a_split(mutable_root, tmp_path):
    """A cache pays only when a split is scored again: the first run scores from the PNGs at full speed."""
    pred = _predictions(mutable_root, tmp_path / "pred")
    entry = tmp_path / "cityseg-cache" / "eval-gt" / "val"  # the default folder beside ROOT
    statuses, results = [], []
    for _ in range(3):
        result = evaluate(pred, mutable_root, "val", engine="fast")
        statuses.append(result["cityseg"]["gt_cache"]["status"])
        results.append(result)
        if len(statuses) == 1:
            assert not entry.exists()
    assert statuses == ["next run", "built", "fresh"] and (entry / COMPLETE_FILE).is_file()
    official = evaluate(pred, mutable_root, "val", engine="official")
    for result in results:
        _assert_agree(official, result)
    # New ground truth is a new split as far as the note goes: scored from the PNGs, cached by the run after.
    _rewrite_label(list_frames(mutable_root, "val", label_source="ids")[0].label_ids, 7)
    assert evaluate(pred, mutable_root, "val", engine="fast")["cityseg"]["gt_cache"]["status"] == "next run"
    assert evaluate(pred, mutable_root, "val", engine="fast")["cityseg"]["gt_cache"]["status"] == "rebuilt"
