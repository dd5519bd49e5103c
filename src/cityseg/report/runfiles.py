"""Read the files a cross-validation run leaves behind, with errors that say which command writes each.

The run folder is the single source of truth: `config.json`, `log.jsonl`, `folds.json`,
`summary.json` and the official evaluation JSON. Nothing here needs a model or a GPU, so a
report can be rebuilt on any machine from copied run folders.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cityseg.errors import UserError

CV_COMMAND = "`cityseg cv DATA_ROOT --out RUNS`"
EVAL_COMMAND = "`cityseg evaluate PRED_DIR DATA_ROOT --json EVAL_JSON`"
SUMMARY_REQUIRED_KEYS = ("k", "folds", "miou_mean", "miou_std", "class_iou_mean", "class_iou_std", "chosen_epochs",
                         "protocol", "selected")
EVAL_REQUIRED_KEYS = ("confMatrix", "labels", "classScores", "classInstScores", "categoryScores",
                      "categoryInstScores", "averageScoreClasses", "averageScoreInstClasses",
                      "averageScoreCategories", "averageScoreInstCategories")


def read_json(path: Path, producer: str) -> Any:
    """Parse one JSON file; a missing or damaged file is a `UserError` naming it and the command that writes it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} is missing; it is written by {producer}. Run that command (or point at the folder "
                        "that holds its output) and build the report again.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); it may be truncated. Re-create it with {producer}.") from None


def read_jsonl(path: Path, producer: str) -> list[dict]:
    """Parse a JSON-lines log; a half-written last line (a run killed mid-write) is dropped, not fatal."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} is missing; it is written by {producer} as the run trains.")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break  # the writer was interrupted; earlier epochs are still good
            raise UserError(f"{path} line {number} is not valid JSON; re-create the run with {producer}.") from None
        if not isinstance(row, dict) or "epoch" not in row:
            raise UserError(f"{path} line {number} is not an epoch record; re-create the run with {producer}.")
        rows.append(row)
    return rows


def _require(data: Any, keys: tuple[str, ...], path: Path, producer: str) -> None:
    """Fail with the file name when a JSON file lacks the fields the report reads."""
    missing = [k for k in keys if not isinstance(data, dict) or k not in data]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}; it was not written by this version of cityseg. "
                        f"Re-create it with {producer}.")


@dataclass
class RunFiles:
    """Everything the report reads from one runs folder (cross-validation folds plus the full-data fit).

    `config` is the first run's config.json (the cross-validation settings); `configs` has every run's.
    """

    runs_dir: Path
    config: dict
    folds: dict
    summary: dict
    histories: dict[str, list[dict]] = field(default_factory=dict)
    configs: dict[str, dict] = field(default_factory=dict)

    @property
    def synthetic(self) -> bool:
        """Whether any run trained on synthetic data (config.json "synthetic")."""
        return any(bool(c.get("synthetic")) for c in self.configs.values()) or bool(self.config.get("synthetic"))


def run_names(runs_dir: Path) -> list[str]:
    """Run folders in display order: fold_0, fold_1, ... then full."""
    runs_dir = Path(runs_dir)
    numbers = sorted(int(match[1]) for path in runs_dir.glob("fold_*")
                     if path.is_dir() and (match := re.fullmatch(r"fold_(\d+)", path.name)))
    return [f"fold_{n}" for n in numbers] + (["full"] if (runs_dir / "full").is_dir() else [])


def load_runs(runs_dir: Path) -> RunFiles:
    """Load config, logs, folds and summary of a runs folder written by `run_cv`."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise UserError(f"runs folder {runs_dir} does not exist; train with {CV_COMMAND} first.")
    folds = read_json(runs_dir / "folds.json", CV_COMMAND)
    _require(folds, ("k", "split", "folds"), runs_dir / "folds.json", CV_COMMAND)
    summary = read_json(runs_dir / "summary.json", CV_COMMAND)
    _require(summary, SUMMARY_REQUIRED_KEYS, runs_dir / "summary.json", CV_COMMAND)
    names = run_names(runs_dir)
    if not names:
        raise UserError(f"{runs_dir} holds no fold_<k> or full run folders; train with {CV_COMMAND}.")
    configs = {name: read_json(runs_dir / name / "config.json", CV_COMMAND) for name in names}
    histories = {name: read_jsonl(runs_dir / name / "log.jsonl", CV_COMMAND) for name in names}
    return RunFiles(runs_dir, configs[names[0]], folds, summary, histories, configs)


def load_evaluation(path: Path) -> dict:
    """Load the official evaluation JSON (cityscapesscripts export format, plus cityseg's extras)."""
    data = read_json(Path(path), EVAL_COMMAND)
    _require(data, EVAL_REQUIRED_KEYS, Path(path), EVAL_COMMAND)
    return data
