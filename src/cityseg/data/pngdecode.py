"""Fast, safe decoding of single-channel label PNGs (labelIds, instanceIds, predictions), PIL as the fallback,
and a fast encoding for the label maps cityseg writes itself.

Decoding the three PNGs of a frame is most of what an evaluation costs, and PIL is slow at it. One core
per 2048x1024 synthetic label file as PIL writes them, on the 2-core development machine (labelIds /
16-bit instanceIds; bench/png_decode.py, BENCHMARKS.md): PIL ~12 / 22 ms, libpng (imagecodecs) ~7.5 / 16
ms, Wuffs (pywuffs, optional: no wheels) about libpng's, and cityseg's own path ~2.8 / 5 ms: zlib-ng
(imagecodecs) inflates the image data in one call, and the row filters, where the libraries above spend
most of their time, are undone by the small C extension cityseg.data._pngrows (built by `pip install -e
.`). So files that are plain grayscale (8- or 16-bit, not interlaced, no chunks that could change the
pixels: what Cityscapes and `cityseg predict` write) go to the fastest decoder installed: cityseg's, else
Wuffs, else libpng;
everything else (palette images, other depths or colour types, interlacing, tRNS, gAMA...) and every file
the fast decoder refuses goes to PIL, which is what the official script uses. The values are PIL's either
way (tests/data/test_pngdecode.py compares them on clean and on damaged files).

Safety: the files are the user's, and a damaged PNG must be a clear error, never a crash (torchvision's
libpng wrapper segfaults on some). Before any decoder sees a file, the header is checked here (signature,
an IHDR chunk of the right length and checksum, sizes within PIL's decompression-bomb limit) and every
chunk's CRC is verified (PIL checks those before IDAT, so the fast path never accepts a file PIL would
refuse there). cityseg's path then needs the image data to inflate to exactly the size the header
promises, zlib's own checksum included, before the C code sees it; the C code checks the two buffer sizes
against each other and reads nothing else. Wuffs is memory-safe by construction and libpng's errors come
back as exceptions through imagecodecs. Every decoder is fuzzed in tests/data/test_pngdecode.py, each case
in a subprocess so a crash fails the test instead of killing pytest. All release the GIL, so threads decode
in parallel; pyspng was not taken: it holds the GIL while decoding and ignores checksums.
"""

from __future__ import annotations

import io
import struct
import sys
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cityseg.errors import UserError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IHDR_END = 33  # signature (8) + length (4) + "IHDR" (4) + 13 bytes of fields + CRC (4)
_GRAYSCALE = 0
_MODE_OF_DEPTH = {8: "L", 16: "I;16"}  # PIL's mode for plain grayscale of that bit depth
# Chunks that cannot change grayscale pixel values; any other (tRNS, gAMA, sBIT, PLTE, ...) sends the file to PIL.
_PLAIN_CHUNKS = frozenset({b"IHDR", b"IDAT", b"IEND", b"tEXt", b"zTXt", b"iTXt", b"pHYs", b"tIME"})
# A fast decoder: (the file's bytes, its header, its image data: the IDAT chunks joined) -> (H, W) pixels, or None
Decoder = Callable[[bytes, "PngHeader", bytes], "np.ndarray | None"]
_SCRATCH_LIMIT = 16 * 2**20  # inflate buffers up to this size are kept per thread (a 2048x1024 16-bit file: 4 MB)


def _zlibng_rows() -> Decoder | None:
    """zlib-ng (imagecodecs) inflates, cityseg's C extension undoes the row filters; None when either is missing."""
    try:
        import imagecodecs

        from cityseg.data._pngrows import unfilter
    except ImportError:
        return None
    if not imagecodecs.ZLIBNG.available:  # builds of imagecodecs may leave codecs out
        return None
    zlibng_decode = imagecodecs.zlibng_decode
    local = threading.local()  # a reused buffer: a fresh one costs a page fault per 4 KB, ~1.5 ms per 2 MB here
    swap16 = sys.byteorder == "little"  # PNG's 16-bit samples are big-endian

    def decode(data: bytes, header: PngHeader, image_data: bytes) -> np.ndarray | None:
        pixel_bytes = header.bit_depth // 8
        row_bytes = header.width * pixel_bytes
        size = header.height * (row_bytes + 1)  # each row: its filter-type byte, then its samples
        buffer = getattr(local, "buffer", None)
        if buffer is None or len(buffer) < size:
            buffer = bytearray(size)
            if size <= _SCRATCH_LIMIT:
                local.buffer = buffer
        # raises when the data would inflate to more than `size` bytes, or is damaged (zlib's Adler-32 included)
        filtered = zlibng_decode(image_data, out=memoryview(buffer)[:size])
        if len(filtered) != size:
            return None
        pixels = np.empty((header.height, header.width), np.uint8 if pixel_bytes == 1 else np.uint16)
        unfilter(filtered, pixels, row_bytes, pixel_bytes, swap16)
        return pixels

    return decode


