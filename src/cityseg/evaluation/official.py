"""The official Cityscapes pixel-level evaluation, run in-process and kept on a short leash: the script reads
`CITYSCAPES_*` variables, prints, writes files and calls `sys.exit`, so we call only `evaluateImgLists` with the
arguments we build, capture its prints, turn SystemExit into UserError, and lend it `np.in1d` (gone in numpy 2.4).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import threading
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cityseg.errors import UserError

_MODULE_NAME = "cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling"

# The script keeps state in module globals (its `np`, stdout while captured): evaluations must not overlap.
_LOCK = threading.RLock()


def official_module() -> types.ModuleType:
    """Import the official script without letting `CITYSCAPES_EXPORT_DIR` break the import."""
    with _LOCK:
        saved = os.environ.pop("CITYSCAPES_EXPORT_DIR", None)  # a bad value raises at import time
        try:
            return importlib.import_module(_MODULE_NAME)
        finally:
            if saved is not None:
                os.environ["CITYSCAPES_EXPORT_DIR"] = saved


def average_class_sizes() -> dict[str, float]:
    """The official per-class average instance sizes (pixels) that weight iIoU, from the script itself."""
    return dict(official_module().args.avgClassSize)


def official_args() -> types.SimpleNamespace:
    """Every attribute `evaluateImgLists` reads, set explicitly: nothing from the environment or package paths, and
    no file written (we write its export dict ourselves)."""
    module = official_module()
    return types.SimpleNamespace(
        evalInstLevelScore=True,  # iIoU needs *_gtFine_instanceIds.png beside each labelIds file
        evalPixelAccuracy=False,  # its per-image stats are not part of the export we keep
        evalLabels=[],  # filled by the script's generateMatrix (all ids >= 0)
        printRow=5,
        normalized=True,
        colorized=False,  # output is captured, so no terminal colour codes
        bold="",
        nocol="",
        quiet=True,
        JSONOutput=False,
        exportFile=os.devnull,  # never used with JSONOutput off
        avgClassSize=dict(module.args.avgClassSize),
        predictionPath=None,  # these four only feed the script's own file discovery, never called
        predictionWalk=None,
        groundTruthSearch="",
        cityscapesPath="",
    )


@contextlib.contextmanager
def numpy_in1d_for(module: types.ModuleType) -> Iterator[None]:
    """Give `module` (only it: a proxy for its `np` global, numpy itself is left alone) an `np.in1d` while the block
    runs, when the installed numpy lacks it; `isin(ravel(a), b)` is exactly what `in1d(a, b)` computed."""
    if hasattr(module.np, "in1d"):
        yield
        return
    original = module.np
    module.np = types.ModuleType(np.__name__)
    module.np.__dict__.update(np.__dict__)  # numpy's own attributes, plus numpy < 2.4's in1d = isin of ravel(ar1)
    module.np.in1d = lambda ar1, ar2, **kwargs: np.isin(np.ravel(ar1), ar2, **kwargs)
    try:
        yield
    finally:
        module.np = original


def _last_error_line(printed: str) -> str:
    """The script reports problems as 'ERROR: ...' right before exiting."""
    lines = [line.strip() for line in printed.replace("\r", "\n").splitlines() if line.strip()] or ["no message"]
    errors = [line.removeprefix("ERROR:").strip() for line in lines if line.startswith("ERROR:")]
    return (errors or lines)[-1]


def run_official(predictions: Sequence[Path], ground_truths: Sequence[Path]) -> tuple[dict[str, Any], str]:
    """(export dict, captured output) of `evaluateImgLists` on validated lists; `predictions[i]` is the labelIds
    PNG for `ground_truths[i]` (a *_gtFine_labelIds.png)."""
    module = official_module()
    args = official_args()
    printed = io.StringIO()
    with _LOCK, numpy_in1d_for(module), contextlib.redirect_stdout(printed):
        try:
            result = module.evaluateImgLists([str(p) for p in predictions], [str(p) for p in ground_truths], args)
        except SystemExit:  # a problem our checks do not cover: it must not end the process or a notebook
            message = _last_error_line(printed.getvalue())
            raise UserError(
                f"the official Cityscapes evaluation stopped with: {message}. Check the files it names; "
                "ground truth must be the shipped gtFine *_labelIds.png and *_instanceIds.png."
            ) from None
    return result, printed.getvalue()
