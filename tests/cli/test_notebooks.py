"""The two notebooks: parameters, no logic in cells, lint-clean, and both run top to bottom with papermill.

The execution test runs them on the tiny synthetic dataset (2 folds x 1 epoch, workers 0) with
the kernel of this very virtual environment, and fails on any cell error.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager
from pypdf import PdfReader

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
TRAIN = NOTEBOOKS / "01_train.ipynb"
EVALUATE = NOTEBOOKS / "02_evaluate.ipynb"

TRAIN_DEFAULTS = {
    "DATA_ROOT": "../cityscapes",
    "RUNS_DIR": "../runs",
    "RECIPE": "seed",
    "FOLDS": 5,
    "SPLIT": "city",
    "EPOCHS": None,
    "DEVICE": "auto",
    "ENCODER_WEIGHTS": "imagenet",
    "SIZE": None,
    "WORKERS": None,
    "CACHE": "auto",
}
EVALUATE_DEFAULTS = {
    "DATA_ROOT": "../cityscapes",
    "RUNS_DIR": "../runs",
    "CHECKPOINT": "../runs/full/best.pt",
    "TTA": "none",
    "MODE": "whole",
    "PRED_DIR": "../predictions",
    "TEST_PRED_DIR": "../test_predictions",
    "REPORT": "../report.pdf",
    "SUBMISSION": "../submission.zip",
    "COMPARE_RUNS": [],
    "COMPARE_EVALS": [],
    "IMAGES_DIR": None,
    "IMAGES_OUT": "../image_predictions",
    "IMAGES_COUNT": 4,
}


def code_cells(path: Path) -> list:
    return [cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]


def python_source(cell) -> str:
    """Cell source with IPython magics (`%matplotlib inline`) turned into plain Python calls."""
    return TransformerManager().transform_cell(cell.source)


def parameter_values(path: Path) -> dict:
    """Execute only the tagged parameters cell and return what it defines."""
    cells = [cell for cell in code_cells(path) if "parameters" in cell.metadata.get("tags", [])]
    assert len(cells) == 1, f"{path.name} needs exactly one cell tagged 'parameters'"
    namespace: dict = {}
    exec(python_source(cells[0]), namespace)  # noqa: S102 - our own notebook's constants
    return namespace


@pytest.mark.parametrize(("path", "expected"), [(TRAIN, TRAIN_DEFAULTS), (EVALUATE, EVALUATE_DEFAULTS)])
def test_parameters_cell_has_the_documented_defaults(path, expected):
    values = parameter_values(path)
    assert {name: values.get(name, "<missing>") for name in expected} == expected


@pytest.mark.parametrize("path", [TRAIN, EVALUATE], ids=lambda p: p.name)
def test_cells_hold_no_definitions_and_are_stored_without_outputs(path):
    for number, cell in enumerate(code_cells(path)):
        tree = ast.parse(python_source(cell))
        defined = [
            type(node).__name__
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))
        ]
        assert not defined, f"{path.name} code cell {number} defines {defined}; logic belongs in cityseg"
        assert not cell.get("outputs") and cell.get("execution_count") is None, f"{path.name} cell {number} has outputs"


def test_notebooks_are_ruff_clean():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", str(TRAIN), str(EVALUATE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ----------------------------------------------------------------------------------------------------------
# Execution
# ----------------------------------------------------------------------------------------------------------


def execute(path: Path, out: Path, parameters: dict) -> nbformat.NotebookNode:
    """Run a notebook with papermill in this venv's python3 kernel; any cell error raises."""
    import papermill

    papermill.execute_notebook(
        str(path),
        str(out),
        parameters=parameters,
        kernel_name="python3",
        cwd=str(NOTEBOOKS),
        progress_bar=False,
        log_output=False,
    )
    return nbformat.read(out, as_version=4)


def outputs_text(book: nbformat.NotebookNode) -> str:
    parts = []
    for cell in book.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.extend(str(output.get("data", {}).get(kind, "")) for kind in ("text/plain", "text/markdown"))
    return "\n".join(parts)