def _wuffs() -> Decoder | None:
    """Wuffs' PNG decoder (pywuffs), one decoder object per thread and bit depth; None when not installed."""
    try:
        from pywuffs import ImageDecoderQuirks, ImageDecoderType, PixelFormat
        from pywuffs.aux import ImageDecoder, ImageDecoderConfig
    except ImportError:
        return None
    local = threading.local()

    def decode(data: bytes, header: PngHeader, image_data: bytes) -> np.ndarray | None:
        decoders = getattr(local, "decoders", None)
        if decoders is None:
            decoders = local.decoders = {}
            for depth, pixel_format in ((8, PixelFormat.Y), (16, PixelFormat.Y_16LE)):
                config = ImageDecoderConfig()
                config.enabled_decoders = [ImageDecoderType.PNG]
                config.pixel_format = pixel_format
                config.quirks = {ImageDecoderQuirks.IGNORE_CHECKSUM: 0}  # pywuffs ignores zlib's Adler-32 unless told
                decoders[depth] = ImageDecoder(config)
        result = decoders[header.bit_depth].decode(data)
        if result.error_message:
            return None
        pixels = result.pixbuf  # (H, W, 1) uint8, or (H, W, 2) uint8 holding little-endian uint16
        return pixels.view("<u2")[..., 0] if header.bit_depth == 16 else pixels[..., 0]

    return decode


def _libpng() -> Decoder | None:
    """libpng through imagecodecs; None when not installed."""
    try:
        from imagecodecs import png_decode
    except ImportError:
        return None
    return lambda data, header, image_data: png_decode(data)


# fastest first
_FOUND = (("zlibng-rows", _zlibng_rows()), ("wuffs", _wuffs()), ("libpng", _libpng()))
_BACKENDS: dict[str, Decoder] = {name: found for name, found in _FOUND if found is not None}
# The decoder plain grayscale files go to (tests switch it); None: PIL for everything (same values, slower).
BACKEND: str | None = next(iter(_BACKENDS), None)


class UnreadablePngError(UserError):
    """A PNG that neither decoder can read (truncated, corrupt, not a PNG at all)."""

    def __init__(self, path: Path | str, detail: str) -> None:
        super().__init__(f"cannot read {path} as a PNG ({detail})")
        self.path = Path(path)
        self.detail = detail

    def __reduce__(self):  # picklable across worker processes despite the two-argument constructor
        return type(self), (self.path, self.detail)


@dataclass(frozen=True)
class PngHeader:
    """The IHDR fields that decide how a PNG is decoded."""

    width: int
    height: int
    bit_depth: int
    color_type: int
    interlace: int

    @property
    def mode(self) -> str | None:
        """PIL's mode for plain grayscale 8/16-bit images, None for anything else (ask PIL)."""
        if self.color_type != _GRAYSCALE or self.interlace != 0:
            return None
        return _MODE_OF_DEPTH.get(self.bit_depth)


def parse_header(data: bytes) -> PngHeader | None:
    """The IHDR of PNG bytes (only the first 33 are needed), or None when it is not a well-formed PNG header."""
    if len(data) < _IHDR_END or data[:8] != PNG_SIGNATURE or data[8:16] != b"\x00\x00\x00\x0dIHDR":
        return None
    if zlib.crc32(data[12:29]) != struct.unpack(">I", data[29:33])[0]:
        return None
    width, height, depth, color, compression, filtering, interlace = struct.unpack(">IIBBBBB", data[16:29])
    if not width or not height or compression or filtering or interlace > 1:
        return None
    return PngHeader(width, height, depth, color, interlace)


def read_header(path: Path) -> PngHeader | None:
    """The IHDR of a PNG file from its first bytes, None when it is not well formed (then ask PIL)."""
    with open(path, "rb") as handle:
        return parse_header(handle.read(_IHDR_END))


def image_size(path: Path) -> tuple[int, int]:
    """(W, H) of a PNG from its header, by PIL for anything unusual; UnreadablePngError if neither can."""
    header = read_header(path)
    if header is not None:
        return header.width, header.height
    try:
        with Image.open(path) as image:
            return image.size
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for corrupt files
        raise UnreadablePngError(path, describe(exc)) from None


