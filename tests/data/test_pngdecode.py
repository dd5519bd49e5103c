"""cityseg.data.pngdecode: PIL's values on every file, libpng only where it is safe, and no crash on damaged PNGs.

The fuzz test decodes each damaged file in a child process (a segfault in a C decoder would otherwise
kill pytest rather than fail a test) and checks the contract on every case: decode_png gives exactly
what PIL gives, or UnreadablePngError exactly when PIL cannot read the file; nothing else escapes.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
import sys
import sysconfig
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cityseg.data import pngdecode
from cityseg.data.pngdecode import UnreadablePngError, decode_png, header_mode_and_size, image_size
from cityseg.errors import UserError

# each one installed: "zlibng-rows" (cityseg's C extension), "wuffs" (pywuffs), "libpng" (imagecodecs)
FAST_BACKENDS = sorted(pngdecode._BACKENDS)


def _label_like(shape: tuple[int, int], values: list[int], dtype, seed: int) -> np.ndarray:
    """Flat regions with straight and diagonal borders, like rasterised polygons (every PNG filter gets used)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    rows, cols = np.mgrid[0:h, 0:w]
    out = np.full(shape, values[0], dtype=dtype)
    for value in values[1:]:
        a, b, c = rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0, max(h, w))
        out[(a * rows + b * cols + c) % max(h, w) < max(h, w) / len(values)] = value
    return out


def _png(array: np.ndarray, mode: str | None = None, **save) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    image.save(buffer, format="PNG", **save)
    return buffer.getvalue()


def _clean_files() -> dict[str, bytes]:
    """Cityscapes-like label PNGs: 8-bit labelIds and predictions, 16-bit instanceIds (ids above 32767 too), and
    what PIL reads differently: a palette image, a 32-bit RGBA one, an interlaced one."""
    instances = [7, 11, 21, 24001, 24002, 26001, 26017, 33001]
    palette = Image.fromarray(_label_like((48, 80), [0, 1, 2, 3], np.uint8, 4)).convert("P")
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG")
    return {
        "labelIds": _png(_label_like((64, 128), [7, 8, 11, 21, 23, 24, 26], np.uint8, 0)),
        "instanceIds16": _png(_label_like((64, 128), instances, np.uint16, 1)),
        "instanceIds-high": _png(_label_like((64, 128), instances + [40000, 65535], np.uint16, 2)),
        "rgba32": _png(np.dstack([_label_like((40, 56), [1, 2, 3], np.uint8, 6)] * 4)),
        "prediction": _png(_label_like((64, 128), [0, 7, 26, 33], np.uint8, 3)),
        "palette": buffer.getvalue(),
        "interlaced": _interlaced(_label_like((32, 48), [5, 6], np.uint8, 5)),
    }


def _interlaced(array: np.ndarray) -> bytes:
    """An Adam7-interlaced 8-bit grayscale PNG (PIL cannot write one; pass 7 alone suffices to be valid)."""
    h, w = array.shape
    passes = [(0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1)]
    raw = b"".join(
        b"".join(b"\x00" + array[y, x0::dx].tobytes() for y in range(y0, h, dy)) if x0 < w else b""
        for y0, x0, dy, dx in passes
    )
    return _with_chunks(struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 1), zlib.compress(raw))


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _with_chunks(ihdr: bytes, idat: bytes) -> bytes:
    return pngdecode.PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _chunks(data: bytes) -> list[tuple[int, int, bytes]]:
    position, found = 8, []
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        found.append((position, length, kind))
        position += 12 + length
    return found


def _fix_crcs(data: bytes) -> bytes:
    fixed = bytearray(data)
    for position, length, _kind in _chunks(data):
        end = position + 8 + length
        if end + 4 <= len(fixed):
            fixed[end : end + 4] = struct.pack(">I", zlib.crc32(bytes(fixed[position + 4 : end])))
    return bytes(fixed)


def _with_header(data: bytes, **fields) -> bytes:
    names = ("width", "height", "depth", "color", "compression", "filter", "interlace")
    values = dict(zip(names, struct.unpack(">IIBBBBB", data[16:29]), strict=True)) | fields
    body = b"IHDR" + struct.pack(">IIBBBBB", *(values[n] for n in names))
    return data[:12] + body + struct.pack(">I", zlib.crc32(body)) + data[33:]