@pytest.fixture(scope="module")
def executed(synth_root, tmp_path_factory) -> SimpleNamespace:
    """Both notebooks run in order on the tiny synthetic dataset; 02 uses what 01 trained."""
    base = tmp_path_factory.mktemp("notebooks")
    runs = base / "runs"
    with pytest.MonkeyPatch.context() as patch:
        # Kernel specs in JUPYTER_PATH win over per-user ones, so "python3" is this venv's interpreter.
        patch.setenv("JUPYTER_PATH", str(Path(sys.prefix) / "share" / "jupyter"))
        train = execute(
            TRAIN,
            base / "01_train.out.ipynb",
            {
                "DATA_ROOT": str(synth_root),
                "RUNS_DIR": str(runs),
                "FOLDS": 2,
                "EPOCHS": 1,
                "SIZE": "128x64",
                "WORKERS": 0,
                "DEVICE": "cpu",
                "ENCODER_WEIGHTS": "none",
                "OVERRIDES": {"lr": 1e-3},
            },
        )
        evaluate = execute(
            EVALUATE,
            base / "02_evaluate.out.ipynb",
            {
                "DATA_ROOT": str(synth_root),
                "RUNS_DIR": str(runs),
                "CHECKPOINT": str(runs / "full" / "best.pt"),
                "DEVICE": "cpu",
                "PRED_DIR": str(base / "predictions"),
                "TEST_PRED_DIR": str(base / "test_predictions"),
                "REPORT": str(base / "report.pdf"),
                "SUBMISSION": str(base / "submission.zip"),
                # the run beside itself under a second label: same folds, so the paired comparison runs too
                "COMPARE_RUNS": [str(runs)],
                "COMPARE_EVALS": [None],
                "COMPARE_LABELS": "this,again",
                "IMAGES_DIR": str(synth_root / "leftImg8bit" / "val"),
                "IMAGES_OUT": str(base / "photos"),
                "IMAGES_COUNT": 3,
            },
        )
    return SimpleNamespace(base=base, runs=runs, train=train, evaluate=evaluate, root=synth_root)


@pytest.mark.slow
def test_train_notebook_runs_cv_and_the_full_fit_in_this_venv(executed):
    text = outputs_text(executed.train)
    assert f"| python environment | {sys.prefix} |" in text  # the kernel is this venv's python
    summary = json.loads((executed.runs / "summary.json").read_text())
    assert summary["k"] == 2 and summary["complete"] and summary["full"]["finished"]
    assert (executed.runs / "full" / "best.pt").is_file()
    live = [
        o
        for c in executed.train.cells
        for o in c.get("outputs", [])
        if o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
    ]
    assert live, "the live training curve was not drawn"


@pytest.mark.slow
def test_evaluate_notebook_predicts_scores_zips_and_reports(executed):
    from cityseg.data.frames import list_frames

    n_val = len(list_frames(executed.root, "val", label_source=None))
    n_test = len(list_frames(executed.root, "test", label_source=None))
    assert len(list((executed.base / "predictions").rglob("*.png"))) == n_val
    with zipfile.ZipFile(executed.base / "submission.zip") as archive:
        assert len(archive.namelist()) == n_test
    evaluation = json.loads((executed.base / "predictions-eval" / "val.json").read_text())
    assert evaluation["cityseg"]["engine"] == "both" and evaluation["cityseg"]["n_frames"] == n_val
    reader = PdfReader(executed.base / "report.pdf")
    assert len(reader.pages) == 6 and all("SYNTHETIC" in page.extract_text() for page in reader.pages)
    text = outputs_text(executed.evaluate)
    assert "official (cityscapesscripts)" in text and "fast (bincount)" in text
    assert "**runs compared**" in text and "again − this: +0.00 ± 0.00 points over 2 folds" in text


def test_evaluate_notebook_shows_overlays_of_the_photos_it_is_pointed_at(executed):
    overlays = sorted((executed.base / "photos").rglob("*_overlay.png"))
    assert len(overlays) == 3  # IMAGES_COUNT of the folder's four photos
    last = [cell for cell in executed.evaluate.cells if cell.cell_type == "code"][-1]
    assert "predict_images" in last.source
    assert any("image/png" in output.get("data", {}) for output in last.get("outputs", []))
    assert "wrote 3" in outputs_text(executed.evaluate)
