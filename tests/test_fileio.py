"""Atomic writes: all or nothing, and a full disk names the file the user asked for."""

from __future__ import annotations

import errno
import os

import pytest

from cityseg.fileio import FSYNC_ENV, atomic_write_bytes, atomic_write_text
from cityseg.training.runfolder import append_log_row


@pytest.mark.parametrize(("setting", "synced"), [(None, True), ("1", True), ("0", False)])
def test_finished_files_are_fsynced_unless_the_run_is_throwaway(tmp_path, monkeypatch, setting, synced):
    """A user's run (no CITYSEG_FSYNC) syncs every atomic write and log row; only CITYSEG_FSYNC=0 skips it."""
    if setting is None:
        monkeypatch.delenv(FSYNC_ENV, raising=False)  # the suite sets 0 for itself (conftest)
    else:
        monkeypatch.setenv(FSYNC_ENV, setting)
    synced_files = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced_files.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    atomic_write_text(tmp_path / "a.json", "{}")
    append_log_row(tmp_path, {"epoch": 1})
    assert (tmp_path / "a.json").read_text() == "{}" and (tmp_path / "log.jsonl").read_text() == '{"epoch": 1}\n'
    assert [name.startswith(".a.json.") or name == "log.jsonl" for name in synced_files] == (
        [True, True] if synced else []
    )


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "sub" / "a.json"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]


def test_full_disk_keeps_the_old_file_and_names_the_target(tmp_path):
    target = tmp_path / "evaluation.json"
    atomic_write_text(target, "old")

    def write_half_then_fail(handle):
        handle.write(b"new and half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as info:
        atomic_write_bytes(target, write_half_then_fail)
    assert info.value.errno == errno.ENOSPC
    assert info.value.filename == str(target)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["evaluation.json"]


def test_source_fingerprint_notices_a_rewrite_and_a_missing_file(tmp_path):
    import os

    from cityseg.fileio import source_fingerprint

    source = tmp_path / "city" / "a.png"
    source.parent.mkdir()
    source.write_bytes(b"1234")
    first = source_fingerprint("image", source, tmp_path)
    assert first == {
        "image": os.path.join("city", "a.png"),
        "image_bytes": 4,
        "image_mtime_ns": source.stat().st_mtime_ns,
    }
    os.utime(source, ns=(1, first["image_mtime_ns"] + 1_000_000))
    assert source_fingerprint("image", source, tmp_path) != first
    source.unlink()
    assert source_fingerprint("image", source, tmp_path)["image_bytes"] is None