def damaged_cases(clean: dict[str, bytes], seed: int = 0):
    """(name, bytes): truncations, flipped bytes (CRCs left or repaired), huge/zero sizes, wrong depths and types."""
    rng = np.random.default_rng(seed)
    for name, data in clean.items():
        yield f"{name}:clean", data
        for cut in sorted(
            {0, 7, 8, 16, 32, 33, 40, len(data) - 13, len(data) - 1, *rng.integers(33, len(data), 12).tolist()}
        ):
            yield f"{name}:truncated-at-{cut}", data[:cut]
        idats = [c for c in _chunks(data) if c[2] == b"IDAT"]
        for k in range(24):
            flipped = bytearray(data)
            for _ in range(int(rng.integers(1, 5))):
                position, length, _ = idats[0]
                where = (
                    int(rng.integers(position + 8, position + 8 + length)) if k % 2 else int(rng.integers(8, len(data)))
                )
                flipped[where] ^= int(rng.integers(1, 256))
            yield f"{name}:flipped-{k}", bytes(flipped)
            yield f"{name}:flipped-crc-repaired-{k}", _fix_crcs(bytes(flipped))
        for width, height in [
            (2**31 - 1, 2**31 - 1),
            (100_000, 100_000),
            (0, 0),
            (0, 64),
            (1, 1),
            (129, 64),
            (4096, 2048),
        ]:
            yield f"{name}:size-{width}x{height}", _with_header(data, width=width, height=height)
        for depth in (1, 2, 4, 8, 16, 3, 32):
            for color in (0, 2, 3, 4, 6, 5):
                yield f"{name}:depth-{depth}-color-{color}", _with_header(data, depth=depth, color=color)
        yield f"{name}:interlace-flag", _with_header(data, interlace=1)
        yield f"{name}:bad-filter-method", _with_header(data, filter=1)
        position, length, _ = idats[0]
        yield f"{name}:idat-length-huge", data[:position] + struct.pack(">I", 0x7FFFFFF0) + data[position + 4 :]
        yield f"{name}:idat-crc-only", data[: position + 8 + length] + b"\0\0\0\0" + data[position + 12 + length :]
        yield f"{name}:no-idat", data[:position] + data[position + 12 + length :]
        yield f"{name}:no-iend", data[:-12]
        text = _chunk(b"tEXt", b"Comment\0label image")
        bad_text = text[:-4] + bytes(4 * [0x55])  # an ancillary chunk with a wrong CRC: PIL refuses it before IDAT
        yield f"{name}:text-chunk", data[:position] + text + data[position:]
        yield f"{name}:bad-crc-text-before-idat", data[:position] + bad_text + data[position:]
        yield (
            f"{name}:bad-crc-text-after-idat",
            data[: position + 12 + length] + bad_text + data[position + 12 + length :],
        )
        junk = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
        yield f"{name}:junk-idat", _fix_crcs(data[: position + 8] + junk + data[position + 8 + length :])
    yield "random-bytes", rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()


# The child: one JSON line before (so a crash names its case) and one after each file.
_CHILD = r"""
import io, json, sys
import numpy as np
from PIL import Image
from cityseg.data import pngdecode
from cityseg.data.pngdecode import UnreadablePngError, decode_png
pngdecode.BACKEND = sys.argv[1]
for path in sys.argv[2:]:
    print(json.dumps({"start": path}), flush=True)
    try:
        array, mode = decode_png(path)
        ours = {"ok": True, "mode": mode, "shape": list(array.shape), "dtype": str(array.dtype), "sum": int(array.astype(np.int64).sum())}
    except UnreadablePngError as exc:
        ours = {"ok": False, "error": "UnreadablePngError", "user_error": isinstance(exc, Exception)}
    except BaseException as exc:
        ours = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    try:
        with Image.open(path) as image:
            image.load()
            pil = np.asarray(image)
        same = ours["ok"] and np.array_equal(array, pil) and array.dtype.kind == pil.dtype.kind
        reference = {"ok": True, "same": bool(same)}
    except Exception as exc:
        reference = {"ok": False, "error": type(exc).__name__}
    print(json.dumps({"path": path, "ours": ours, "pil": reference}), flush=True)
"""


def _run_child(backend: str, paths: list[Path]) -> tuple[subprocess.CompletedProcess, list[dict]]:
    command = [sys.executable, "-c", _CHILD, backend, *map(str, paths)]
    child = subprocess.run(command, capture_output=True, text=True, timeout=600)
    records = [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]
    return child, records


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_damaged_pngs_decode_like_pil_or_raise_unreadable_never_crash(tmp_path, backend):
    cases = list(damaged_cases(_clean_files()))
    paths = []
    for index, (_name, data) in enumerate(cases):
        path = tmp_path / f"{index:04d}.png"
        path.write_bytes(data)
        paths.append(path)
    names = {str(p): name for p, (name, _) in zip(paths, cases, strict=True)}
    child, records = _run_child(backend, paths)
    started = [r["start"] for r in records if "start" in r]
    assert child.returncode == 0, (
        f"decoder crashed (rc {child.returncode}) on {names.get(started[-1] if started else '?')}: {child.stderr[-500:]}"
    )
    done = [r for r in records if "path" in r]
    assert len(done) == len(cases)
    for record in done:
        ours, pil, name = record["ours"], record["pil"], names[record["path"]]
        assert ours.get("error", "UnreadablePngError") == "UnreadablePngError", f"{name}: {ours['error']}"
        assert ours["ok"] == pil["ok"], f"{name}: cityseg {ours}, PIL {pil}"
        if ours["ok"]:
            assert pil["same"], f"{name}: pixels differ from PIL's"
    outcomes = [r["ours"]["ok"] for r in done]
    assert sum(outcomes) >= 20 and outcomes.count(False) >= 300, (sum(outcomes), len(outcomes))  # both sides exercised


