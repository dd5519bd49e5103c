"""`cityseg prepare`: write the `*_labelTrainIds.png` files training reads, from the polygon JSONs.

Each file is rendered by the official converter's steps (`json2labelImg(json, png, "trainIds")`, with a size check),
so it equals `csCreateTrainIdLabelImgs`' output pixel for pixel; on all cores, each PNG written atomically. A file is
current when `cityseg-prepared.json` in its split folder records its JSON's sha256 and the PNG written from it
(a line appended per file): content, not dates, and a killed run keeps its work.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import multiprocessing
import os
import re
import secrets
import signal
import socket
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from cityseg.errors import UserError, describe_error, name_the_file
from cityseg.fileio import sync_to_disk
from cityseg.locks import die_with_parent

# Worker processes import this module, so it stays free of torch: cityseg.data.frames is imported lazily.
COARSE_DIR = "gtCoarse"
COARSE_POLYGONS_SUFFIX = "_gtCoarse_polygons.json"
RECORD_FILE = "cityseg-prepared.json"  # per split folder: what each PNG was converted from (visible: not debris)
RECORD_FORMAT = "cityseg-prepared"
_CHUNK = 16  # files per worker task: enough to hide the inter-process round trip
# Temp files: ".<output name>.<host>-<pid>-<random>.tmp.png"; host and pid tell a dead writer's leftovers.
_OUTPUT_NAME = rf".+_labelTrainIds\.png|{re.escape(RECORD_FILE)}"
_TEMP_NAME = re.compile(rf"^\.(?P<output>{_OUTPUT_NAME})\.(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]{{8}}\.tmp\.png$")


@dataclass
class PrepareResult:
    converted: int  # label images written
    skipped: int  # already up to date


def output_path(json_path: Path) -> Path:
    """`..._gtFine_polygons.json` -> `..._gtFine_labelTrainIds.png` (same for gtCoarse), as the official script."""
    return json_path.with_name(json_path.name.replace("_polygons.json", "_labelTrainIds.png"))


def _source_stamp(json_path: Path) -> list:
    """[bytes, sha256] of a polygon JSON: what its PNG is converted from."""
    data = json_path.read_bytes()
    return [len(data), hashlib.sha256(data).hexdigest()]


def _output_stamp(out_path: Path) -> list | None:
    """[bytes, mtime_ns] of a PNG as written (None when missing): a PNG replaced since is converted again."""
    try:
        stat = out_path.stat()
    except FileNotFoundError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def _read_record(split_dir: Path) -> dict:
    """{json path relative to the split folder: {"json": stamp, "png": stamp}} from the record's lines (a format
    line, then one per converted file, the latest winning; a torn last line skipped); {} if absent."""
    try:
        lines = (split_dir / RECORD_FILE).read_bytes().split(b"\n")
    except OSError:
        return {}
    files: dict = {}
    for line in lines[1:] if lines[0].strip() == json.dumps({"format": RECORD_FORMAT}).encode() else ():
        try:
            item = json.loads(line)
            files[item.pop("file")] = item
        except (ValueError, RecursionError, AttributeError, TypeError, KeyError):
            continue  # a torn last line of a killed run
    return files


def _write_record(split_dir: Path, files: dict) -> None:
    lines = [{"format": RECORD_FORMAT}, *({"file": key, **value} for key, value in sorted(files.items()))]
    tmp = _temp_path(split_dir / RECORD_FILE)  # named like the PNGs' temp files: a killed writer's are removed
    try:
        with open(tmp, "w") as handle:
            handle.write("".join(json.dumps(line) + "\n" for line in lines))
            handle.flush()
            sync_to_disk(handle.fileno())
        os.replace(tmp, split_dir / RECORD_FILE)
    finally:
        tmp.unlink(missing_ok=True)


def _temp_path(out_path: Path) -> Path:
    return out_path.with_name(f".{out_path.name}.{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}.tmp.png")


def _check_canvas(annotation, json_path: Path) -> None:
    """Refuse an absurd imgWidth x imgHeight before the converter allocates it (a flipped digit can ask for 40 GB)."""
    from PIL import Image

    width, height = annotation.imgWidth, annotation.imgHeight
    limit = Image.MAX_IMAGE_PIXELS or 2**28
    if not (0 < width and 0 < height and width * height <= limit):
        raise UserError(
            f"cannot convert {json_path}: it declares a {width}x{height} image (imgWidth x imgHeight), which is "
            "empty or implausibly large (Cityscapes frames are 2048x1024); the file is corrupt, re-extract it "
            "from the Cityscapes zip."
        )


def convert_one(json_path: Path, out_path: Path) -> None:
    """Render one JSON with the official converter into a temp PNG beside the output, then rename it into place."""
    from cityscapesscripts.helpers.annotation import Annotation
    from cityscapesscripts.preparation.json2labelImg import createLabelImage

    # PIL creates the temp file itself (normal permissions) and picks the PNG encoder from its suffix.
    tmp = _temp_path(out_path)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):  # the converter prints its errors before sys.exit
            # json2labelImg(json, png, "trainIds") step by step, to check the size before drawing.
            annotation = Annotation()
            annotation.fromJsonFile(str(json_path))
            _check_canvas(annotation, json_path)
            createLabelImage(annotation, "trainIds").save(tmp)
        with open(tmp, "rb") as handle:
            sync_to_disk(handle.fileno())
        os.replace(tmp, out_path)
    except SystemExit:
        reason = " ".join(captured.getvalue().split("USAGE:")[0].split()) or "the converter gave up"
        raise UserError(
            f"cannot convert {json_path}: {reason}. The file is not a valid Cityscapes polygon annotation; "
            "re-extract it from the Cityscapes zip."
        ) from None
    except OSError as exc:  # a full disk fails inside write(), whose error names no file
        named = name_the_file(exc, out_path)
        if named is exc:
            raise
        raise named from exc
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, ArithmeticError, RecursionError) as exc:
        raise UserError(
            f"cannot convert {json_path}: it is corrupt or not a Cityscapes polygon annotation "
            f"({describe_error(exc)}); re-extract it from the Cityscapes zip."
        ) from None
    finally:
        tmp.unlink(missing_ok=True)


def _writer_is_gone(host: str, pid: int) -> bool:
    """True when the process that wrote a temp file no longer runs (only decidable on this host)."""
    if host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: alive, another user's
        return False
    # A killed worker can linger as a zombie until its new parent reaps it: it writes nothing any more.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in ("Z", "X")


def remove_stale_temp_files(folders: Iterable[Path]) -> int:
    """Delete temp PNGs that a killed `prepare` left in these folders (only ours, and only of dead writers)."""
    removed = 0
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for entry in entries:
            match = _TEMP_NAME.match(entry.name)
            if match and entry.is_file() and _writer_is_gone(match["host"], int(match["pid"])):
                Path(entry.path).unlink(missing_ok=True)
                removed += 1
    return removed


def _convert_chunk(pairs: list[tuple[Path, Path]]) -> int:
    for pair in pairs:
        convert_one(*pair)
    return len(pairs)


def find_annotations(root: Path, coarse: bool = False) -> list[Path]:
    """Every polygon JSON the official script would convert: gtFine/*/*/, and gtCoarse/*/*/ with `coarse`."""
    from cityseg.data.layout import FINE_DIR, POLYGONS_SUFFIX

    files = sorted((root / FINE_DIR).glob(f"*/*/*{POLYGONS_SUFFIX}"))
    if coarse:
        if not (root / COARSE_DIR).is_dir():
            raise UserError(
                f"--coarse was given but {root / COARSE_DIR} does not exist; unzip gtCoarse.zip into {root} "
                "or drop --coarse."
            )
        files += sorted((root / COARSE_DIR).glob(f"*/*/*{COARSE_POLYGONS_SUFFIX}"))
    return files


def _worker_start() -> None:
    """Ctrl-C is the parent's to handle, and a worker exits when its parent dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()


