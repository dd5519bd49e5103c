"""`cityseg prepare`: write the `*_labelTrainIds.png` files training reads, from the polygon JSONs.

Each file is rendered by the official `cityscapesscripts.preparation.json2labelImg.json2labelImg(json,
png, "trainIds")`, so the output equals what `csCreateTrainIdLabelImgs` writes, pixel for pixel; unlike
that script it needs no environment variable, runs on all cores, skips files that are already up to
date, and writes each PNG atomically so an interrupted run never leaves a half-written label that a
later run would skip as current.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import secrets
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from cityseg.errors import UserError

# Worker processes import this module, so it stays free of torch: cityseg.data is imported lazily.
COARSE_DIR = "gtCoarse"
COARSE_POLYGONS_SUFFIX = "_gtCoarse_polygons.json"
_CHUNK = 16  # files per worker task: enough to hide the inter-process round trip


@dataclass
class PrepareResult:
    """How many label images were written and how many were already up to date."""

    converted: int
    skipped: int


def output_path(json_path: Path) -> Path:
    """`..._gtFine_polygons.json` -> `..._gtFine_labelTrainIds.png` (same for gtCoarse), as the official script names it."""
    return json_path.with_name(json_path.name.replace("_polygons.json", "_labelTrainIds.png"))


def _is_up_to_date(json_path: Path, out_path: Path) -> bool:
    try:
        return out_path.stat().st_mtime_ns >= json_path.stat().st_mtime_ns
    except FileNotFoundError:
        return False


def convert_one(json_path: Path, out_path: Path) -> None:
    """Render one JSON with the official converter into a temp PNG beside the output, then rename it into place."""
    from cityscapesscripts.preparation.json2labelImg import json2labelImg

    # PIL creates the temp file itself (normal permissions) and picks the PNG encoder from its suffix.
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp.png")
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):  # the converter prints its errors before sys.exit
            json2labelImg(str(json_path), str(tmp), "trainIds")
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, out_path)
    except SystemExit:
        reason = " ".join(captured.getvalue().split("USAGE:")[0].split()) or "the converter gave up"
        raise UserError(
            f"cannot convert {json_path}: {reason}. The file is not a valid Cityscapes polygon annotation; "
            "re-extract it from the Cityscapes zip."
        ) from None
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        from cityseg.data import describe_error

        raise UserError(
            f"cannot convert {json_path}: it is corrupt or not a Cityscapes polygon annotation "
            f"({describe_error(exc)}); re-extract it from "
            "the Cityscapes zip."
        ) from None
    finally:
        tmp.unlink(missing_ok=True)


def _convert_chunk(pairs: list[tuple[Path, Path]]) -> int:
    for json_path, out_path in pairs:
        convert_one(json_path, out_path)
    return len(pairs)


def find_annotations(root: Path, coarse: bool = False) -> list[Path]:
    """Every polygon JSON the official script would convert: gtFine/*/*/, and gtCoarse/*/*/ with `coarse`."""
    from cityseg.data import FINE_DIR, POLYGONS_SUFFIX

    files = sorted((root / FINE_DIR).glob(f"*/*/*{POLYGONS_SUFFIX}"))
    if coarse:
        if not (root / COARSE_DIR).is_dir():
            raise UserError(
                f"--coarse was given but {root / COARSE_DIR} does not exist; unzip gtCoarse.zip into {root} "
                "or drop --coarse."
            )
        files += sorted((root / COARSE_DIR).glob(f"*/*/*{COARSE_POLYGONS_SUFFIX}"))
    return files


def _run_parallel(todo: list[tuple[Path, Path]], workers: int, bar: tqdm) -> None:
    """Convert chunks in worker processes; the first failure cancels what has not started and is re-raised."""
    chunks = [todo[i : i + _CHUNK] for i in range(0, len(todo), _CHUNK)]
    # spawn: workers start clean (no inherited torch/OpenMP threads) and import only this light module.
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(chunks)), mp_context=multiprocessing.get_context("spawn")
    )
    try:
        pending = {pool.submit(_convert_chunk, chunk) for chunk in chunks}
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in done:
                bar.update(future.result())  # re-raises a worker's UserError here
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def prepare_dataset(
    root: Path, workers: int | None = None, coarse: bool = False, progress: bool = True
) -> PrepareResult:
    """Write every missing or outdated `*_labelTrainIds.png` under ROOT in parallel; returns converted/skipped counts."""
    from cityseg.data import check_polygons

    root = Path(root)
    check_polygons(root)
    pairs = [(j, output_path(j)) for j in find_annotations(root, coarse)]
    todo = [(j, o) for j, o in pairs if not _is_up_to_date(j, o)]
    if workers is None:
        from cityseg.cli.common import default_workers

        workers = default_workers()
    with tqdm(total=len(todo), desc="prepare trainIds", unit="file", disable=not progress or not todo) as bar:
        if workers <= 1 or len(todo) <= _CHUNK:
            for json_path, out_path in todo:
                convert_one(json_path, out_path)
                bar.update(1)
        else:
            _run_parallel(todo, workers, bar)
    return PrepareResult(converted=len(todo), skipped=len(pairs) - len(todo))