@pytest.mark.parametrize("backend", [*FAST_BACKENDS, None])
def test_clean_label_pngs_give_pils_values_and_mode(tmp_path, monkeypatch, backend):
    monkeypatch.setattr(pngdecode, "BACKEND", backend)
    for name, data in _clean_files().items():
        path = tmp_path / f"{name}.png"
        path.write_bytes(data)
        array, mode = decode_png(path)
        with Image.open(path) as image:
            reference = np.asarray(image)
            assert mode == image.mode, name
            assert header_mode_and_size(path) == (image.mode, image.size), name
            assert image_size(path) == image.size, name
        np.testing.assert_array_equal(array, reference, err_msg=name)
        assert array.dtype.kind == reference.dtype.kind


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_plain_grayscale_goes_to_the_fast_decoder_and_the_rest_to_pil(tmp_path, monkeypatch, backend):
    used = []
    real = pngdecode._BACKENDS[backend]
    monkeypatch.setattr(pngdecode, "BACKEND", backend)
    monkeypatch.setitem(pngdecode._BACKENDS, backend, lambda *args: used.append(1) or real(*args))
    for name, data in _clean_files().items():
        used.clear()
        path = tmp_path / f"{name}.png"
        path.write_bytes(data)
        decode_png(path)
        assert bool(used) == (name in ("labelIds", "instanceIds16", "instanceIds-high", "prediction")), name


def test_a_file_the_fast_path_refuses_is_read_by_pil(tmp_path):
    """A broken IDAT checksum: PIL does not check it (nor does the official script), so the file is read."""
    data = _clean_files()["labelIds"]
    position, length, _ = next(c for c in _chunks(data) if c[2] == b"IDAT")
    broken = data[: position + 8 + length] + b"\0\0\0\0" + data[position + 12 + length :]
    path = tmp_path / "broken-crc.png"
    path.write_bytes(broken)
    array, mode = decode_png(path)
    assert mode == "L"
    np.testing.assert_array_equal(array, np.asarray(Image.open(io.BytesIO(data))))


def test_unreadable_png_is_a_named_user_error(tmp_path):
    path = tmp_path / "x_leftImg8bit.png"
    path.write_bytes(_clean_files()["prediction"][:50])
    with pytest.raises(UnreadablePngError, match=r"x_leftImg8bit\.png") as caught:
        decode_png(path)
    assert isinstance(caught.value, UserError) and caught.value.path == path


def test_the_fast_decoders_are_installed():
    """imagecodecs is a requirement and `pip install -e .` builds the C row unfilter wherever there is a C
    compiler and Python's headers: without them every decode silently takes a slower path (the same values)."""
    assert "libpng" in FAST_BACKENDS
    compiler = (sysconfig.get_config_var("CC") or "").split()
    headers = Path(sysconfig.get_paths()["include"], "Python.h").is_file()
    if compiler and shutil.which(compiler[0]) and headers:
        assert pngdecode.BACKEND == "zlibng-rows", "cityseg.data._pngrows is not built: run `make install`"


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (64, 129), (257, 40)])
def test_label_pngs_cityseg_writes_read_back_identically_in_pil_and_the_fast_decoder(tmp_path, shape):
    # predictions are read by the official script (PIL, mode L) and by the fast engine: both must see the labels
    rng = np.random.default_rng(shape[1])
    labels = rng.integers(0, 34, shape).astype(np.uint8)
    labels[: shape[0] // 2] = 7  # runs of one value next to noise: both kinds of rows a label map has
    labels.flat[-1] = 255
    path = tmp_path / "labels.png"
    path.write_bytes(pngdecode.encode_label_png(labels))
    with Image.open(path) as image:
        assert image.mode == "L"
        np.testing.assert_array_equal(np.asarray(image), labels)
    decoded, mode = decode_png(path)
    assert mode == "L" and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, labels)
    data = path.read_bytes()  # and by the fast decoder itself, not by PIL as a fallback
    np.testing.assert_array_equal(pngdecode._fast(data, pngdecode.parse_header(data)), labels)


def test_label_png_encoding_refuses_what_is_not_a_label_map():
    with pytest.raises(ValueError, match="uint16"):
        pngdecode.encode_label_png(np.zeros((4, 4), np.uint16))
    with pytest.raises(ValueError, match=r"\(4, 4, 3\)"):
        pngdecode.encode_label_png(np.zeros((4, 4, 3), np.uint8))
