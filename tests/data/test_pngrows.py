"""cityseg.data._pngrows: the C row unfilter against the PNG spec's definition, and its refusals.

The reference below is written from the PNG specification (section 9.2-9.4: filter types 0-4, bytes to
the left of the first pixel and above the first row count as 0, arithmetic modulo 256, Paeth's tie
order a, b, c) one byte at a time; the extension must agree with it on every filter, both pixel sizes,
first rows and rows of one pixel.
"""

from __future__ import annotations

import struct
import sys
import zlib

import numpy as np
import pytest

from cityseg.data import pngdecode

_pngrows = pytest.importorskip(
    "cityseg.data._pngrows", reason="cityseg.data._pngrows is not built (see README, Troubleshooting)"
)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def reference_unfilter(filtered: bytes, row_bytes: int, pixel_bytes: int) -> bytes:
    """Reconstruction function of the PNG spec, byte by byte (x: this byte, a: left, b: above, c: upper left)."""
    out = bytearray()
    height = len(filtered) // (row_bytes + 1)
    for y in range(height):
        kind = filtered[y * (row_bytes + 1)]
        row = filtered[y * (row_bytes + 1) + 1 : (y + 1) * (row_bytes + 1)]
        start = y * row_bytes
        for i, x in enumerate(row):
            a = out[start + i - pixel_bytes] if i >= pixel_bytes else 0
            b = out[start + i - row_bytes] if y > 0 else 0
            c = out[start + i - row_bytes - pixel_bytes] if y > 0 and i >= pixel_bytes else 0
            predicted = {0: 0, 1: a, 2: b, 3: (a + b) // 2, 4: _paeth(a, b, c)}[kind]
            out.append((x + predicted) % 256)
    return bytes(out)


def reference_filter(image: bytes, row_bytes: int, pixel_bytes: int, kinds: list[int]) -> bytes:
    """The spec's filter functions (the encoder's side): each row's bytes minus their prediction, modulo 256."""
    out = bytearray()
    for y in range(len(image) // row_bytes):
        kind = kinds[y % len(kinds)]
        out.append(kind)
        start = y * row_bytes
        for i in range(row_bytes):
            a = image[start + i - pixel_bytes] if i >= pixel_bytes else 0
            b = image[start + i - row_bytes] if y > 0 else 0
            c = image[start + i - row_bytes - pixel_bytes] if y > 0 and i >= pixel_bytes else 0
            predicted = {0: 0, 1: a, 2: b, 3: (a + b) // 2, 4: _paeth(a, b, c)}[kind]
            out.append((image[start + i] - predicted) % 256)
    return bytes(out)


KINDS = [[0], [1], [2], [3], [4], [4, 2, 1, 3, 0, 4, 4]]


@pytest.mark.parametrize("pixel_bytes", [1, 2])
@pytest.mark.parametrize("kinds", KINDS, ids=lambda k: "-".join(map(str, k)))
def test_unfilter_matches_the_specs_reconstruction_on_any_data(pixel_bytes, kinds):
    """Random residuals: every byte value and sum, wrapping included."""
    rng = np.random.default_rng(len(kinds) * 10 + pixel_bytes)
    for width in (1, 2, 3, 17, 64):  # one pixel: only the first-byte rules apply
        row_bytes = width * pixel_bytes
        rows = [
            bytes([kinds[y % len(kinds)]]) + rng.integers(0, 256, row_bytes, dtype=np.uint8).tobytes() for y in range(9)
        ]
        filtered = b"".join(rows)
        out = bytearray(9 * row_bytes)
        _pngrows.unfilter(filtered, out, row_bytes, pixel_bytes, False)
        assert bytes(out) == reference_unfilter(filtered, row_bytes, pixel_bytes), (kinds, width)


@pytest.mark.parametrize("pixel_bytes", [1, 2])
@pytest.mark.parametrize("kinds", KINDS, ids=lambda k: "-".join(map(str, k)))
@pytest.mark.parametrize("levels", [2, 4, 256], ids=lambda n: f"{n}-values")
def test_unfilter_inverts_the_specs_filters(pixel_bytes, kinds, levels):
    """Images of few values (label-map-like: flat runs, and many of Paeth's ties) come back exactly."""
    rng = np.random.default_rng(levels + pixel_bytes)
    for width in (1, 5, 64):
        row_bytes = width * pixel_bytes
        image = rng.integers(0, levels, (12, row_bytes), dtype=np.uint8)
        image[3:7, : row_bytes // 2] = image[3, 0]  # a flat block: Paeth's "row above is flat" shortcut
        filtered = reference_filter(image.tobytes(), row_bytes, pixel_bytes, kinds)
        out = bytearray(image.size)
        _pngrows.unfilter(filtered, out, row_bytes, pixel_bytes, False)
        assert bytes(out) == image.tobytes(), (kinds, width)
        if pixel_bytes == 2:  # swapped: each row only after the next one has used it
            _pngrows.unfilter(filtered, out, row_bytes, pixel_bytes, True)
            assert bytes(out) == image.reshape(-1, 2)[:, ::-1].tobytes(), (kinds, width)


def test_sixteen_bit_samples_are_swapped_to_the_machines_order_on_request():
    filtered = b"\x00\x01\x02\x03\x04" + b"\x02\x00\x01\x00\x01"  # two rows of two 16-bit pixels: None, then Up
    out = np.empty((2, 2), np.uint16)
    _pngrows.unfilter(filtered, out, 4, 2, sys.byteorder == "little")
    np.testing.assert_array_equal(out, [[0x0102, 0x0304], [0x0103, 0x0305]])


@pytest.mark.parametrize(
    ("filtered_size", "out_size", "row_bytes", "pixel_bytes"),
    [(10, 8, 4, 1), (12, 10, 5, 1), (10, 8, 0, 1), (10, 8, 4, 3), (10, 8, 3, 2), (0, 0, 4, 1), (5, 4, 4, 2)],
)
def test_unfilter_refuses_sizes_that_do_not_fit(filtered_size, out_size, row_bytes, pixel_bytes):
    # (10, 8, 4, 1) is the one fit: it only fails on the filter-type byte 9
    filtered = bytes([9] * filtered_size)
    with pytest.raises(ValueError, match="sizes do not fit|unknown filter type"):
        _pngrows.unfilter(filtered, bytearray(out_size), row_bytes, pixel_bytes, False)


def test_an_unknown_filter_type_names_its_row():
    filtered = b"\x00abc" + b"\x02abc" + b"\x05abc"
    with pytest.raises(ValueError, match="row 2 has an unknown filter type"):
        _pngrows.unfilter(filtered, bytearray(9), 3, 1, False)
    with pytest.raises(TypeError):
        _pngrows.unfilter(filtered, b"read-only buffer!", 3, 1, False)


def _png(width: int, height: int, depth: int, image_data: bytes) -> bytes:
    """A grayscale PNG with the given (already compressed) image data and valid CRCs."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, 0)
    return pngdecode.PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", image_data) + chunk(b"IEND", b"")


@pytest.mark.parametrize("raw_size", [4 * 5 - 1, 4 * 5 + 1], ids=["short", "long"])
def test_image_data_of_the_wrong_size_is_left_to_pil(raw_size):
    """Data that inflates to fewer or more bytes than the header promises (4 rows of 1 + 4 bytes) never reaches
    the C code: the fast path gives None and PIL decides."""
    data = _png(4, 4, 8, zlib.compress(bytes(raw_size)))
    header = pngdecode.parse_header(data)
    if raw_size < 20:
        assert pngdecode._BACKENDS["zlibng-rows"](data, header, pngdecode._plain_image_data(data)) is None
    else:
        with pytest.raises(Exception, match="Z_BUF_ERROR"):  # zlib-ng stops at the buffer's end
            pngdecode._BACKENDS["zlibng-rows"](data, header, pngdecode._plain_image_data(data))
    assert pngdecode._fast(data, header) is None


def test_a_png_with_an_unknown_filter_type_is_pils_call(tmp_path):
    """The fast path refuses such a file and PIL decides (it refuses it too): a named error, not a crash."""
    rows = b"".join(bytes([kind]) + bytes(range(8)) for kind in (0, 1, 7, 2))
    path = tmp_path / "bad-filter.png"
    path.write_bytes(_png(8, 4, 8, zlib.compress(rows)))
    header = pngdecode.parse_header(path.read_bytes())
    assert pngdecode._fast(path.read_bytes(), header) is None
    with pytest.raises(pngdecode.UnreadablePngError, match="bad-filter.png"):
        pngdecode.decode_png(path)


def test_image_data_split_over_idat_chunks_is_joined_and_a_gap_sends_the_file_to_pil(tmp_path):
    """The spec allows the image data in several consecutive IDATs; another chunk between them is invalid."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = b"".join(b"\x00" + bytes([value] * 8) for value in range(4))  # 4 rows of 8 pixels, no filter
    compressed = zlib.compress(rows)
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 4, 8, 0, 0, 0, 0))
    idats = [chunk(b"IDAT", compressed[:5]), chunk(b"IDAT", compressed[5:])]
    split = pngdecode.PNG_SIGNATURE + header + idats[0] + idats[1] + chunk(b"IEND", b"")
    gap = pngdecode.PNG_SIGNATURE + header + idats[0] + chunk(b"tEXt", b"a\0b") + idats[1] + chunk(b"IEND", b"")
    assert pngdecode._plain_image_data(split) == compressed
    np.testing.assert_array_equal(
        pngdecode._fast(split, pngdecode.parse_header(split)), np.repeat(np.arange(4), 8).reshape(4, 8)
    )
    assert pngdecode._plain_image_data(gap) is None and pngdecode._fast(gap, pngdecode.parse_header(gap)) is None
