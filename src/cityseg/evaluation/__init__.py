"""Official Cityscapes evaluation of labelIds predictions, safe from a notebook (docs/evaluation.md): `evaluate` runs
cityscapesscripts' script in-process and/or the identical fast engine, every input problem one UserError first."""

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
