"""Any user's photos as prediction inputs: find them (files, folders, globs) and decode them upright.

Output names mirror the inputs' folders below the deepest folder holding them all (`--images day1 day2` writes
`OUT/day1/x_*.png`); inputs that would share a name (`x.jpg` beside `x.png`) are refused before any work. Folders
are walked through links but never twice, so a link loop ends; each file is predicted once.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import stat
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cityseg.errors import UserError, describe_error, format_paths

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
# Modes whose pixels are 8-bit samples; 16-bit and float images would be clipped, not converted.
_EIGHT_BIT_MODES = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}
_KINDS = {"a FIFO (named pipe)": stat.S_ISFIFO, "a character device": stat.S_ISCHR, "a socket": stat.S_ISSOCK}


@dataclass(frozen=True)
class ImageInput:
    """One image to predict: where it is and the output stem its files get (`a/b/x` -> `a/b/x_*.png`)."""

    path: Path
    key: str


def _walk(folder: Path) -> Iterator[tuple[tuple[str, ...], Path]]:
    """(parts relative to `folder`, path) of everything below it, dot files (macOS `._x.jpg` forks) left out; links
    are followed, but never into a folder already visited."""
    visited = {os.path.realpath(folder)}
    for top, folders, files in os.walk(folder, followlinks=True):
        relative = Path(top).relative_to(folder).parts
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        for name in list(folders):
            real = os.path.realpath(os.path.join(top, name))
            if real in visited:
                folders.remove(name)
            visited.add(real)
        for name in sorted(folders + [f for f in files if not f.startswith(".")]):
            yield (*relative, name), Path(top) / name


def _folder_images(folder: Path) -> list[Path]:
    """Every regular PNG/JPEG/WebP file below `folder` (any depth, suffix in any case)."""
    return sorted(path for _, path in _walk(folder) if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())


def _matches(parts: Sequence[str], pattern: Sequence[str]) -> bool:
    """Glob matching of path parts as `glob.glob(recursive=True)` does it: `**` is any number of folders."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_matches(parts[skip:], pattern[1:]) for skip in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _matches(parts[1:], pattern[1:])


def _expand_glob(argument: str) -> tuple[Path, list[Path]]:
    """(folder before the first wildcard, images matched or inside matched folders), walked loop-safely."""
    parts = Path(argument).parts
    first_wild = next(index for index, part in enumerate(parts) if glob.has_magic(part))
    base = Path(*parts[:first_wild]) if first_wild else Path(".")
    files = []
    for relative, path in _walk(base) if base.is_dir() else ():
        if _matches(relative, parts[first_wild:]):
            files += _folder_images(path) if path.is_dir() else [path]
    files = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if not files:
        raise UserError(
            f"no PNG, JPEG or WebP image matches {argument}; check the pattern (quote it so the shell does "
            "not expand it, and use ** for any depth)."
        )
    return base, files


def _expand(argument: str | Path) -> tuple[Path, list[Path]]:
    """(folder the names are relative to, image files) of one --images argument."""
    path = Path(argument)
    if path.is_dir():
        return path, _folder_images(path)
    if path.is_file():
        return path.parent, [path]  # named explicitly: tried whatever its suffix; decoding decides
    if os.path.lexists(path):  # there, but neither a file nor a folder: say what it is (opening it could block)
        if path.exists():
            kind = next((name for name, test in _KINDS.items() if test(path.stat().st_mode)), "not a regular file")
        else:
            kind = f"a symbolic link to {os.readlink(path)}, which does not exist"
        raise UserError(
            f"{argument} is {kind}; only regular image files (PNG, JPEG, WebP) and folders are read. Pass the "
            "photos' files, folders or glob patterns instead."
        )
    if glob.has_magic(str(argument)):
        return _expand_glob(str(argument))
    raise UserError(f"{argument} does not exist; pass image files, folders (searched recursively) or glob patterns.")


