"""Official Cityscapes evaluation of labelIds predictions, safe to call from a notebook.

`evaluate(pred_dir, root, split, engine, json_out, workers)` scores predictions with cityscapesscripts'
evalPixelLevelSemanticLabeling (in-process: no environment variables, no sys.exit) and/or the fast engine,
identical to the official script on frames in sorted order; every input problem is one UserError first.
Modules: checks (prediction files), official (the script, leashed), fast (the counting engine), output
(table, JSON, CSV), runner (the engines together; `predict --score` in memory). docs/evaluation.md.
"""

from cityseg.evaluation.checks import EvaluationWarning, TrainIdsWarning
from cityseg.evaluation.output import default_json_path, format_table, percent, write_outputs
from cityseg.evaluation.runner import ENGINES, EngineMismatchError, compare_exports, evaluate

__all__ = [
    "ENGINES",
    "EngineMismatchError",
    "EvaluationWarning",
    "TrainIdsWarning",
    "compare_exports",
    "default_json_path",
    "evaluate",
    "format_table",
    "percent",
    "write_outputs",
]