@contextlib.contextmanager
def _children_ignore_sigint() -> Iterator[None]:
    """Processes started in here inherit an ignored SIGINT, so a Ctrl-C during their start-up cannot kill them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


def _run_parallel(todo: list[tuple[Path, Path]], workers: int, bar: tqdm, finished) -> None:
    """Convert chunks in worker processes; the first failure or Ctrl-C cancels what has not started and is re-raised
    (files in progress are finished first, so an interrupted run leaves only whole PNGs)."""
    chunks = [todo[i : i + _CHUNK] for i in range(0, len(todo), _CHUNK)]
    # spawn: workers start clean (no inherited torch/OpenMP threads) and import only this light module.
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(chunks)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_start,
    )
    try:
        with _children_ignore_sigint():  # the pool starts its processes during submit()
            chunk_of = {pool.submit(_convert_chunk, chunk): chunk for chunk in chunks}
        for future in as_completed(chunk_of):
            bar.update(future.result())  # re-raises a worker's UserError here
            finished(chunk_of[future])
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def prepare_dataset(
    root: Path, workers: int | None = None, coarse: bool = False, progress: bool = True
) -> PrepareResult:
    """Write every missing or outdated `*_labelTrainIds.png` under ROOT in parallel."""
    from cityseg.data.frames import check_polygons
    from cityseg.system import default_workers

    root = Path(root)
    check_polygons(root)
    workers = default_workers() if workers is None else workers
    pairs = [(j, output_path(j)) for j in find_annotations(root, coarse)]
    records = {split_dir: _read_record(split_dir) for split_dir in {j.parent.parent for j, _ in pairs}}
    remove_stale_temp_files(sorted({out.parent for _, out in pairs} | set(records)))
    with ThreadPoolExecutor(max(1, workers)) as pool:  # hashing releases the GIL
        sources = dict(zip((j for j, _ in pairs), pool.map(_source_stamp, (j for j, _ in pairs)), strict=True))

    def key(json_path: Path) -> str:
        return json_path.relative_to(json_path.parent.parent).as_posix()

    def entry(json_path: Path, out_path: Path) -> dict:
        return {"json": sources[json_path], "png": _output_stamp(out_path)}

    todo = [(j, o) for j, o in pairs if records[j.parent.parent].get(key(j)) != entry(j, o) or not o.exists()]
    current = set(pairs) - set(todo)
    for split_dir, record in records.items():  # the record as it stands, so converted files can be appended
        files = {key(j): entry(j, o) for j, o in current if j.parent.parent == split_dir}
        if files != record or not (split_dir / RECORD_FILE).is_file():
            _write_record(split_dir, files)

    def finished(done: list[tuple[Path, Path]]) -> None:
        """Append each converted file's line to its split's record: one write, so a kill loses at most a line."""
        for json_path, out_path in done:
            line = json.dumps({"file": key(json_path), **entry(json_path, out_path)}) + "\n"
            with open(json_path.parent.parent / RECORD_FILE, "a") as handle:
                handle.write(line)

    with tqdm(total=len(todo), desc="prepare trainIds", unit="file", disable=not progress or not todo) as bar:
        if workers <= 1 or len(todo) <= _CHUNK:
            for pair in todo:
                convert_one(*pair)
                finished([pair])
                bar.update(1)
        else:
            _run_parallel(todo, workers, bar, finished)
    return PrepareResult(converted=len(todo), skipped=len(pairs) - len(todo))
