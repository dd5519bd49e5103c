"""Reports from run files: the PDF (`build_report`) and the tables and figures the notebooks show.

Everything here reads the files a run leaves behind (config.json, log.jsonl, folds.json,
summary.json, the evaluation JSON, prediction PNGs); nothing trains or needs a GPU.

    cityseg report RUNS --eval EVAL_JSON --out report.pdf [--predictions DIR] [--root ROOT]
    cityseg compare RUNS_A RUNS_B --labels a,b [--eval A.json --eval B.json] --out compare.pdf
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> submodule. Imported on first use (PEP 562), so `cityseg cv`, which only prints a summary, does not
# pay for matplotlib and the PDF modules at its end.
_EXPORTS = {
    **dict.fromkeys(("compare_runs", "Comparison", "PairedComparison"), "compare"),
    **dict.fromkeys(("build_comparison", "comparison_figure", "write_comparison"), "compare_pdf"),
    **dict.fromkeys(("best_and_worst", "FrameScore", "load_examples", "prediction_paths", "score_frames"), "frames"),
    **dict.fromkeys(("figures_dir",), "layout"),
    **dict.fromkeys(("config_table", "engines_table", "histories", "parse_size", "training_config"), "notebook"),
    **dict.fromkeys(
        (
            "class_iou_table",
            "dataset_counts",
            "environment_table",
            "folds_table",
            "is_synthetic",
            "require_dataset",
            "sample_figure",
        ),
        "overview",
    ),
    **dict.fromkeys(
        (
            "build_report",
            "class_results_table",
            "cv_table",
            "full_fit_text",
            "headline_table",
            "headline_text",
            "is_synthetic_run",
            "official_tables",
        ),
        "pdf",
    ),
    **dict.fromkeys(
        ("cv_result", "CvResult", "REFERENCE_MIOU", "summary_text", "val_class_iou", "val_confusion"), "results"
    ),
    **dict.fromkeys(("load_evaluation", "load_runs", "predictions_checkpoint_warning", "RunFiles"), "runfiles"),
    **dict.fromkeys(("Table",), "tables"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """The public name from its submodule, imported the first time it is asked for."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
