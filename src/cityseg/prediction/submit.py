"""A Cityscapes benchmark submission for pixel-level semantic labeling: one zip of labelIds PNGs, each named
`<city>_<seq>_<frame>*.png` (the official matcher's rule), single channel, full resolution. The PNGs go flat and
uncompressed into the zip after every check the server would fail or silently mis-score.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from cityseg.errors import UserError
from cityseg.evaluation.checks import (
    Problems,
    check_headers,
    find_pngs,
    group_by_name,
    match_to_frames,
    scan_values,
    single_matches,
    warn_if_train_ids,
)
from cityseg.fileio import atomic_write_bytes
from cityseg.system import default_workers

TEST_IMAGES = 1525  # images in the real Cityscapes test split
IMAGE_SIZE = (2048, 1024)  # (W, H) of every real Cityscapes image


def _test_frames(root: Path) -> dict[str, tuple[int, int]]:
    """Test-split frame id -> (W, H) of its camera image, read from the PNG headers."""
    from cityseg.data.frames import list_frames

    sizes = {}
    for frame in list_frames(Path(root), "test", label_source=None):
        try:
            with Image.open(frame.image) as image:
                sizes[frame.id] = image.size
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for corrupt files
            raise UserError(
                f"cannot read test image {frame.image} ({exc.__class__.__name__}); re-extract it."
            ) from None
    return sizes


def _select_predictions(
    pred_dir: Path, expect: int | None, root: Path | None, size: tuple[int, int] | None, problems: Problems
) -> tuple[dict[str, Path], Callable[[str], tuple[int, int]]]:
    """Frame id -> its one PNG, and the expected size per frame; name and count problems are recorded."""
    pngs = find_pngs(pred_dir)
    if root is not None:
        sizes = _test_frames(root)
        if expect is not None and expect != len(sizes):
            raise UserError(
                f"--expect {expect} contradicts --root {root}, whose test split has {len(sizes)} images; give one of them."
            )
        matches, extra = match_to_frames(pngs, sizes)
        for path in extra:
            problems.add("extra", str(path))
        return single_matches(matches, problems), sizes.__getitem__
    matches, misnamed = group_by_name(pngs)
    for path in misnamed:
        problems.add("badly named", str(path))
    chosen = single_matches(matches, problems)
    wanted = TEST_IMAGES if expect is None else expect
    if len(matches) != wanted:
        hint = (
            "(the real test split; use --expect N or --root ROOT for another set)" if expect is None else "(--expect)"
        )
        problems.add("count", f"{len(matches)} frame(s) found, {wanted} expected {hint}")
    fixed = tuple(size) if size is not None else IMAGE_SIZE
    return chosen, lambda _frame_id: fixed


def _holds_exactly(out_zip: Path, chosen: dict[str, Path]) -> bool:
    """Whether a zip holds exactly these PNGs (names, sizes, CRC-32): an earlier run of the same submission."""
    try:
        with zipfile.ZipFile(out_zip) as archive:
            held = {info.filename: (info.file_size, info.CRC) for info in archive.infolist()}
    except (OSError, zipfile.BadZipFile):
        return False
    return held == {path.name: (path.stat().st_size, zlib.crc32(path.read_bytes())) for path in chosen.values()}


def make_submission(
    pred_dir: Path,
    out_zip: Path,
    expect: int | None = None,
    *,
    root: Path | None = None,
    size: tuple[int, int] | None = None,
    overwrite: bool = False,
    workers: int | None = None,
) -> Path:
    """Check test-split predictions the way the benchmark server would (TEST_IMAGES frames of IMAGE_SIZE unless
    `expect`/`size` say otherwise, or the test frames and sizes under `root`), then zip them flat, atomically.
    An existing `out_zip` is replaced only with `overwrite`, or when it holds exactly these predictions."""
    pred_dir, out_zip = Path(pred_dir), Path(out_zip)
    if out_zip.suffix.lower() != ".zip":
        raise UserError(f"submission file {out_zip} must end in .zip (the benchmark server takes a zip archive).")
    if out_zip.is_dir():
        raise UserError(f"{out_zip} is a folder; pass a file name such as submission.zip.")
    problems = Problems()
    chosen, sizes = _select_predictions(pred_dir, expect, root, size, problems)
    if out_zip.exists() and not overwrite and not _holds_exactly(out_zip, chosen):
        raise UserError(
            f"{out_zip} already exists with other contents and was left untouched; pass --overwrite to replace it, "
            "or another name."
        )
    check_headers(chosen, sizes, problems)
    problems.raise_if_any(f"the predictions in {pred_dir} are not a valid submission")
    counts = scan_values(list(chosen.values()), workers or default_workers(), problems)
    problems.raise_if_any(f"the predictions in {pred_dir} are not a valid submission")
    warn_if_train_ids(counts, pred_dir)

    def write(handle) -> None:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED) as archive:
            for frame_id in sorted(chosen):
                archive.write(chosen[frame_id], arcname=chosen[frame_id].name)

    atomic_write_bytes(out_zip, write)
    os.chmod(out_zip, 0o644)  # mkstemp's private 0600 would surprise whoever uploads it
    return out_zip
