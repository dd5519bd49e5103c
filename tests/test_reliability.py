"""Reliability of the data side: kills and Ctrl-C during `prepare`, full disks, corrupt files through the CLI.

The kill tests run the real command in a subprocess on Cityscapes-sized (2048x1024) labels, so a run
lasts a few seconds and a kill lands while files are being written.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers_training import default_sigint
from PIL import Image

from cityseg.cli import main
from cityseg.data.frames import check_polygons
from cityseg.data.prepare import output_path, prepare_dataset

SCALE = 16  # the 128x64 synthetic polygons drawn at 2048x1024, the real label size
COPIES = 12  # each train frame 12 times: 240 labels, a few seconds for two worker processes
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
LINUX = Path("/proc/self/stat").exists()


def _flat(text: str) -> str:
    """stderr without whitespace: the CLI wraps its paragraph, possibly inside a long path."""
    return "".join(text.split())


def _error_paragraph(stderr: str) -> str:
    """The CLI's message: from 'error:' to the end (a progress bar may come before it)."""
    assert stderr.count("error:") == 1, stderr
    paragraph = stderr[stderr.index("error:") :].strip()
    assert "\n\n" not in paragraph and "Traceback" not in stderr, stderr
    return paragraph


# ---------------------------------------------------------------------------------------------- a larger dataset


def _upscaled(doc: dict) -> dict:
    objects = [dict(o, polygon=[[x * SCALE, y * SCALE] for x, y in o["polygon"]]) for o in doc["objects"]]
    return dict(doc, imgWidth=doc["imgWidth"] * SCALE, imgHeight=doc["imgHeight"] * SCALE, objects=objects)


def _add_frame(root: Path, split: str, city: str, stem: str, doc: dict, image: Path) -> None:
    (root / "leftImg8bit" / split / city).mkdir(parents=True, exist_ok=True)
    (root / "gtFine" / split / city).mkdir(parents=True, exist_ok=True)
    os.link(image, root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")  # prepare reads names only
    (root / "gtFine" / split / city / f"{stem}_gtFine_polygons.json").write_text(json.dumps(doc))


@pytest.fixture(scope="module")
def big(synth_raw_root, tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    """(template root with 2048x1024 polygons, expected bytes of every label from an uninterrupted prepare)."""
    template = tmp_path_factory.mktemp("big") / "cityscapes"
    reference = tmp_path_factory.mktemp("reference") / "cityscapes"
    copies: dict[str, str] = {}  # label name in the template -> label name in the reference
    for split in ("train", "val"):
        for index, json_path in enumerate(sorted(synth_raw_root.glob(f"gtFine/{split}/*/*_gtFine_polygons.json"))):
            city, stem = json_path.parent.name, json_path.name.removesuffix("_gtFine_polygons.json")
            image = synth_raw_root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
            doc = _upscaled(json.loads(json_path.read_text()))
            _add_frame(reference, split, city, stem, doc, image)
            for k in range(COPIES if split == "train" else 1):
                new_stem = f"{city}_{k:06d}_{index:06d}"
                _add_frame(template, split, city, new_stem, doc, image)
                copies[f"{new_stem}_gtFine_labelTrainIds.png"] = f"{stem}_gtFine_labelTrainIds.png"
    prepare_dataset(reference, workers=1, progress=False)  # the uninterrupted run
    outputs = {p.name: p for p in reference.glob("gtFine/*/*/*_labelTrainIds.png")}
    for path in outputs.values():
        with Image.open(path) as label:
            label.load()
            assert label.size == (128 * SCALE, 64 * SCALE)
    return template, {name: outputs[source].read_bytes() for name, source in copies.items()}


def _fresh_copy(big, tmp_path) -> Path:
    root = tmp_path / "cityscapes"
    shutil.copytree(big[0], root, copy_function=os.link)  # prepare only adds files beside the JSONs
    return root


def _outputs(root: Path) -> list[Path]:
    return list(root.glob("gtFine/*/*/*_labelTrainIds.png"))


def _hidden_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if p.is_file()]


def _check_tree(root: Path, expected: dict[str, bytes]) -> None:
    """Every label present is whole and exactly what an uninterrupted run writes; discovery sees no debris."""
    for path in _outputs(root):
        assert path.read_bytes() == expected[path.name], f"{path} is not the uninterrupted run's label"
    visible = [p for p in root.glob("gtFine/*/*/*") if not p.name.startswith(".")]
    assert all(p.name.endswith(("_gtFine_polygons.json", "_labelTrainIds.png")) for p in visible)
    check_polygons(root)  # the layout check prepare and training start with still passes


def _start_prepare(root: Path, workers: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "cityseg", "prepare", str(root), "--workers", str(workers)]
    # A session of its own: the test can signal the whole group, as a terminal's Ctrl-C does.
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        start_new_session=True,
        preexec_fn=default_sigint,
    )