def _check_apart(argument: str | Path, base: Path, files: list[Path], out_dir: Path) -> None:
    """Outputs must not land where inputs are searched (the next run would take them for photos); real paths are
    compared, so links are seen through."""
    out = Path(os.path.realpath(out_dir))
    searched = not Path(argument).is_file()  # a folder or a glob is walked; a named file is not
    base = Path(os.path.realpath(base))
    nested = (searched and (out.is_relative_to(base) or base.is_relative_to(out))) or any(
        Path(os.path.realpath(path)).is_relative_to(out) for path in files
    )
    if nested:
        raise UserError(
            f"the output folder {out_dir} and the input {argument} are inside one another, so a later run would "
            "read the predictions as photos; choose an --out folder outside the image folders."
        )


def find_images(
    arguments: Sequence[str | Path], limit: int | None = None, out_dir: Path | None = None
) -> list[ImageInput]:
    """The images named by files, folders and globs, in a stable order, each with a unique output stem; `limit`
    keeps the first N, and `out_dir` is refused if it is inside an input folder or holds inputs."""
    if isinstance(arguments, (str, Path)):
        arguments = [arguments]
    if not arguments:
        raise UserError("no images given; pass --images with files, folders or glob patterns.")
    bases, files = [], {}
    for argument in arguments:
        base, found = _expand(argument)
        if not found:
            raise UserError(f"{argument} holds no PNG, JPEG or WebP image (searched recursively, dot files skipped).")
        if out_dir is not None:
            _check_apart(argument, base, found, Path(out_dir))
        bases.append(os.path.abspath(base))
        for path in found:  # a file reached twice (named twice, or through links) is predicted once
            files.setdefault(os.path.realpath(path), path)
    common = Path(os.path.commonpath(bases))  # every file lies below its argument's base
    by_key: dict[str, list[Path]] = {}
    for path in sorted(files.values(), key=os.path.abspath):
        key = Path(os.path.abspath(path)).relative_to(common).with_suffix("").as_posix()
        by_key.setdefault(key, []).append(path)
    clashes = [paths for paths in by_key.values() if len(paths) > 1]
    if clashes:
        raise UserError(
            f"{len(clashes)} group(s) of images would get the same output names because they differ only in their "
            f"suffix ({'; '.join(format_paths(group) for group in clashes[:3])}). Rename one of each, or predict "
            "them in separate runs with different --out folders."
        )
    inputs = [ImageInput(path=paths[0], key=key) for key, paths in by_key.items()]
    return inputs[:limit] if limit is not None else inputs


def read_user_image(path: Path, max_pixels: int | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB, turned upright by its EXIF orientation; unreadable files name themselves, and a photo
    over `max_pixels` is refused from its header."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # max_pixels is the guard here
            opened = Image.open(path)
        with opened:
            pixels = opened.width * opened.height
            if max_pixels is not None and pixels > max_pixels:
                raise UserError(
                    f"{path} is {opened.width}x{opened.height}, {pixels:,} pixels: more than --max-pixels "
                    f"{max_pixels:,}, the limit that bounds the memory one photo needs (`cityseg predict --help`). "
                    f"Pass --max-pixels {pixels} to predict it anyway, or make the photo smaller."
                )
            if opened.mode not in _EIGHT_BIT_MODES:
                raise UserError(
                    f"{path} is a {opened.mode} image (16-bit or floating point); the model takes 8-bit colour "
                    "images. Convert it to 8-bit RGB (PNG or JPEG) first."
                )
            upright = ImageOps.exif_transpose(opened)  # decodes the whole file: truncation shows up here
            return np.array(upright.convert("RGB"))  # (H, W, 3) uint8, writable
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise UserError(
            f"{path} cannot be decoded as an image ({describe_error(exc)}): it is damaged, truncated, or not a "
            "PNG, JPEG or WebP file. Copy it again or remove it from the inputs; the other images are predicted."
        ) from None
