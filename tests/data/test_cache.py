"""The decoded-once cache: same pixels as the PNGs, never stale, never half-built, never in a foreign folder."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cityseg.cli import main
from cityseg.data.cache import (
    COMPLETE_FILE,
    IMAGES_FILE,
    LABELS_FILE,
    CachedDataset,
    build_cache,
    cache_state,
    ensure_cache,
    entry_name,
    training_cache_size,
)
from cityseg.data.dataset import CityscapesDataset
from cityseg.data.frames import list_frames, read_image, read_train_ids
from cityseg.data.transforms import build_transform
from cityseg.errors import UserError

torch.set_num_threads(1)

SMALL = (64, 32)  # half of the fixtures' 128x64: an exact 2x downscale


def _arrays(entry: Path) -> tuple[np.ndarray, np.ndarray]:
    return np.load(entry / IMAGES_FILE), np.load(entry / LABELS_FILE)


def _entry_bytes(out: Path) -> dict[str, bytes]:
    """Every file cityseg left in a cache folder except the lock files, by relative path."""
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and not p.name.startswith(".lock-")
    }


def test_full_size_arrays_equal_decoded_pngs(synth_root, tmp_path):
    (result,) = build_cache(synth_root, ("val",), None, tmp_path / "c", workers=2, progress=False)
    images, labels = _arrays(result.path)
    frames = list_frames(synth_root, "val")
    assert result.status == "built" and result.decoded == len(frames) == images.shape[0]
    for row, frame in enumerate(frames):
        np.testing.assert_array_equal(images[row], read_image(frame.image))
        np.testing.assert_array_equal(labels[row], read_train_ids(frame.label))


def test_resized_arrays_follow_resize_semantics(synth_root, tmp_path):
    (result,) = build_cache(synth_root, ("val",), SMALL, tmp_path / "c", workers=1, progress=False)
    images, labels = _arrays(result.path)
    assert images.shape[1:] == (SMALL[1], SMALL[0], 3) and labels.shape[1:] == (SMALL[1], SMALL[0])
    for row, frame in enumerate(list_frames(synth_root, "val")):
        # Nearest at exactly 2x picks every other pixel: no invented class ids at borders.
        np.testing.assert_array_equal(labels[row], read_train_ids(frame.label)[::2, ::2])
        source = torch.from_numpy(read_image(frame.image)).permute(2, 0, 1)[None].float()  # (1, 3, H, W)
        expected = torch.nn.functional.interpolate(
            source, size=(SMALL[1], SMALL[0]), mode="bilinear", antialias=True, align_corners=False
        )[0].permute(1, 2, 0)
        assert (torch.from_numpy(images[row].astype(np.float32)) - expected).abs().max() <= 1.0


def test_cached_items_equal_png_items(synth_root, tmp_path):
    out = tmp_path / "c"
    build_cache(synth_root, ("val",), None, out, workers=1, progress=False)
    frames = list_frames(synth_root, "val")
    train_tf = build_transform(train=True, aug=("flip", "scale-crop", "photometric"), crop=(64, 32))
    pngs, cached = CityscapesDataset(frames, train_tf), CachedDataset(out, "val", None, train_tf)
    assert len(cached) == len(frames)
    for i in range(len(frames)):
        torch.manual_seed(i)
        expected = pngs[i]
        torch.manual_seed(i)
        got = cached[i]
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    # Without a transform both give the full-size evaluation tensors.
    image, mask = CachedDataset(out, "val")[1]
    assert torch.equal(image, CityscapesDataset(frames)[1][0]) and image.dtype == mask.dtype == torch.uint8

    # A subset in any order maps ids to the right rows.
    ids = [frames[2].id, frames[0].id]
    subset = CachedDataset(out, "val", ids)
    assert subset.ids == ids and torch.equal(subset[0][1], CityscapesDataset([frames[2]])[0][1])
    with pytest.raises(UserError, match="no frames"):
        CachedDataset(out, "val", ["nowhere_000000_000000"])

    # Workers get the paths, not the arrays: the pickled dataset stays small after use.
    assert len(pickle.dumps(subset)) < 20_000
    assert torch.equal(pickle.loads(pickle.dumps(subset))[1][1], subset[1][1])


def test_resized_cache_matches_eval_transform_on_pngs(synth_root, tmp_path):
    out = tmp_path / "c"
    build_cache(synth_root, ("val",), SMALL, out, workers=1, progress=False)
    eval_tf = build_transform(train=False, size=SMALL)
    pngs = CityscapesDataset(list_frames(synth_root, "val"), eval_tf)
    cached = CachedDataset(out, "val", None, eval_tf, size=SMALL)
    for i in range(len(pngs)):
        assert torch.equal(cached[i][0], pngs[i][0]) and torch.equal(cached[i][1], pngs[i][1])


def test_changed_source_rebuilds_only_that_frame(mutable_root, tmp_path):
    out = tmp_path / "c"
    build_cache(mutable_root, ("val",), None, out, workers=1, progress=False)
    frames = list_frames(mutable_root, "val")
    # Touch one image (same pixels, new mtime) and rewrite one label with other classes.
    stat = frames[0].image.stat()
    os.utime(frames[0].image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    label = read_train_ids(frames[1].label).copy()
    label[:8] = 255
    Image.fromarray(label).save(frames[1].label)

    assert cache_state(mutable_root, "val", None, out).startswith("stale: 2 source(s) changed")
    result = ensure_cache(mutable_root, "val", None, out, workers=1, progress=False)
    assert (result.status, result.decoded, result.reused) == ("rebuilt", 2, len(frames) - 2)
    _, labels = _arrays(result.path)
    for row, frame in enumerate(frames):
        np.testing.assert_array_equal(labels[row], read_train_ids(frame.label))
    again = ensure_cache(mutable_root, "val", None, out, workers=1, progress=False)
    assert (again.status, again.decoded) == ("fresh", 0)
    assert cache_state(mutable_root, "val", None, out) == "fresh"


def test_corrupt_source_names_the_file_and_leaves_nothing(mutable_root, tmp_path):
    out = tmp_path / "c"
    build_cache(mutable_root, ("val",), SMALL, out, workers=1, progress=False)
    kept = _entry_bytes(out)
    bad = list_frames(mutable_root, "val")[1].image
    bad.write_bytes(bad.read_bytes()[:500])
    with pytest.raises(UserError, match=bad.name):
        ensure_cache(mutable_root, "val", SMALL, out, workers=2, progress=False)
    assert _entry_bytes(out) == kept and not list(out.glob(".tmp-*"))  # the old entry stays as it was


@pytest.mark.parametrize("damage", ["no-complete-flag", "truncated-images"])
def test_partial_entry_is_never_used_and_rebuilt(synth_root, tmp_path, damage):
    out = tmp_path / "c"
    (result,) = build_cache(synth_root, ("val",), SMALL, out, workers=1, progress=False)
    good = _entry_bytes(out)
    if damage == "no-complete-flag":
        (result.path / COMPLETE_FILE).unlink()
    else:
        with open(result.path / IMAGES_FILE, "r+b") as handle:
            handle.truncate(1000)
    assert cache_state(synth_root, "val", SMALL, out) == "partial"
    with pytest.raises(UserError, match="no complete cache"):
        CachedDataset(out, "val", size=SMALL)
    rebuilt = ensure_cache(synth_root, "val", SMALL, out, workers=1, progress=False)
    assert (rebuilt.status, rebuilt.decoded) == ("rebuilt", rebuilt.frames)
    assert _entry_bytes(out) == good


@pytest.mark.slow  # kills a child process at a chosen moment
@pytest.mark.parametrize("moment", ["mid-decode", "mid-swap"])
def test_sigkill_then_rerun_gives_identical_bytes(synth_root, tmp_path, moment):
    reference, out = tmp_path / "reference", tmp_path / "killed"
    build_cache(synth_root, ("val",), None, reference, workers=1, progress=False)
    name = entry_name("val", None)
    if moment == "mid-swap":  # a swap needs an entry to replace: a partial one
        build_cache(synth_root, ("val",), None, out, workers=1, progress=False)
        (out / name / COMPLETE_FILE).unlink()
    env = {**os.environ, "CITYSEG_CACHE_CRASH_AT": moment, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "cityseg",
        "cache",
        str(synth_root),
        "--out",
        str(out),
        "--splits",
        "val",
        "--workers",
        "1",
        "--no-progress",
    ]
    killed = subprocess.run(command, env=env, capture_output=True, timeout=120)
    assert killed.returncode == -9, killed.stderr.decode()
    leftover = {"mid-decode": f".tmp-{name}", "mid-swap": f".old-{name}"}[moment]
    assert (out / leftover).is_dir() and not (out / name).exists()  # killed where we meant to
    assert cache_state(synth_root, "val", None, out) == "missing"

    build_cache(synth_root, ("val",), None, out, workers=1, progress=False)
    assert _entry_bytes(out) == _entry_bytes(reference)
    assert not list(out.glob(".tmp-*")) and not list(out.glob(".old-*"))


def test_refuses_foreign_folders(synth_root, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not a cityseg cache"):
        build_cache(synth_root, ("val",), None, foreign, workers=1, progress=False)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    with pytest.raises(UserError, match="inside the dataset"):
        build_cache(synth_root, ("val",), None, synth_root / "leftImg8bit" / "cache", workers=1, progress=False)

    # An entry folder holding a file cityseg did not write is not replaced.
    out = tmp_path / "c"
    (result,) = build_cache(synth_root, ("val",), SMALL, out, workers=1, progress=False)
    (result.path / "annotations.txt").write_text("keep me too")
    (result.path / COMPLETE_FILE).unlink()
    with pytest.raises(UserError, match="did not write"):
        ensure_cache(synth_root, "val", SMALL, out, workers=1, progress=False)
    assert (result.path / "annotations.txt").read_text() == "keep me too"


def test_cli_exit_codes(synth_root, tmp_path, capsys):
    out = tmp_path / "c"
    args = [
        "cache",
        str(synth_root),
        "--out",
        str(out),
        "--splits",
        "val",
        "--size",
        "64x32",
        "--workers",
        "1",
        "--no-progress",
    ]
    assert main(args) == 0
    assert "built" in capsys.readouterr().out
    assert main(args) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(["cache", str(tmp_path / "missing"), "--out", str(out), "--no-progress"]) == 2
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "x.txt").write_text("x")
    assert main(["cache", str(synth_root), "--out", str(tmp_path / "foreign"), "--no-progress"]) == 2
    with pytest.raises(SystemExit) as usage:
        main(["cache", str(synth_root), "--splits", "training"])
    assert usage.value.code == 2


def test_training_cache_size_keeps_full_resolution_when_crops_can_enlarge():
    assert training_cache_size((1024, 512), ("flip",), None) == (1024, 512)
    assert training_cache_size((1024, 512), ("scale-crop", "flip"), (0.5, 1.0)) == (1024, 512)
    assert training_cache_size((1024, 512), ("scale-crop",), None) is None  # default range reaches 2.0
    assert training_cache_size(None, ("flip",), None) is None
