"""Reports from run files: report.pdf (`build_report`), compare.pdf, and the tables and figures the notebooks show.
Names are imported from their submodule on first use (PEP 562), so `cityseg cv` does not load matplotlib."""

import importlib
from typing import Any

_EXPORTS = {
    "compare": ("build_comparison", "compare_runs", "Comparison", "comparison_figure", "PairedComparison"),
    "layout": ("figures_dir", "tables_dir"),
    "notebook": (
        *("class_iou_table", "config_table", "dataset_counts", "engines_text", "environment_table", "folds_table"),
        *("histories", "is_synthetic", "parse_size", "require_dataset", "sample_figure", "training_config"),
        *("notebook_errors", "show_comparison", "show_photos", "train"),
    ),
    "pdf": (
        *("build_report", "class_results_table", "cv_table", "full_fit_text", "headline_table", "headline_text"),
        *("is_synthetic_run", "official_tables"),
        *("best_and_worst", "FrameScore", "load_examples", "score_frames"),
    ),
    "results": (
        *("cv_result", "CvResult", "REFERENCE_MIOU", "summary_text", "val_class_iou", "val_confusion"),
        *("load_evaluation", "load_runs", "predictions_checkpoint_warning", "RunFiles"),
    ),
    "tables": ("Score", "Table"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    """The public name from its submodule, imported the first time it is asked for."""
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULE_OF))
