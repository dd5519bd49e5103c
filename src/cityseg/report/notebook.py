"""Glue between notebook parameters (papermill passes plain strings and numbers) and the library.

A notebook cell stays a single call: these helpers turn `SIZE = "128x64"` (with `parse_size`, the
CLI's parser too) or `ENCODER_WEIGHTS = "none"` into what `resolve_config` expects, and read earlier runs back for
the live curves of a resumed notebook.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cityseg.report.tables import Table, percent
from cityseg.training.config import TrainConfig, parse_size, resolve_config
from cityseg.training.runfolder import run_names


def training_config(
    recipe: str = "seed",
    epochs: int | None = None,
    size: Any = None,
    workers: int | None = None,
    device: str = "auto",
    encoder_weights: str | None = "imagenet",
    overrides: Mapping[str, Any] | None = None,
    cache: str | None = "auto",
) -> TrainConfig:
    """The notebook's parameters as a TrainConfig; None keeps the recipe's (or the machine's) default.
    `cache`: "auto" (cityseg.training.runtime decides), a folder, or "none"/None for the PNGs."""
    cache = None if cache is None or str(cache).lower() == "none" else str(cache)
    values: dict[str, Any] = {"device": device, "cache": cache, **dict(overrides or {})}
    if epochs is not None:
        values["epochs"] = int(epochs)
    if size is not None:
        values["size"] = parse_size(size)
    if workers is not None:
        values["workers"] = int(workers)
    weights = None if encoder_weights is None or str(encoder_weights).lower() == "none" else str(encoder_weights)
    values["encoder_weights"] = weights
    return resolve_config(recipe, **values)


def histories(runs_dir: Path, names: Sequence[str] | None = None) -> dict[str, list[dict]]:
    """Epoch rows already logged in a runs folder (empty for a new one), so resumed live curves start complete.

    names: only these runs (e.g. ["full"]); None = every fold and the full fit.
    """
    from cityseg.training.runfolder import load_log

    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return {}
    return {name: load_log(runs_dir / name) for name in run_names(runs_dir) if names is None or name in names}


def config_table(config: TrainConfig) -> Table:
    """Every training config field and its value, as config.json will record it."""
    rows = [(name, "none" if value is None else value) for name, value in config.to_dict().items()]
    return Table.build(("field", "value"), rows, title=f"training config (recipe {config.recipe!r})")


def engines_table(result: Mapping[str, Any]) -> Table:
    """Official script versus fast engine: the same mIoU (to 1e-9) at a fraction of the time."""
    section = result.get("cityseg", {})
    timings = section.get("timings", {})
    rows = []
    if "official_s" in timings:
        rows.append(
            ("official (cityscapesscripts)", percent(result["averageScoreClasses"]), f"{timings['official_s']:.2f}")
        )
    if "fast" in section or "fast_s" in timings:
        fast = section.get("fast", result)
        rows.append(
            ("fast (bincount)", percent(fast["averageScoreClasses"]), f"{timings.get('fast_s', float('nan')):.2f}")
        )
    title = f"{section.get('n_frames', '?')} {section.get('split', '')} frames"
    if section.get("max_abs_diff") is not None:
        title += f"; largest score difference {section['max_abs_diff']:.1e}"
    return Table.build(("engine", "mIoU (%)", "seconds"), rows, title=title)
