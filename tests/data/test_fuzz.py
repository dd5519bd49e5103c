"""Fuzzing the readers: damaged PNGs and polygon JSONs either read correctly or raise a UserError naming the file.

Never another exception type, never a hang. Cases are seeded, so a failure names a case that replays.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import signal
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cityseg.data.dataset import CityscapesDataset
from cityseg.data.frames import Frame, list_frames, read_image, read_train_ids
from cityseg.data.prepare import convert_one, output_path, prepare_dataset
from cityseg.errors import UserError

CASES = 30
TRAIN_IDS = set(range(19)) | {255}


class _Hang(BaseException):
    """Raised by the alarm; a BaseException so no `except Exception` in the code under test can swallow it."""


@contextlib.contextmanager
def _deadline(seconds: int, case: str):
    def expire(signum, frame):
        raise _Hang(f"{case} ran over {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _outcome(path: Path, case: str, function, *args) -> tuple[bool, object]:
    """(True, function(*args)), or (False, None) after a UserError naming `path`; anything else fails the test."""
    with _deadline(10, case):
        try:
            return True, function(*args)
        except UserError as exc:
            assert str(path) in str(exc), f"{case}: the error does not name the file: {exc}"
            return False, None


# ---------------------------------------------------------------------------------------------- mutations


def _png_chunks(data: bytes) -> list[list]:
    chunks, pos = [], 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        chunks.append([data[pos + 4 : pos + 8], bytearray(data[pos + 8 : pos + 8 + length])])
        pos += 12 + length
    return chunks


def _png_bytes(chunks: list[list]) -> bytes:
    out = bytearray(b"\x89PNG\r\n\x1a\n")
    for kind, body in chunks:
        out += struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return bytes(out)


def _mutate_png(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Raw damage (bit flips, truncation) or damage behind valid CRCs, which reaches the decoder itself."""
    how = rng.choice(["flip", "flips", "truncate", "chunk", "header", "pixels"])
    if how in ("flip", "flips"):
        out = bytearray(data)
        for _ in range(1 if how == "flip" else rng.randint(2, 16)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        return bytes(out), how
    if how == "truncate":
        return data[: rng.randrange(len(data))], how
    chunks = _png_chunks(data)
    if how == "chunk":
        body = rng.choice([c for c in chunks if c[1]])[1]
        body[rng.randrange(len(body))] = rng.randrange(256)
    elif how == "header":  # IHDR: width, height, bit depth, colour type, ... with a correct CRC
        chunks[0][1][rng.randrange(13)] = rng.randrange(256)
    else:  # the inflated scanlines themselves: filter bytes and pixels, recompressed, maybe cut short
        raw = bytearray(zlib.decompress(b"".join(bytes(c[1]) for c in chunks if c[0] == b"IDAT")))
        for _ in range(rng.randint(1, 8)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        raw = raw[: rng.randrange(len(raw) // 2, len(raw) + 1)]
        chunks = [c for c in chunks if c[0] != b"IDAT"]
        chunks.insert(-1, [b"IDAT", bytearray(zlib.compress(bytes(raw)))])
    return _png_bytes(chunks), how


_ODD_VALUES = [None, -1, 0, 1e308, float("inf"), "x", [], {}, [[1, 2]], 10**40, True, [[0, 0], [1e9, 1e9], [5, -5]]]


def _mutate_json(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Byte damage, or a well-formed JSON with one field replaced, removed or of the wrong type."""
    if rng.random() < 0.4:
        out = bytearray(data)
        if rng.random() < 0.3:
            return bytes(out[: rng.randrange(len(out))]), "truncate"
        for _ in range(rng.randint(1, 4)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        return bytes(out), "flip"
    doc = json.loads(data)
    obj = rng.choice(doc["objects"])
    target, key = rng.choice(
        [(doc, "imgWidth"), (doc, "imgHeight"), (doc, "objects"), (obj, "label"), (obj, "polygon"), (obj, "deleted")]
        + [(obj["polygon"], rng.randrange(len(obj["polygon"])))]
    )
    if rng.random() < 0.2 and isinstance(target, dict):
        target.pop(key, None)
        return json.dumps(doc).encode(), f"drop {key}"
    target[key] = rng.choice(_ODD_VALUES)
    return json.dumps(doc).encode(), f"set {key}"


# ---------------------------------------------------------------------------------------------- images and labels


@pytest.fixture(scope="module")
def frame(synth_root) -> Frame:
    return list_frames(synth_root, "val")[0]


def _check_item(item, shape):
    image, mask = item
    assert image.dtype == torch.uint8 and image.shape == (3, *shape)
    assert mask.dtype == torch.uint8 and mask.shape == shape
    assert set(mask.unique().tolist()) <= TRAIN_IDS


def test_fuzzed_camera_images(frame, tmp_path):
    rng = random.Random(1)
    source = frame.image.read_bytes()
    shape = read_image(frame.image).shape[:2]
    damaged = tmp_path / frame.image.name
    read_ok = []
    for case in range(CASES):
        data, how = _mutate_png(source, rng)
        damaged.write_bytes(data)
        name = f"image case {case} ({how})"
        ok, image = _outcome(damaged, name, read_image, damaged)
        if ok:
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, name
        read_ok.append(ok)
        dataset = CityscapesDataset([dataclasses.replace(frame, image=damaged)])
        ok, item = _outcome(damaged, name, dataset.__getitem__, 0)
        if ok:
            _check_item(item, shape)  # a decodable image of another size is refused, not returned
    assert any(read_ok) and not all(read_ok)  # the cases reach both outcomes


@pytest.mark.parametrize("source", ["trainIds", "ids"])
def test_fuzzed_label_images(frame, tmp_path, source):
    rng = random.Random(2 if source == "trainIds" else 3)
    good = frame.label if source == "trainIds" else frame.label_ids
    original = good.read_bytes()
    shape = read_train_ids(good, source).shape
    damaged = tmp_path / good.name
    read_ok = []
    for case in range(CASES):
        data, how = _mutate_png(original, rng)
        damaged.write_bytes(data)
        name = f"{source} label case {case} ({how})"
        ok, mask = _outcome(damaged, name, read_train_ids, damaged, source)
        if ok:
            assert mask.dtype == np.uint8 and mask.ndim == 2, name
            assert set(np.unique(mask).tolist()) <= TRAIN_IDS, name  # out-of-range values never slip through
        read_ok.append(ok)
        dataset = CityscapesDataset([dataclasses.replace(frame, label=damaged)], label_source=source)
        ok, item = _outcome(damaged, name, dataset.__getitem__, 0)
        if ok:
            _check_item(item, shape)
    assert any(read_ok) and not all(read_ok)


def test_oversized_header_is_refused_before_decoding(frame, tmp_path, recwarn):
    chunks = _png_chunks(frame.image.read_bytes())
    chunks[0][1][:8] = struct.pack(">II", 20_000, 5_000)  # 100 Mpx: PIL would only warn, then allocate 300 MB
    damaged = tmp_path / frame.image.name
    damaged.write_bytes(_png_bytes(chunks))
    with _deadline(10, "oversized"), pytest.raises(UserError, match="20000x5000") as info:
        read_image(damaged)
    assert str(damaged) in str(info.value)


# ---------------------------------------------------------------------------------------------- polygon JSONs


def _check_conversion(json_path: Path, out: Path, converted: bool, case: str) -> None:
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], f"{case}: temp file left"
    if not converted:
        assert not out.exists(), f"{case}: output written despite the error"
        return
    doc = json.loads(json_path.read_text())
    with Image.open(out) as label:
        assert label.mode == "L", case
        assert label.size == (int(doc["imgWidth"]), int(doc["imgHeight"])), case
        assert set(np.unique(np.asarray(label)).tolist()) <= TRAIN_IDS, case


def test_fuzzed_polygon_jsons(synth_raw_root, tmp_path):
    rng = random.Random(4)
    sources = sorted(synth_raw_root.glob("gtFine/train/*/*_gtFine_polygons.json"))[:3]
    converted = []
    for case in range(2 * CASES):
        source = sources[case % len(sources)]
        data, how = _mutate_json(source.read_bytes(), rng)
        folder = tmp_path / f"case{case}"
        folder.mkdir()
        damaged = folder / source.name
        damaged.write_bytes(data)
        out = output_path(damaged)
        name = f"json case {case} ({how})"
        ok, _ = _outcome(damaged, name, convert_one, damaged, out)
        _check_conversion(damaged, out, ok, name)
        converted.append(ok)
    assert any(converted) and not all(converted)


STRUCTURAL = {
    "no-polygon-key": lambda d: d["objects"][0].pop("polygon"),
    "no-label-key": lambda d: d["objects"][0].pop("label"),
    "no-objects": lambda d: d.pop("objects"),
    "polygon-is-a-number": lambda d: d["objects"][0].update(polygon=5),
    "points-are-numbers": lambda d: d["objects"][0].update(polygon=[1, 2, 3]),
    "points-are-strings": lambda d: d["objects"][0].update(polygon=[["a", "b"], ["c", "d"]]),
    "one-point": lambda d: d["objects"][0].update(polygon=[[1, 2]]),
    "unknown-label": lambda d: d["objects"][0].update(label="dragon"),
    "objects-is-null": lambda d: d.update(objects=None),
    "top-level-list": lambda d: [d.clear()],
    "width-negative": lambda d: d.update(imgWidth=-5),
    "width-zero": lambda d: d.update(imgWidth=0),
    "width-beyond-int64": lambda d: d.update(imgWidth=10**12),  # was OverflowError
    "huge-canvas": lambda d: d.update(imgWidth=10_000, imgHeight=9_000),  # 90 Mpx: was allocated blindly
    "width-not-a-number": lambda d: d.update(imgWidth="wide"),
}


@pytest.mark.parametrize("kind", list(STRUCTURAL))
def test_malformed_polygon_json_is_a_user_error(synth_raw_root, tmp_path, kind):
    source = sorted(synth_raw_root.glob("gtFine/train/*/*_gtFine_polygons.json"))[0]
    doc = json.loads(source.read_text())
    STRUCTURAL[kind](doc)
    damaged = tmp_path / source.name
    damaged.write_text(json.dumps([] if kind == "top-level-list" else doc))
    with _deadline(10, kind), pytest.raises(UserError) as info:
        convert_one(damaged, output_path(damaged))
    assert str(damaged) in str(info.value)
    _check_conversion(damaged, output_path(damaged), False, kind)


def _outdate(out: Path, json_path: Path) -> None:
    """Make the label older than its JSON, so prepare converts it again (explicit times: no clock granularity)."""
    past = json_path.stat().st_mtime_ns - 10**10
    os.utime(out, ns=(past, past))


def test_fuzzed_json_through_prepare_leaves_other_labels_alone(mutable_root):
    rng = random.Random(5)
    jsons = sorted(mutable_root.glob("gtFine/*/*/*_gtFine_polygons.json"))
    originals = {output_path(j): output_path(j).read_bytes() for j in jsons}
    for case in range(6):
        target = jsons[rng.randrange(len(jsons))]
        pristine = target.read_bytes()
        data, how = _mutate_json(pristine, rng)
        target.write_bytes(data)
        _outdate(output_path(target), target)
        name = f"prepare case {case} ({how})"
        ok, result = _outcome(target, name, prepare_dataset, mutable_root, 1, False, False)
        assert not ok or result.converted == 1, name
        for out, before in originals.items():
            if out != output_path(target):
                assert out.read_bytes() == before, f"{name}: {out} changed"
        if not ok:  # the failed file keeps its previous, complete label
            assert output_path(target).read_bytes() == originals[output_path(target)], name
        assert not [p for p in mutable_root.rglob(".*") if p.is_file()], f"{name}: temp file left"
        target.write_bytes(pristine)
        _outdate(output_path(target), target)
        prepare_dataset(mutable_root, workers=1, progress=False)  # back to the real label
        assert output_path(target).read_bytes() == originals[output_path(target)], name
