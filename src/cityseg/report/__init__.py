"""Reports from run files: the PDF (`build_report`) and the tables and figures the notebooks show.

Everything here reads the files a run leaves behind (config.json, log.jsonl, folds.json,
summary.json, the evaluation JSON, prediction PNGs); nothing trains or needs a GPU.

    cityseg report RUNS --eval EVAL_JSON --out report.pdf [--predictions DIR] [--root ROOT]
    cityseg compare RUNS_A RUNS_B --labels a,b [--eval A.json --eval B.json] --out compare.pdf
"""

from cityseg.report.compare import Comparison, PairedComparison, compare_runs
from cityseg.report.compare_pdf import build_comparison, comparison_figure, write_comparison
from cityseg.report.frames import (
    FrameScore,
    best_and_worst,
    load_examples,
    prediction_paths,
    score_frames,
    spread,
)
from cityseg.report.layout import figures_dir
from cityseg.report.notebook import config_table, engines_table, histories, parse_size, training_config
from cityseg.report.overview import (
    class_iou_table,
    dataset_counts,
    environment_table,
    folds_table,
    is_synthetic,
    require_dataset,
    sample_figure,
)
from cityseg.report.pdf import (
    build_report,
    class_results_table,
    cv_table,
    full_fit_text,
    headline_table,
    headline_text,
    is_synthetic_run,
    official_tables,
)
from cityseg.report.results import (
    REFERENCE_MIOU,
    CvResult,
    cv_result,
    summary_text,
    val_class_iou,
    val_confusion,
)
from cityseg.report.runfiles import RunFiles, load_evaluation, load_runs, predictions_checkpoint_warning
from cityseg.report.tables import Table

__all__ = [
    "summary_text",
    "REFERENCE_MIOU",
    "Comparison",
    "CvResult",
    "FrameScore",
    "PairedComparison",
    "RunFiles",
    "Table",
    "best_and_worst",
    "build_comparison",
    "build_report",
    "class_iou_table",
    "class_results_table",
    "compare_runs",
    "comparison_figure",
    "config_table",
    "cv_result",
    "cv_table",
    "dataset_counts",
    "engines_table",
    "environment_table",
    "figures_dir",
    "full_fit_text",
    "folds_table",
    "headline_table",
    "headline_text",
    "histories",
    "is_synthetic",
    "is_synthetic_run",
    "load_evaluation",
    "load_examples",
    "load_runs",
    "official_tables",
    "parse_size",
    "prediction_paths",
    "predictions_checkpoint_warning",
    "require_dataset",
    "sample_figure",
    "score_frames",
    "spread",
    "training_config",
    "val_class_iou",
    "val_confusion",
    "write_comparison",
]
