"""Official Cityscapes evaluation of labelIds predictions, safe to call from a notebook (docs/evaluation.md).

`evaluate` scores predictions with cityscapesscripts' evalPixelLevelSemanticLabeling (in-process: no environment
variables, no sys.exit) and/or the fast engine, identical to it on frames in sorted order; every input problem is
one UserError first.
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
