"""A run folder's files, owned here: config.json, log.jsonl (a row per finished epoch), last.pt, best.pt, TensorBoard
events and the training lock. An epoch ends with last.pt written atomically, best.pt copied, then its log row
appended and fsynced; `repair_after_kill` makes the log agree with last.pt on resume."""

import datetime
import errno
import json
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cityseg.errors import UserError, name_the_file
from cityseg.fileio import atomic_write_bytes, atomic_write_text, sync_to_disk
from cityseg.locks import hold_lock
from cityseg.training.config import TrainConfig, config_differences

CONFIG_FILE, LOG_FILE, LAST_FILE, BEST_FILE = "config.json", "log.jsonl", "last.pt", "best.pt"
RUN_FILES = (CONFIG_FILE, LOG_FILE, LAST_FILE, BEST_FILE)
# A cross-validation's RUNS folder holds fold_<k>/, then full/ (the fit on every train image), beside these two.
FOLDS_FILE, SUMMARY_FILE, FULL_RUN = "folds.json", "summary.json", "full"

EpochCallback = Callable[[str, dict], None]  # (run name, the log row of the epoch just finished)


@dataclass(frozen=True)
class RunResult:
    """What a finished run left in its folder."""

    run_dir: Path
    rows: list[dict]
    best_epoch: int | None


def fold_dir(runs_dir: Path, fold: int) -> Path:
    return Path(runs_dir) / f"fold_{fold}"


def run_names(runs_dir: Path) -> list[str]:
    """Run folders of a cross-validation in display order: fold_0, fold_1, ... then full."""
    runs_dir = Path(runs_dir)
    numbers = sorted(
        int(m[1]) for p in runs_dir.glob("fold_*") if p.is_dir() and (m := re.fullmatch(r"fold_(\d+)", p.name))
    )
    return [f"fold_{n}" for n in numbers] + ([FULL_RUN] if (runs_dir / FULL_RUN).is_dir() else [])


def load_log(run_dir: Path, producer: str | None = None) -> list[dict]:
    """The epoch rows of log.jsonl (a torn last line skipped). Without `producer` a missing log is empty; with it, a
    missing log, a non-epoch line or an epoch logged twice is an error naming the file and the command."""
    path = Path(run_dir) / LOG_FILE
    if not path.is_file():
        if producer is None:
            return []
        raise UserError(f"{path} is missing; it is written by {producer} as the run trains.")
    again = f"re-create the run with {producer}" if producer else "start the run again in a new --out folder"
    rows, first_line = [], {}
    for number, line in enumerate(path.read_bytes().split(b"\n")[:-1], start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UserError(
                f"line {number} of {path} is not JSON; the log was edited or damaged. Restore it, or {again}."
            ) from None
        if producer is not None:
            if not isinstance(row, dict) or "epoch" not in row:
                raise UserError(f"{path} line {number} is not an epoch record; {again}.")
            epoch = json.dumps(row["epoch"])
            if epoch in first_line:
                raise UserError(
                    f"{path} logs epoch {epoch} twice (lines {first_line[epoch]} and {number}): two processes "
                    f"trained this run at the same time, so its log mixes two trainings and no number from it can "
                    f"be trusted. Train that run again in a new --out folder with {producer}."
                )
            first_line[epoch] = number
        rows.append(row)
    return rows


def append_log_row(run_dir: Path, row: dict) -> None:
    """Append one row with a single write and fsync, so a kill leaves at most a torn last line."""
    data = (json.dumps(row) + "\n").encode()
    path = Path(run_dir) / LOG_FILE
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if os.write(fd, data) != len(data):  # a short write: the disk filled up; the torn line is dropped on resume
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        sync_to_disk(fd)
    except OSError as exc:  # os.write's error names no file
        raise name_the_file(exc, path) from exc
    finally:
        os.close(fd)


def selection_metric(row: dict, select: str) -> float | None:
    """Val loss (lower is better) or val mIoU (also what "last" records)."""
    return row.get("val_loss") if select == "loss" else row.get("val_miou")


def is_better(value: float | None, best: float | None, select: str) -> bool:
    """Strict improvement (ties keep the earlier epoch); a missing value never beats a real one; "last": always."""
    if select == "last":
        return True
    if value is None or not np.isfinite(value):
        return False
    if best is None or not np.isfinite(best):
        return True
    return value < best if select == "loss" else value > best


def best_row(rows: Sequence[dict], select: str) -> dict | None:
    """The row the trainer saved as best.pt: the first strict best by `select`, else the last."""
    best = None
    for row in rows:
        if is_better(selection_metric(row, select), None if best is None else selection_metric(best, select), select):
            best = row
    return best if best is not None else (rows[-1] if rows else None)


def is_finished(run_dir: Path, epochs: int) -> bool:
    """A run is finished when its log has a row for every epoch and best.pt exists."""
    logged = {row.get("epoch") for row in load_log(run_dir)}
    return (Path(run_dir) / BEST_FILE).is_file() and set(range(1, epochs + 1)) <= logged


def check_run_dir(run_dir: Path, config: TrainConfig, resume: bool) -> dict | None:
    """Refuse to overwrite a run; on resume, load last.pt and insist on the same experiment config."""
    present = [name for name in RUN_FILES if (run_dir / name).exists()]
    if present and not resume:
        raise UserError(
            f"{run_dir} already holds a run ({', '.join(present)}); continue it with --resume, or pass another "
            "--out folder. Nothing was overwritten."
        )
    if not present:
        return None
    from cityseg.training.checkpoint import load_checkpoint  # torch: only where a run is resumed

    state = load_checkpoint(run_dir / LAST_FILE) if (run_dir / LAST_FILE).is_file() else None
    saved = state["config"] if state is not None else read_config_json(run_dir).get("config")
    changed = config_differences(TrainConfig.from_dict(saved), config) if saved is not None else []
    if changed:
        raise UserError(
            f"--resume would continue {run_dir} with different settings ({'; '.join(changed)}). Resume with "
            "the run's own settings (see its config.json), or start a new run in another --out folder."
        )
    return state


def read_config_json(run_dir: Path) -> dict:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path} is not valid JSON; restore it or start the run in a new --out folder.") from None


