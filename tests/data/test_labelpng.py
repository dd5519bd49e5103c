"""cityseg.data.labelpng: exactly what the official script reads (np.array of PIL), refusals as one named error.

The fuzz test decodes each damaged file in a child process (a segfault in PIL's or libpng's C decoder would
otherwise kill pytest rather than fail a test) and checks the contract on every case: read_png gives exactly what
`np.array(Image.open(path))` gives, or UnreadablePngError exactly when that raises; nothing else escapes; and
libpng's pixels are used on enough of them that the fast path is what was checked.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib

import imagecodecs
import numpy as np
import pytest
from PIL import Image

from cityseg.data import labelpng
from cityseg.data.labelpng import UnreadablePngError, encode_label_png, png_header, read_png
from cityseg.errors import UserError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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
    return PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


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
        # issue 27's crafted files: a second IHDR, a pHYs shorter than its 9 bytes, a zTXt over PIL's text limit
        second_ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0))
        yield f"{name}:second-ihdr", data[:position] + second_ihdr + data[position:]
        yield f"{name}:short-phys", data[:position] + _chunk(b"pHYs", b"\0\0\x0b\x13") + data[position:]
        big_ztxt = _chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"x" * (2**20 + 1)))
        yield f"{name}:oversized-ztxt", data[:position] + big_ztxt + data[position:]
        junk = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
        yield f"{name}:junk-idat", _fix_crcs(data[: position + 8] + junk + data[position + 8 + length :])
    yield "random-bytes", rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()


# The child: one JSON line before (so a crash names its case) and one after each file.
_CHILD = r"""
import json, sys
import imagecodecs
import numpy as np
from PIL import Image
from cityseg.data.labelpng import UnreadablePngError, png_header, read_png
libpng_reads = []
libpng_decode = imagecodecs.png_decode
def counted_decode(data):
    pixels = libpng_decode(data)
    libpng_reads.append(pixels)
    return pixels
imagecodecs.png_decode = counted_decode
for path in sys.argv[1:]:
    print(json.dumps({"start": path}), flush=True)
    libpng_reads.clear()
    try:
        array, mode = read_png(path)
        ours = {"ok": True, "mode": mode, "header": png_header(path)[0] == mode}
        ours["libpng"] = any(pixels is array for pixels in libpng_reads)
    except UnreadablePngError as exc:
        ours = {"ok": False, "error": "UnreadablePngError", "named": path in str(exc)}
    except BaseException as exc:
        ours = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    try:
        official = np.array(Image.open(path))  # what evalPixelLevelSemanticLabeling reads
        same = ours["ok"] and np.array_equal(array, official) and array.dtype == official.dtype
        reference = {"ok": True, "same": bool(same)}
    except Exception as exc:
        reference = {"ok": False, "error": type(exc).__name__}
    print(json.dumps({"path": path, "ours": ours, "pil": reference}), flush=True)
"""


def test_damaged_pngs_read_as_the_official_script_reads_or_raise_unreadable_never_crash(tmp_path):
    cases = list(damaged_cases(_clean_files()))
    paths = []
    for index, (_name, data) in enumerate(cases):
        path = tmp_path / f"{index:04d}.png"
        path.write_bytes(data)
        paths.append(path)
    names = {str(p): name for p, (name, _) in zip(paths, cases, strict=True)}
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, *map(str, paths)], capture_output=True, text=True, timeout=600
    )
    records = [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]
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
        assert pil["same"] and ours["header"] if ours["ok"] else ours["named"], f"{name}: {ours}, {pil}"
    outcomes = [r["ours"]["ok"] for r in done]
    assert sum(outcomes) >= 20 and outcomes.count(False) >= 300, (sum(outcomes), len(outcomes))  # both sides exercised
    by_libpng = sum(r["ours"].get("libpng", False) for r in done)
    assert 20 <= by_libpng < sum(outcomes), (by_libpng, sum(outcomes))  # libpng's pixels checked, PIL's too


def test_clean_label_pngs_give_pils_values_and_mode(tmp_path):
    for name, data in _clean_files().items():
        path = tmp_path / f"{name}.png"
        path.write_bytes(data)
        array, mode = read_png(path)
        with Image.open(path) as image:
            assert (mode, png_header(path)) == (image.mode, (image.mode, image.size)), name
            reference = np.array(image)
        np.testing.assert_array_equal(array, reference, err_msg=name)
        assert array.dtype == reference.dtype, name


def test_plain_grayscale_pixels_come_from_libpng_and_every_other_kind_from_pil(tmp_path, monkeypatch):
    decoded = []
    libpng_decode = imagecodecs.png_decode
    monkeypatch.setattr(labelpng.imagecodecs, "png_decode", lambda data: decoded.append(1) or libpng_decode(data))
    clean = _clean_files()
    transparent = io.BytesIO()
    Image.fromarray(_label_like((16, 24), [3, 4], np.uint8, 7)).save(transparent, format="PNG", transparency=3)
    one_bit = io.BytesIO()
    Image.fromarray(_label_like((16, 24), [0, 1], np.uint8, 8) > 0).save(one_bit, format="PNG")
    expected = {"labelIds": 1, "instanceIds16": 1, "prediction": 1, "palette": 0, "rgba32": 0, "interlaced": 0}
    others = [("transparency", transparent.getvalue()), ("one-bit", one_bit.getvalue())]
    for name, data in [*((n, clean[n]) for n in expected), *others]:
        path = tmp_path / f"{name}.png"
        path.write_bytes(data)
        decoded.clear()
        array, _mode = read_png(path)
        assert len(decoded) == expected.get(name, 0), name
        np.testing.assert_array_equal(array, np.array(Image.open(path)), err_msg=name)


def test_unreadable_png_is_a_named_user_error(tmp_path):
    path = tmp_path / "x_leftImg8bit.png"
    path.write_bytes(_clean_files()["prediction"][:20])  # not even a whole header
    for read in (read_png, png_header):
        with pytest.raises(UnreadablePngError, match=r"x_leftImg8bit\.png") as caught:
            read(path)
        assert isinstance(caught.value, UserError) and caught.value.path == path


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (64, 129), (257, 40)])
def test_label_pngs_cityseg_writes_are_8_bit_grayscale_that_pil_reads_back_exactly(tmp_path, shape):
    # predictions are read by the official script (PIL, mode L) and by the fast engine: both must see the labels
    rng = np.random.default_rng(shape[1])
    labels = rng.integers(0, 34, shape).astype(np.uint8)
    labels[: shape[0] // 2] = 7  # runs of one value next to noise: both kinds of rows a label map has
    labels.flat[-1] = 255
    path = tmp_path / "labels.png"
    path.write_bytes(encode_label_png(labels))
    with Image.open(path) as image:
        assert image.mode == "L" and image.size == (shape[1], shape[0])
        np.testing.assert_array_equal(np.array(image), labels)
    decoded, mode = read_png(path)
    assert mode == "L" and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, labels)


def test_label_png_encoding_refuses_what_is_not_a_label_map():
    with pytest.raises(ValueError, match="uint16"):
        encode_label_png(np.zeros((4, 4), np.uint16))
    with pytest.raises(ValueError, match=r"\(4, 4, 3\)"):
        encode_label_png(np.zeros((4, 4, 3), np.uint8))
