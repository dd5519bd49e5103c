"""Any user's photos as prediction inputs: find them (files, folders, globs) and decode them upright.

Output names mirror the inputs' folders below the deepest folder that holds them all, so two
`frame_0001.jpg` in different folders never share an output name: `--images day1 day2` writes
`OUT/day1/frame_0001_*.png` and `OUT/day2/frame_0001_*.png`, and a single folder `--images day1`
writes `OUT/frame_0001_*.png` (its subfolders mirrored below OUT). Two inputs that would still
share a name (`x.jpg` and `x.png` side by side) are refused before any work, naming both.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cityseg.errors import UserError, describe_error, format_paths

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
# Modes whose pixels are 8-bit samples; 16-bit and float images would be clipped, not converted.
_EIGHT_BIT_MODES = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}


@dataclass(frozen=True)
class ImageInput:
    """One image to predict: where it is and the output stem its files get (`a/b/x` -> `a/b/x_*.png`)."""

    path: Path
    key: str


def _is_hidden(path: Path, below: Path) -> bool:
    # Dot files include macOS `._x.jpg` resource forks, which look like JPEGs but are not.
    return any(part.startswith(".") for part in path.relative_to(below).parts)


def _folder_images(folder: Path) -> list[Path]:
    """Every PNG/JPEG/WebP below `folder` (any depth, suffix in any case), hidden ones left out."""
    return sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and not _is_hidden(path, folder)
    )


def _glob_base(pattern: str) -> Path:
    """The folder part of a glob before its first wildcard: `shots/*/img_*.jpg` -> `shots`."""
    parts = Path(pattern).parts
    first_wild = next(index for index, part in enumerate(parts) if glob.has_magic(part))
    return Path(*parts[:first_wild]) if first_wild else Path(".")


def _expand(argument: str | Path) -> tuple[Path, list[Path]]:
    """(folder the names are relative to, image files) of one --images argument."""
    path = Path(argument)
    if path.is_dir():
        return path, _folder_images(path)
    if path.is_file():
        return path.parent, [path]  # named explicitly: tried whatever its suffix; decoding decides
    if glob.has_magic(str(argument)):
        matches = sorted(Path(p) for p in glob.glob(str(argument), recursive=True))
        files = [p for p in matches if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        for folder in (p for p in matches if p.is_dir()):
            files.extend(_folder_images(folder))
        if not files:
            raise UserError(
                f"no PNG, JPEG or WebP image matches {argument}; check the pattern (quote it so the shell does "
                "not expand it, and use ** for any depth)."
            )
        return _glob_base(str(argument)), files
    raise UserError(f"{argument} does not exist; pass image files, folders (searched recursively) or glob patterns.")


def _check_apart(argument: str | Path, base: Path, files: list[Path], out_dir: Path) -> None:
    """Outputs must not land where inputs are searched: the next run would take them for photos."""
    out = Path(os.path.abspath(out_dir))
    searched = not Path(argument).is_file()  # a folder or a glob is walked; a named file is not
    base = Path(os.path.abspath(base))
    nested = (searched and (out.is_relative_to(base) or base.is_relative_to(out))) or any(
        Path(os.path.abspath(path)).is_relative_to(out) for path in files
    )
    if nested:
        raise UserError(
            f"the output folder {out_dir} and the input {argument} are inside one another, so a later run would "
            "read the predictions as photos; choose an --out folder outside the image folders."
        )


def find_images(
    arguments: Sequence[str | Path], limit: int | None = None, out_dir: Path | None = None
) -> list[ImageInput]:
    """The images named by files, folders and globs, in a stable order, each with a unique output stem.

    `limit` keeps the first N (in that order), e.g. for a preview in a notebook; `out_dir`, when
    given, is refused if it is inside an input folder or holds inputs.
    """
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
        for path in found:
            files.setdefault(os.path.abspath(path), path)  # the same file named twice is predicted once
    common = Path(os.path.commonpath(bases))  # every file lies below its argument's base
    by_key: dict[str, list[Path]] = {}
    for absolute, path in sorted(files.items()):
        key = Path(absolute).relative_to(common).with_suffix("").as_posix()
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


def read_user_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB, turned upright by its EXIF orientation; unreadable files name themselves."""
    path = Path(path)
    try:
        with Image.open(path) as opened:
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
