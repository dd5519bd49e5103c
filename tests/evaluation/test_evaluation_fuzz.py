"""Damaged prediction PNGs (flipped bytes, truncation): evaluate either succeeds or raises UserError,
never another exception, never SystemExit, never a hang."""

from __future__ import annotations

import io
import shutil
import signal
import struct
import zlib

import numpy as np
import pytest
from helpers_noisy import write_noisy_predictions
from PIL import Image

from cityseg.data.frames import list_frames
from cityseg.errors import UserError
from cityseg.evaluation import evaluate

ROUNDS = 60
SECONDS_PER_ROUND = 30  # a healthy round takes well under a second


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang("evaluate hung on a damaged PNG")


def _fix_checksums(data: bytearray) -> bytearray:
    """Recompute every chunk's CRC, so damage gets past PIL's checks and reaches the decoder and our checks."""
    position = 8
    while position + 12 <= len(data):
        length = struct.unpack(">I", data[position : position + 4])[0]
        end = position + 8 + length
        if end + 4 > len(data):
            break
        data[end : end + 4] = struct.pack(">I", zlib.crc32(data[position + 4 : end]))
        position = end + 4
    return data


def _flip_pixels(data: bytes, rng: np.random.Generator) -> bytes:
    """Flip bytes of the decoded pixels and re-encode: a readable PNG whose values may or may not be labelIds."""
    pixels = np.array(Image.open(io.BytesIO(data)))  # (H, W) uint8
    flat = pixels.reshape(-1)
    for position in rng.integers(0, flat.size, size=rng.integers(1, 6)):
        flat[position] ^= int(rng.integers(1, 256))
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def _damage(data: bytes, rng: np.random.Generator) -> bytes:
    """Flip random bytes anywhere (maybe repairing CRCs after), or in the IHDR header, or in the decoded pixels;
    and/or truncate. The signature is fair game too."""
    kind = int(rng.integers(6))
    if kind == 5:
        return _flip_pixels(data, rng)
    data = bytearray(data)
    if kind in (0, 2, 3):
        for position in rng.integers(0, len(data), size=rng.integers(1, 6)):
            data[position] ^= int(rng.integers(1, 256))
    if kind == 4:  # width, height, bit depth, colour type...: with a valid CRC this reaches our header checks
        data[int(rng.integers(16, 29))] ^= int(rng.integers(1, 256))
    if kind in (3, 4):
        data = _fix_checksums(data)
    if kind in (1, 2):
        data = data[: int(rng.integers(0, len(data)))]
    return bytes(data)


def test_damaged_predictions_give_success_or_user_error(synth_raw_root, tmp_path):
    clean = tmp_path / "clean"
    write_noisy_predictions(list_frames(synth_raw_root, "val", label_source="ids"), clean, seed=4)
    names = sorted(p.name for p in clean.glob("*.png"))
    rng = np.random.default_rng(2024)
    outcomes = {"ok": 0, "user_error": 0}
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        for round_ in range(ROUNDS):
            pred = tmp_path / f"round{round_}"
            shutil.copytree(clean, pred)
            victim = pred / names[rng.integers(len(names))]
            victim.write_bytes(_damage(victim.read_bytes(), rng))
            engine = ("both", "official", "fast")[round_ % 3]
            signal.alarm(SECONDS_PER_ROUND)
            try:
                evaluate(pred, synth_raw_root, engine=engine, workers=2)
                outcomes["ok"] += 1
            except UserError as exc:
                assert str(exc)
                outcomes["user_error"] += 1
            except BaseException as exc:  # noqa: BLE001 - the point: nothing else may escape
                pytest.fail(f"round {round_} ({engine}) raised {exc.__class__.__name__}: {exc}")
            finally:
                signal.alarm(0)
            shutil.rmtree(pred)
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert outcomes["user_error"] > 0 and outcomes["ok"] > 0, outcomes  # both paths were exercised
