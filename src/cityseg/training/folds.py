"""Cross-validation folds over the train split (RUNS/folds.json): `city` keeps each city on one side of every fold
(scikit-learn's GroupKFold: a city shares streets, weather and camera), `random` is the reference's shuffled KFold."""

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cityseg.errors import UserError
from cityseg.training.config import FOLD_SPLITS
from cityseg.training.runfolder import write_json

MAX_FOLDS_BYTES = 64 * 2**20  # folds.json of the real train split is ~300 KB


def city_of(image_id: str) -> str:
    """The city of an id `<city>_<seq:06d>_<frame:06d>` (city names may themselves hold underscores)."""
    return image_id.rsplit("_", 2)[0]


def _ids_of(frames: Sequence[Any]) -> list[str]:
    """Accept Frames (anything with `.id`) or plain id strings."""
    return [getattr(frame, "id", frame) for frame in frames]


def make_folds(frames: Sequence[Any], k: int = 5, split: str = "city", seed: int = 0) -> dict[str, Any]:
    """The folds.json dict for these train frames (or ids); the same inputs and seed give the same folds."""
    ids = sorted(_ids_of(frames))
    if len(set(ids)) != len(ids):
        raise UserError("the train frames given to make_folds contain duplicate ids; each image may appear once.")
    if split not in FOLD_SPLITS:
        raise UserError(f"unknown fold split {split!r}; use one of {', '.join(FOLD_SPLITS)} (--split).")
    if k < 2:
        raise UserError(f"cross-validation needs at least 2 folds, got --folds {k}.")
    cities = sorted({city_of(i) for i in ids})
    if split == "city" and k > len(cities):
        raise UserError(
            f"--folds {k} is more than the {len(cities)} cities in the train split ({', '.join(cities)}); a city "
            f"split puts each city in one fold. Use --folds {len(cities)} or fewer, or --split random."
        )
    if k > len(ids):
        raise UserError(f"--folds {k} is more than the {len(ids)} train images; use fewer folds.")
    from sklearn.model_selection import GroupKFold, KFold  # ~1 s of import: only where folds are made

    positions = np.arange(len(ids))
    if split == "random":
        splits = KFold(n_splits=k, shuffle=True, random_state=seed).split(positions)
    else:
        # GroupKFold's shuffle drops its balancing, so the seed permutes the city labels instead: it decides
        # how equally sized cities are spread.
        order = np.random.default_rng(seed).permutation(len(cities))
        label = {city: int(order[n]) for n, city in enumerate(cities)}
        splits = GroupKFold(n_splits=k).split(positions, groups=[label[city_of(i)] for i in ids])
    folds = [{"train": [ids[i] for i in sorted(train)], "val": [ids[i] for i in sorted(val)]} for train, val in splits]
    return {"k": k, "split": split, "seed": seed, "folds": folds}


def _is_id_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(i, str) for i in value)


def check_folds(folds: Any, source: str = "folds.json") -> dict[str, Any]:
    """Validate a folds dict (from a file a user may have edited): schema, types and bounds; return it."""
    entries = folds.get("folds") if isinstance(folds, dict) else None
    k = folds.get("k") if isinstance(folds, dict) else None
    ok = (
        type(k) is int
        and 2 <= k
        and folds.get("split") in FOLD_SPLITS
        and type(folds.get("seed")) is int
        and isinstance(entries, list)
        and len(entries) == k
        and all(isinstance(f, dict) and _is_id_list(f.get("train")) and _is_id_list(f.get("val")) for f in entries)
    )
    if not ok:
        raise UserError(
            f"{source} is not a folds file: it needs {{'k': K >= 2, 'split': {' or '.join(FOLD_SPLITS)}, 'seed': "
            "an integer, 'folds': [{'train': [ids], 'val': [ids]}, ...]} with K folds. Re-create it with "
            "`cityseg cv` (after moving it away)."
        )
    for n, fold in enumerate(entries):
        overlap = set(fold["train"]) & set(fold["val"])
        if overlap:
            raise UserError(
                f"fold {n} in {source} has {len(overlap)} image(s) on both sides, e.g. {sorted(overlap)[0]}."
            )
    return folds


def load_folds(path: Path) -> dict[str, Any]:
    """Read and check a folds.json; damaged, deeply nested or oversized files are UserErrors naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"folds file {path} does not exist; `cityseg cv` writes RUNS/folds.json.")
    if path.stat().st_size > MAX_FOLDS_BYTES:
        raise UserError(f"{path} is over {MAX_FOLDS_BYTES >> 20} MB, not a folds file; re-create it with `cityseg cv`.")
    try:
        folds = json.loads(path.read_text())
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError; nesting too deep
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise UserError(f"{path} is not valid JSON ({reason}); re-create it with `cityseg cv`.") from None
    return check_folds(folds, str(path))


def check_folds_match(path: Path, folds: dict[str, Any]) -> bool:
    """True if `path` holds exactly `folds`, False if there is no file; a different or foreign one is refused."""
    path = Path(path)
    if not path.exists():
        return False
    existing = load_folds(path)
    if existing != folds:
        raise UserError(
            f"{path} already holds different folds (k={existing['k']}, split={existing['split']}, "
            f"seed={existing['seed']}) than this run asks for (k={folds['k']}, split={folds['split']}, "
            f"seed={folds['seed']}), or the train images changed. Use the same --folds/--split/--seed, or "
            "another --out folder; the runs in it were trained on those folds."
        )
    return True


def write_folds(path: Path, folds: dict[str, Any]) -> None:
    """Write folds.json, or accept an identical existing one; a different one is never overwritten."""
    if not check_folds_match(path, folds):
        write_json(Path(path), folds)


def fold_ids(folds: dict[str, Any], fold: int) -> tuple[list[str], list[str]]:
    """(train ids, val ids) of one fold, with a clear error for a fold number out of range."""
    if not 0 <= fold < folds["k"]:
        raise UserError(f"fold {fold} does not exist; the folds file has folds 0..{folds['k'] - 1}.")
    entry = folds["folds"][fold]
    return list(entry["train"]), list(entry["val"])


def fold_table(folds: dict[str, Any] | Path | str, frames: Sequence[Any] | None = None) -> list[dict[str, Any]]:
    """One row per fold (fold, validation cities, n_train, n_val); ids missing from `frames` are an error."""
    if not isinstance(folds, dict):
        folds = load_folds(Path(folds))
    if frames is not None:
        missing = sorted({i for f in folds["folds"] for i in f["train"] + f["val"]} - set(_ids_of(frames)))
        if missing:
            raise UserError(
                f"{len(missing)} image id(s) in the folds are not in the dataset, e.g. {missing[0]}; the folds "
                "were made for other data. Use the matching dataset or a new --out folder."
            )
    rows = []
    for n, fold in enumerate(folds["folds"]):
        cities = sorted({city_of(i) for i in fold["val"]})
        rows.append({"fold": n, "cities": cities, "n_train": len(fold["train"]), "n_val": len(fold["val"])})
    return rows