def header_mode_and_size(path: Path) -> tuple[str, tuple[int, int]]:
    """(PIL mode, (W, H)) from the header, without decoding; PIL opens the file when the header is unusual."""
    header = read_header(path)
    if header is not None and header.mode is not None:
        return header.mode, (header.width, header.height)
    try:
        with Image.open(path) as image:
            return image.mode, image.size
    except Exception as exc:  # noqa: BLE001 - a corrupt file can make PIL raise almost anything
        raise UnreadablePngError(path, describe(exc)) from None


def decode_png(path: Path) -> tuple[np.ndarray, str]:
    """(pixels, PIL mode) of a PNG file: (H, W) uint8 or uint16 for plain grayscale, else whatever PIL gives.

    The same values as `np.asarray(PIL.Image.open(path))`; UnreadablePngError for a file PIL cannot read.
    """
    data = Path(path).read_bytes()
    header = parse_header(data)
    if BACKEND is not None and header is not None and header.mode is not None and _fits_pil_limit(header):
        pixels = _fast(data, header)
        if pixels is not None:
            return pixels, header.mode
    return _pil_decode(data, path)


def describe(exc: BaseException) -> str:
    """'Type: first line of the message', for one-line error reports."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


def _fits_pil_limit(header: PngHeader) -> bool:
    """Above PIL's decompression-bomb limit PIL warns or refuses; let it (and never allocate gigabytes here)."""
    limit = Image.MAX_IMAGE_PIXELS
    return limit is None or header.width * header.height <= limit


def _plain_image_data(data: bytes) -> bytes | None:
    """The image data (the IDAT chunks joined) when every chunk up to IEND (or the end of the data) is whole,
    of a kind that cannot change pixel values, with a matching CRC, and the IDATs are consecutive (as the PNG
    spec requires); else None."""
    position, parts, previous = 8, [], b""
    while position < len(data):
        if position + 12 > len(data):
            return None
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        end = position + 8 + length
        if kind not in _PLAIN_CHUNKS or end + 4 > len(data):
            return None
        if zlib.crc32(data[position + 4 : end]) != struct.unpack(">I", data[end : end + 4])[0]:
            return None
        if kind == b"IDAT":
            if parts and previous != b"IDAT":
                return None
            parts.append(data[position + 8 : end])
        previous = kind
        if kind == b"IEND":
            break
        position = end + 4
    return b"".join(parts)


def _fast(data: bytes, header: PngHeader) -> np.ndarray | None:
    """Decoded by the fast backend, or None when the file is unusual, damaged or decodes to anything unexpected
    (PIL decides then)."""
    image_data = _plain_image_data(data)
    if image_data is None:
        return None
    try:
        pixels = _BACKENDS[BACKEND](data, header, image_data)
    except Exception:  # noqa: BLE001 - the backend's errors (PngError, ValueError, ...): PIL gets the last word
        return None
    expected = np.uint8 if header.bit_depth == 8 else np.uint16
    if pixels is None or pixels.shape != (header.height, header.width) or pixels.dtype != expected:
        return None
    return pixels


def _pil_decode(data: bytes, path: Path) -> tuple[np.ndarray, str]:
    """(np.asarray of the PIL image, its mode), decoded now so truncation raises here."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return np.asarray(image), image.mode
    except Exception as exc:  # noqa: BLE001 - a corrupt file can make PIL or zlib raise almost anything
        raise UnreadablePngError(path, describe(exc)) from None


# "Up" filtering at zlib level 1: on Cityscapes-like 2048x1024 label maps ~5x faster to write than PIL's
# defaults (adaptive filters, level 6) and 3-4x faster to decode, for files ~1.7x larger (24 KB instead of
# 13 KB; bench/label_png.py, BENCHMARKS.md `label-png`).
# Predictions are written once per run and decoded by every evaluation, so decoding speed is what counts.
_LABEL_PNG_LEVEL, _LABEL_PNG_FILTER_UP = 1, 32  # zlib level; libpng's PNG_FILTER_UP flag
LABEL_PNG_ENCODING = "up-filter-zlib1"  # names the encoding, e.g. for files generated once and reused


def encode_label_png(labels: np.ndarray) -> bytes:
    """PNG bytes of an (H, W) uint8 label map (8-bit grayscale: what PIL and the official script read as mode L)."""
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise ValueError(f"encode_label_png takes (H, W) uint8 label maps, got {labels.dtype} {labels.shape}")
    # imagecodecs is a requirement; imported here so that decoding still works without it (PIL fallback)
    from imagecodecs import png_encode

    return bytes(png_encode(np.ascontiguousarray(labels), level=_LABEL_PNG_LEVEL, filter=_LABEL_PNG_FILTER_UP))
