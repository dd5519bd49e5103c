"""Official Cityscapes evaluation of labelIds predictions, safe to call from a notebook.

- `evaluate(pred_dir, root, split="val", engine="both", json_out=None, workers=None) -> dict`
  scores predictions with cityscapesscripts' evalPixelLevelSemanticLabeling (in-process, no
  environment variables, no sys.exit) and/or the fast bincount engine, which must agree.
- `check_predictions(pred_dir, root, split="val", workers=None) -> dict[str, Path]` runs every
  input check alone (missing, extra, duplicate, unreadable, multi-channel, wrong size, invalid ids).

Modules: checks (prediction files), official (the script, leashed), fast (the twin from counts),
output (table, JSON, CSV), runner (the two together).
"""

from cityseg.evaluation.checks import TrainIdsWarning
from cityseg.evaluation.output import default_json_path, format_table, write_outputs
from cityseg.evaluation.runner import (
    ENGINES,
    EngineMismatchError,
    check_predictions,
    compare_exports,
    evaluate,
)

__all__ = [
    "ENGINES",
    "EngineMismatchError",
    "TrainIdsWarning",
    "check_predictions",
    "compare_exports",
    "default_json_path",
    "evaluate",
    "format_table",
    "write_outputs",
]
