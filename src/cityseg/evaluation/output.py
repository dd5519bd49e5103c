"""What an evaluation leaves behind: a printed table, the official-format JSON (plus our "cityseg" section) and a
per-class CSV, written atomically and only over an earlier cityseg evaluation whose sha256s (`cityseg.written_by`)
still match, so someone else's file, or ours edited since, is left alone."""

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cityseg.errors import UserError
from cityseg.fileio import atomic_write_bytes, file_sha256
from cityseg.labels import CATEGORY_NAMES, CLASS_NAMES, NUM_CLASSES

UNITS = "scores are fractions of 1 (0.6342 is printed as 63.42 %)"
CSV_HEADER = ("class", "IoU (fraction of 1)", "iIoU (fraction of 1)")
WRITTEN_BY = "cityseg evaluate"
NAME_WIDTH = 18  # fits "mIoU (19 classes)"
VALUE_WIDTH = 9  # fits "100.00 %"


def default_json_path(pred_dir: Path, split: str) -> Path:
    """`<PRED_DIR>-eval/<split>.json`: beside the predictions, never inside PRED_DIR (which is walked for PNGs)."""
    pred_dir = Path(pred_dir).resolve()
    return pred_dir.with_name(pred_dir.name + "-eval") / f"{split}.json"


def summary(export: Mapping[str, Any]) -> dict[str, Any]:
    """Scores in trainId order (the 19 classes) for plots and reports, read from an official-format export."""
    conf = np.asarray(export["confMatrix"], dtype=np.int64)  # (34, 34) rows = ground-truth labelId
    label_ids = [int(export["labels"][name]) for name in CLASS_NAMES]
    train_conf = conf[np.ix_(label_ids, label_ids)]  # (19, 19) rows = ground-truth trainId
    gt_pixels = int(conf[label_ids].sum())
    return {
        "class_names": list(CLASS_NAMES),
        "class_iou": [float(export["classScores"][name]) for name in CLASS_NAMES],
        "class_iiou": [float(export["classInstScores"][name]) for name in CLASS_NAMES],
        "miou": float(export["averageScoreClasses"]),
        "miiou": float(export["averageScoreInstClasses"]),
        "category_names": list(CATEGORY_NAMES),
        "category_iou": [float(export["categoryScores"][name]) for name in CATEGORY_NAMES],
        "category_iiou": [float(export["categoryInstScores"][name]) for name in CATEGORY_NAMES],
        "category_miou": float(export["averageScoreCategories"]),
        "category_miiou": float(export["averageScoreInstCategories"]),
        # correct pixels over ground-truth pixels of the 19 classes (predictions into other ids are wrong)
        "pixel_accuracy": float(np.trace(train_conf) / gt_pixels) if gt_pixels else float("nan"),
        "confusion_train_ids": train_conf.tolist(),
    }