def write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")


def write_config_json(run_dir: Path, record: dict, resumed: bool) -> None:
    """Write config.json from `record`; a resumed run keeps its first start time and lists each resume."""
    previous = read_config_json(run_dir) if resumed else {}
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    record = {**record, "resumed": [*previous.get("resumed", []), now] if resumed else []}
    if previous.get("started"):
        record["started"] = previous["started"]
    write_json(run_dir / CONFIG_FILE, record)


def copy_atomic(source: Path, target: Path) -> None:
    """Make `target` a copy of `source`, never half-written (a hard link renamed, else a copy)."""
    if target.exists() and os.path.samefile(source, target):
        return  # already the same file; renaming a link onto it would do nothing and leave the link behind
    temporary = target.with_name(f".{target.name}.{os.getpid()}.link.tmp")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:
        with open(source, "rb") as src:
            atomic_write_bytes(target, lambda handle: shutil.copyfileobj(src, handle, 1 << 24))
        return
    os.replace(temporary, target)


def repair_after_kill(run_dir: Path, state: dict | None) -> None:
    """Make the log and best.pt agree with last.pt after an interrupted run (rank 0 only)."""
    for name in RUN_FILES:  # temp files of writes a kill cut short (atomic_write_bytes / copy_atomic names)
        for leftover in run_dir.glob(f".{name}.*.tmp"):
            leftover.unlink(missing_ok=True)
    done = state["epoch"] if state is not None else 0
    rows = {
        row["epoch"]: row for row in load_log(run_dir) if isinstance(row.get("epoch"), int) and row["epoch"] <= done
    }
    if state is not None and done not in rows and state.get("log_row") is not None:
        rows[done] = state["log_row"]  # killed after last.pt was saved but before its row was appended
    atomic_write_text(run_dir / LOG_FILE, "".join(json.dumps(rows[e]) + "\n" for e in sorted(rows)))
    if state is not None and state.get("best_epoch") == done:
        copy_atomic(run_dir / LAST_FILE, run_dir / BEST_FILE)  # killed between saving last.pt and best.pt


def make_run_folder(folder: Path) -> None:
    """Create a run folder (and its parents); a file in its place is the user's, not ours to replace."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {folder} is a file; pass a folder for the run (it is created if missing).")
    folder.mkdir(parents=True, exist_ok=True)


def lock_run_folder(run_dir: Path):
    """The lock one trainer of `run_dir` holds (see cityseg.locks); a second one is refused before it writes."""
    return hold_lock(
        run_dir / ".lock-run",
        f"run folder {run_dir}",
        "two processes must not train one run folder. Wait for that one to finish (a stopped run "
        "continues with --resume), or pass another --out folder. Nothing was written.",
    )


def read_run_config(run_dir: Path) -> TrainConfig | None:
    """The TrainConfig a run folder was trained with (None if it has no config.json yet)."""
    saved = read_config_json(Path(run_dir)).get("config")
    return TrainConfig.from_dict(saved) if saved is not None else None
