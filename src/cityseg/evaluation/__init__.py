"""Official Cityscapes evaluation of labelIds predictions, safe to call from a notebook.

- `evaluate(pred_dir, root, split="val", engine="both", json_out=None, workers=None, gt_cache=True) -> dict`
  scores predictions with cityscapesscripts' evalPixelLevelSemanticLabeling (in-process, no
  environment variables, no sys.exit) and/or the fast bincount engine, which must agree. The fast
  engine keeps the split's decoded ground truth in ROOT/../cityseg-cache/eval-gt (gt_cache=True; a
  Path picks the folder, False turns it off), so repeated evaluations decode only the predictions.
- `check_predictions(pred_dir, root, split="val", workers=None) -> dict[str, Path]` runs every
  input check alone (missing, extra, duplicate, unreadable, multi-channel, wrong size, invalid ids).

Modules: checks (prediction files), official (the script, leashed), fast (the twin from counts),
gt_cache (decoded ground truth for fast), output (table, JSON, CSV), runner (the two together).
"""

from cityseg.evaluation.checks import TrainIdsWarning
from cityseg.evaluation.gt_cache import GtCacheWarning, default_gt_cache_dir
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
    "GtCacheWarning",
    "TrainIdsWarning",
    "check_predictions",
    "compare_exports",
    "default_gt_cache_dir",
    "default_json_path",
    "evaluate",
    "format_table",
    "write_outputs",
]
