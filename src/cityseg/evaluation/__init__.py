"""Official Cityscapes evaluation of labelIds predictions, safe to call from a notebook.

- `evaluate(pred_dir, root, split="val", engine="both", json_out=None, workers=None, gt_cache=True) -> dict`
  scores predictions with cityscapesscripts' evalPixelLevelSemanticLabeling (in-process, no
  environment variables, no sys.exit) and/or the fast counting engine, which must agree (the CLI's
  default engine is "fast"). The fast engine keeps the split's decoded ground truth in
  ROOT/../cityseg-cache/eval-gt (gt_cache=True; a Path picks the folder, False turns it off), written
  during the second evaluation's pass of a split (the first only notes the split, so a one-off
  evaluation pays nothing for it), so later evaluations decode only the predictions.
- `check_predictions(pred_dir, root, split="val", workers=None) -> dict[str, Path]` runs every
  input check alone (missing, extra, duplicate, unreadable, multi-channel, wrong size, invalid ids).

Modules: checks (prediction files), official (the script, leashed), fast (the twin's per-frame counts),
scores (the twin's scores from the counts), gt_cache (decoded ground truth for fast, written by the first
evaluation's own pass), inmemory (`predict --score`: counts of label maps in memory), output (table, JSON,
CSV), runner (the engines together). PNGs are decoded by cityseg.data.pngdecode (zlib-ng + a C row unfilter, or libpng; PIL fallback).
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