def _wait_for_outputs(root: Path, process: subprocess.Popen, count: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        done = len(_outputs(root))
        if done >= count:
            return done
        time.sleep(0.02)
    return len(_outputs(root))


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _ppid, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(group) == pgid and state != "Z":
            members.append(int(stat.parent.name))
    return members


def _assert_group_exits(pgid: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    try:
        while _group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _group_members(pgid), "prepare's worker processes outlived it"
    finally:
        try:
            os.killpg(pgid, signal.SIGKILL)  # only this test's own session, and only if something is left
        except ProcessLookupError:
            pass


# ---------------------------------------------------------------------------------------------- kill -9 and Ctrl-C


@pytest.mark.slow
@pytest.mark.skipif(not LINUX, reason="reads /proc to check for orphaned workers")
def test_sigkill_at_random_moments_then_rerun_equals_an_uninterrupted_run(big, tmp_path):
    root, expected = _fresh_copy(big, tmp_path), big[1]
    total = len(expected)
    rng = random.Random(7)
    killed_mid_run = 0
    # The first kill lands during start-up; the others once 15%, 45%, 75% of the labels exist, plus a random delay.
    for fraction in (None, 0.15, 0.45, 0.75):
        process = _start_prepare(root, workers=2)
        try:
            if fraction is None:
                time.sleep(0.3)
            else:
                _wait_for_outputs(root, process, int(fraction * total))
                time.sleep(rng.uniform(0, 0.2))
            if process.poll() is None:
                done = len(_outputs(root))
                process.kill()  # SIGKILL to prepare itself, like the OOM killer: its workers must follow
                killed_mid_run += 0 < done < total
            process.communicate(timeout=60)
        finally:
            _assert_group_exits(process.pid)
        _check_tree(root, expected)
    assert killed_mid_run >= 2, "the kills did not land while labels were being written"

    rerun = subprocess.run(
        [sys.executable, "-m", "cityseg", "prepare", str(root), "--workers", "2"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr
    converted, skipped = map(int, re.search(r"(\d+) converted, (\d+) skipped", rerun.stdout).groups())
    assert converted + skipped == total and skipped > 0
    assert sorted(p.name for p in _outputs(root)) == sorted(expected)
    _check_tree(root, expected)
    assert not _hidden_files(root), "temp files of the killed runs were not cleaned up"


@pytest.mark.slow  # a child process, interrupted, on 2048x1024 labels
@pytest.mark.skipif(not LINUX, reason="reads /proc to check for orphaned workers")
@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_stops_cleanly_with_exit_130_and_no_partial_file(big, tmp_path, workers):
    root, expected = _fresh_copy(big, tmp_path), big[1]
    process = _start_prepare(root, workers)
    try:
        _wait_for_outputs(root, process, len(expected) // 10)
        assert process.poll() is None, "prepare finished before the test could interrupt it"
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: every process of the group
        _, stderr = process.communicate(timeout=60)
    finally:
        _assert_group_exits(process.pid)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr, stderr
    assert 0 < len(_outputs(root)) < len(expected)
    _check_tree(root, expected)
    assert not _hidden_files(root), "Ctrl-C left a partial temp file"


def test_stale_temp_files_of_dead_writers_are_removed(mutable_root):
    folder = sorted(mutable_root.glob("gtFine/train/*"))[0]
    label = sorted(folder.glob("*_labelTrainIds.png"))[0].name
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()  # its pid now belongs to no process
    host = socket.gethostname()
    dead = folder / f".{label}.{host}-{finished.pid}-0a1b2c3d.tmp.png"
    alive = folder / f".{label}.{host}-{os.getppid()}-0a1b2c3d.tmp.png"  # another prepare, still writing
    remote = folder / f".{label}.elsewhere.example-{finished.pid}-0a1b2c3d.tmp.png"  # shared disk, other machine
    users = folder / ".notes.txt"
    for path in (dead, alive, remote, users):
        path.write_bytes(b"partial")
    prepare_dataset(mutable_root, workers=1, progress=False)
    assert not dead.exists()
    assert alive.exists() and remote.exists() and users.exists()  # not provably ours and abandoned: kept


# ---------------------------------------------------------------------------------------------- full disk


@pytest.mark.parametrize(
    "code", [errno.ENOSPC, errno.EROFS, errno.EACCES], ids=["disk-full", "read-only", "no-permission"]
)
def test_unwritable_disk_during_prepare_exits_2_naming_the_file(mutable_root, monkeypatch, capsys, code):
    json_path = sorted(mutable_root.glob("gtFine/val/*/*_gtFine_polygons.json"))[0]
    target = output_path(json_path)
    before = target.read_bytes()
    past = json_path.stat().st_mtime_ns - 10**10
    os.utime(target, ns=(past, past))  # outdated: prepare rewrites it

    def fail_to_write(self, fp, *args, **kwargs):
        if code != errno.ENOSPC:  # the temp file cannot even be created
            raise OSError(code, os.strerror(code), str(fp))
        Path(fp).write_bytes(b"\x89PNG\r\n\x1a\n half")  # the disk fills up mid-file
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(Image.Image, "save", fail_to_write)
    assert main(["prepare", str(mutable_root), "--workers", "1"]) == 2
    paragraph = _error_paragraph(capsys.readouterr().err)
    assert str(target) in _flat(paragraph) and _flat(os.strerror(code)) in _flat(paragraph)
    assert target.read_bytes() == before  # the previous label is intact
    assert not _hidden_files(mutable_root)


# ---------------------------------------------------------------------------------------------- bad input via the CLI


def test_prepare_workers_out_of_range_exits_2(synth_raw_root, capsys):
    for bad in ("0", "-1", "two"):
        with pytest.raises(SystemExit) as info:
            main(["prepare", str(synth_raw_root), "--workers", bad])
        assert info.value.code == 2
        assert "--workers" in capsys.readouterr().err


def test_corrupt_json_via_the_cli_exits_2_naming_the_file(mutable_root, capsys):
    json_path = sorted(mutable_root.glob("gtFine/train/*/*_gtFine_polygons.json"))[3]
    json_path.write_text('{"imgHeight": 64, "imgWidth": 128, "objects": [{"label": "car", "polyg')
    for path in mutable_root.glob("gtFine/*/*/*_polygons.json"):
        os.utime(output_path(path), ns=(0, 0))  # all outdated: two workers, the error crosses processes
    assert main(["prepare", str(mutable_root), "--workers", "2"]) == 2
    paragraph = _error_paragraph(capsys.readouterr().err)
    assert str(json_path) in _flat(paragraph)


def _one_city_root(mutable_root: Path) -> Path:
    """Training reads every train image: keep one city (2 frames) so one batch reaches the damaged file."""
    cities = sorted(p.name for p in (mutable_root / "leftImg8bit" / "train").iterdir())
    for city in cities[1:]:
        shutil.rmtree(mutable_root / "leftImg8bit" / "train" / city)
        shutil.rmtree(mutable_root / "gtFine" / "train" / city)
    return mutable_root / "leftImg8bit" / "train" / cities[0]


@pytest.mark.trains
@pytest.mark.parametrize("damage", ["truncated-image", "truncated-label", "labelIds-as-trainIds"])
def test_damaged_frame_via_cli_train_exits_2_naming_the_file(mutable_root, tmp_path, capsys, damage):
    pytest.importorskip("cityseg.cli.train")
    city_dir = _one_city_root(mutable_root)
    image = sorted(city_dir.glob("*_leftImg8bit.png"))[0]
    stem = image.name.removesuffix("_leftImg8bit.png")
    label = mutable_root / "gtFine" / "train" / city_dir.name / f"{stem}_gtFine_labelTrainIds.png"
    bad = image if damage == "truncated-image" else label
    if damage == "labelIds-as-trainIds":
        shutil.copy(label.with_name(f"{stem}_gtFine_labelIds.png"), label)
    else:
        data = bad.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    args = [
        "train",
        str(mutable_root),
        "--out",
        str(tmp_path / "run"),
        "--full",
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--workers",
        "1",
        "--encoder-weights",
        "none",
        "--device",
        "cpu",
        "--no-amp",
    ]
    assert main(args) == 2  # read in a DataLoader worker process, reported in the main one
    paragraph = _error_paragraph(capsys.readouterr().err)
    assert str(bad) in _flat(paragraph)
    if damage == "labelIds-as-trainIds":
        assert "outside the trainIds" in paragraph and re.search(r"\[\d+", paragraph)  # names the values