def _json_value(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON data")


def plain(value: Any) -> Any:
    """A copy in JSON types only (numpy scalars and arrays, tuples and paths converted), NaN kept."""
    return json.loads(json.dumps(value, default=_json_value))


def percent(value: float) -> str:
    """A score (fraction of 1) as people read it: '63.42 %', or '-' when undefined (NaN)."""
    return f"{'-':>{VALUE_WIDTH}}" if math.isnan(value) else f"{100 * value:>{VALUE_WIDTH - 2}.2f} %"


def format_table(result: Mapping[str, Any], bold: bool = False) -> str:
    """Class IoU/iIoU, category IoU/iIoU and the mean IoU as the (optionally bold) last line, in percent."""
    on, off = ("\033[1m", "\033[0m") if bold else ("", "")
    rule = "-" * (NAME_WIDTH + 2 * VALUE_WIDTH + 2)
    rows = [(name, result["classScores"][name], result["classInstScores"][name]) for name in CLASS_NAMES]
    categories = [(n, result["categoryScores"][n], result["categoryInstScores"][n]) for n in CATEGORY_NAMES]
    categories.append(("categories avg", result["averageScoreCategories"], result["averageScoreInstCategories"]))

    def line(name: str, iou: float, iiou: float) -> str:
        return f"{name:<{NAME_WIDTH}}{percent(iou)}  {percent(iiou)}"

    def header(kind: str) -> list[str]:
        return [f"{kind:<{NAME_WIDTH}}{'IoU':>{VALUE_WIDTH}}  {'iIoU':>{VALUE_WIDTH}}", rule]

    mean = line(f"mIoU ({NUM_CLASSES} classes)", result["averageScoreClasses"], result["averageScoreInstClasses"])
    return "\n".join(
        [*header("class"), *(line(*row) for row in rows), rule, *header("category")]
        + [*(line(*row) for row in categories), rule, f"{on}{mean}{off}"]
    )


def _json_text(data: Mapping[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, indent=4, default=_json_value)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _stamped_text(result: Mapping[str, Any], csv_bytes: bytes, previous: str | None) -> str:
    """The JSON text with `cityseg.written_by`: sha256s of this text, its CSV and the CSV it replaces."""
    stamp = {"command": WRITTEN_BY, "sha256": "", "csv_sha256": _sha256(csv_bytes), "previous_csv_sha256": previous}
    data = {**result, "cityseg": {**result.get("cityseg", {}), "written_by": stamp}}
    stamp["sha256"] = _sha256(_json_text(data).encode())
    return _json_text(data)


def _our_stamp(path: Path) -> dict[str, Any] | None:
    """The `written_by` record of a JSON this command wrote and nobody changed since; None for any other file."""
    try:
        data = json.loads(path.read_text())
        stamp = dict(data["cityseg"]["written_by"])
        claimed = stamp["sha256"]
        data["cityseg"]["written_by"] = {**stamp, "sha256": ""}
    except (OSError, ValueError, RecursionError, KeyError, TypeError):  # UnicodeDecodeError is a ValueError
        return None
    if stamp.get("command") != WRITTEN_BY or _sha256(_json_text(data).encode()) != claimed:
        return None
    return stamp


def _refuse(path: Path) -> None:
    raise UserError(
        f"{path} exists and was not written by `cityseg evaluate` (or was changed since: it does not match the "
        "checksum cityseg recorded), so it is left alone; pass another --json path or move that file away."
    )


def _file_sha256(path: Path) -> str | None:
    try:
        return file_sha256(path)
    except OSError:  # missing, a folder, unreadable
        return None


def check_output_paths(json_path: Path) -> None:
    """Refuse, before any work, to replace a JSON or CSV that an earlier cityseg evaluation did not write."""
    json_path, csv_path = Path(json_path), Path(json_path).with_suffix(".csv")
    if json_path.suffix != ".json":
        raise UserError(f"--json {json_path} must end in .json (the per-class CSV is written beside it as .csv).")
    for path in (json_path, csv_path):
        if path.is_dir():
            raise UserError(f"{path} is a folder; pass a file name ending in .json for --json.")
    blocking = next((parent for parent in json_path.parents if parent.exists() and not parent.is_dir()), None)
    if blocking is not None:
        raise UserError(
            f"--json {json_path} lies below {blocking}, which is a file, not a folder; choose another path."
        )
    stamp = _our_stamp(json_path) if json_path.is_file() else None
    if (json_path.exists() or json_path.is_symlink()) and stamp is None:
        _refuse(json_path)
    if (csv_path.exists() or csv_path.is_symlink()) and (
        stamp is None or _file_sha256(csv_path) not in (stamp.get("csv_sha256"), stamp.get("previous_csv_sha256"))
    ):
        _refuse(csv_path)


def write_outputs(result: Mapping[str, Any], json_path: Path) -> tuple[Path, Path]:
    """Write the JSON and the per-class CSV (class, IoU, iIoU in trainId order), each atomically."""
    json_path = Path(json_path)
    check_output_paths(json_path)
    rows = [CSV_HEADER] + [
        (n, repr(float(result["classScores"][n])), repr(float(result["classInstScores"][n]))) for n in CLASS_NAMES
    ]
    csv_bytes = "".join(",".join(row) + "\n" for row in rows).encode()  # no field holds a comma or a quote
    csv_path = json_path.with_suffix(".csv")
    previous = _file_sha256(csv_path)  # checked to be ours above
    text = _stamped_text(result, csv_bytes, previous)
    atomic_write_bytes(json_path, text.encode())
    atomic_write_bytes(csv_path, csv_bytes)
    return json_path, csv_path
