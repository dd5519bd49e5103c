"""Read the files a cross-validation run leaves behind (config.json, log.jsonl, folds.json, summary.json, the
evaluation JSON), with errors that name each file and its fix; a run folder that lost a fold or part of a log is
refused, not skipped. Nothing here needs a model or a GPU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cityseg.errors import UserError
from cityseg.fileio import file_sha256
from cityseg.training.runfolder import BEST_FILE, CONFIG_FILE, FOLDS_FILE, FULL_RUN, SUMMARY_FILE, load_log, run_names

CV_COMMAND = "`cityseg cv DATA_ROOT --out RUNS`"
EVAL_COMMAND = "`cityseg evaluate PRED_DIR DATA_ROOT --json EVAL_JSON`"
SUMMARY_KEYS = (
    *("k", "folds", "miou_mean", "miou_std", "class_iou_mean", "class_iou_std", "chosen_epochs", "protocol"),
    "selected",
)
EVAL_KEYS = (
    *("confMatrix", "labels", "classScores", "classInstScores", "categoryScores", "categoryInstScores"),
    *("averageScoreClasses", "averageScoreInstClasses", "averageScoreCategories", "averageScoreInstCategories"),
)


def read_json(path: Path, producer: str, keys: tuple[str, ...] = ()) -> Any:
    """Parse one JSON file holding `keys`; a missing, damaged or foreign file names itself and `producer`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} is missing; it is written by {producer}. Run that command, then this one again.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(
            f"{path} is not valid JSON ({exc}); it may be truncated. Re-create it with {producer}."
        ) from None
    missing = [k for k in keys if not isinstance(data, dict) or k not in data]
    if missing:
        raise UserError(
            f"{path} lacks {', '.join(missing)}; it was not written by this version of cityseg. "
            f"Re-create it with {producer}."
        )
    return data


@dataclass
class RunFiles:
    """Everything read from one runs folder: `config` is the first run's config.json, `configs` every run's."""

    runs_dir: Path
    config: dict
    folds: dict
    summary: dict
    histories: dict[str, list[dict]] = field(default_factory=dict)
    configs: dict[str, dict] = field(default_factory=dict)

    @property
    def synthetic(self) -> bool:
        """Whether any run trained on synthetic data (config.json "synthetic")."""
        return any(bool(c.get("synthetic")) for c in self.configs.values())


def load_runs(runs_dir: Path, command: str = "cityseg report") -> RunFiles:
    """Config, logs, folds and summary of a runs folder, checked against each other: every run summary.json lists
    must be there with at least the epochs it records (`command` words the errors)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise UserError(f"runs folder {runs_dir} does not exist; train with {CV_COMMAND} first.")
    folds = read_json(runs_dir / FOLDS_FILE, CV_COMMAND, ("k", "split", "folds"))
    if not (runs_dir / SUMMARY_FILE).is_file():
        raise UserError(
            f"{runs_dir / SUMMARY_FILE} is missing: {CV_COMMAND} writes it when a fold finishes, so {runs_dir} is "
            f"probably still training its first fold. Run `{command}` once a fold (better: all) has finished."
        )
    summary = read_json(runs_dir / SUMMARY_FILE, CV_COMMAND, SUMMARY_KEYS)
    names = run_names(runs_dir)
    expected = {f.get("run_dir", f"fold_{n}"): f.get("epochs_done") for n, f in enumerate(summary["folds"])}
    expected |= {FULL_RUN: summary["full"].get("epochs_done")} if isinstance(summary.get("full"), dict) else {}
    lost = [name for name in expected if name not in names]
    if lost:
        raise UserError(
            f"{runs_dir / lost[0]} is missing, but {runs_dir / SUMMARY_FILE} records it: a run folder was deleted or "
            f"moved, and `{command}` would understate the training and leave out its numbers. Put it back, or "
            f"train it again with {CV_COMMAND} --resume."
        )
    if not names:
        raise UserError(f"{runs_dir} holds no fold_<k> or full run folders; train with {CV_COMMAND}.")
    configs = {name: read_json(runs_dir / name / CONFIG_FILE, CV_COMMAND) for name in names}
    histories = {name: load_log(runs_dir / name, CV_COMMAND) for name in names}
    for name, done in expected.items():
        if isinstance(done, int) and len(histories[name]) < done:
            raise UserError(
                f"{runs_dir / name / 'log.jsonl'} holds {len(histories[name])} epoch rows but {SUMMARY_FILE} "
                f"records {done}: the log was truncated, emptied or overwritten, and `{command}` would understate the "
                f"training. Restore it from a copy of the run, or train the run again with {CV_COMMAND} in a new --out."
            )
    return RunFiles(runs_dir, configs[names[0]], folds, summary, histories, configs)


def load_evaluation(path: Path, split: str | None = "val") -> dict:
    """The official evaluation JSON plus cityseg's section; one of another split than `split` is refused (None: any)."""
    data = read_json(Path(path), EVAL_COMMAND, EVAL_KEYS)
    section = data.get("cityseg")
    scored = section.get("split") if isinstance(section, dict) else None
    if split is not None and scored is not None and scored != split:
        raise UserError(
            f"{path} scores the {scored!r} split, but the report presents its numbers as the official {split} "
            f"mIoU. Pass the evaluation of the {split} split: `cityseg predict RUNS/full/best.pt ROOT --split "
            f"{split}`, then `cityseg evaluate PRED_DIR ROOT --split {split} --json EVAL_JSON`."
        )
    return data


def predictions_checkpoint_warning(runs_dir: Path, evaluation: dict) -> str | None:
    """A warning when the evaluated predictions were made (their manifest says, as the evaluation recorded it) by
    another checkpoint than RUNS/full/best.pt, to which the report credits its official numbers; else None."""
    section = evaluation.get("cityseg")
    predictions = section.get("predictions") if isinstance(section, dict) else None
    try:
        settings = predictions["settings"]
        used = settings["checkpoint_sha256"]
    except (KeyError, TypeError):
        return None
    final = Path(runs_dir) / FULL_RUN / BEST_FILE
    if final.is_file() and file_sha256(final) == used:
        return None
    return (
        f"the evaluated predictions in {section.get('pred_dir')} were made by {settings.get('checkpoint')} (epoch "
        f"{settings.get('epoch')}), not by {final}; the report's official numbers are that checkpoint's."
    )
