"""The two notebooks: parameters, no logic in cells, lint-clean, texts that match their sections, and "Run All"
twice with papermill: 01_train again on a finished runs folder (nothing retrained), with a changed parameter on it
(refused naming RUNS_DIR) and on a new RUNS_DIR (trained); 02_evaluate twice on the same outputs.

The executions share the session's tiny trained run (`one_epoch_cv`) and use this virtual environment's kernel.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import pytest
from IPython.core.inputtransformer2 import TransformerManager
from pypdf import PdfReader

if TYPE_CHECKING:
    import nbformat

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
    "AMP": None,
    "OVERWRITE": False,
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


def stored_cells(path: Path, cell_type: str = "code") -> list[dict]:
    """The notebook's cells of one type as stored, each source one string (read as JSON: importing nbformat takes
    seconds, which every test worker would pay at collection)."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return [cell | {"source": "".join(cell["source"])} for cell in cells if cell["cell_type"] == cell_type]


def python_source(cell) -> str:
    """Cell source with IPython magics (`%matplotlib inline`) turned into plain Python calls."""
    return TransformerManager().transform_cell(cell["source"])


def parameter_values(path: Path) -> dict:
    """Execute only the tagged parameters cell and return what it defines."""
    cells = [cell for cell in stored_cells(path) if "parameters" in cell["metadata"].get("tags", [])]
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
    for number, cell in enumerate(stored_cells(path)):
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


def test_introductions_list_one_step_per_section():
    for path in (TRAIN, EVALUATE):
        cells = [cell["source"] for cell in stored_cells(path, "markdown")]
        steps = re.findall(r"^(\d+)\. ", cells[0], flags=re.MULTILINE)
        sections = [m[1] for text in cells for m in re.finditer(r"^## (\d+)\. ", text, flags=re.MULTILINE)]
        assert steps == sections == [str(n) for n in range(1, len(sections) + 1)], path.name


def test_library_errors_name_the_notebook_parameters():
    from cityseg.report.notebook import in_notebook_words

    cv = "x is finished but was trained with other settings; use another --out folder, or pass --crop WxH"
    assert in_notebook_words(cv, "01_train") == (
        'x is finished but was trained with other settings; use another RUNS_DIR, or set OVERRIDES["crop"] WxH'
    )
    submit = "x.zip already exists; pass --overwrite to replace it. Pass --allow-mismatch (allow_mismatch=True)"
    assert in_notebook_words(submit, "02_evaluate") == (
        "x.zip already exists; set OVERWRITE = True to replace it. Set COMPARE_ALLOW_MISMATCH = True"
    )
    quoted = "train it again with `cityseg cv ROOT --out RUNS --epochs 2`"  # a command to run keeps its options
    assert in_notebook_words(quoted, "01_train") == quoted


# ----------------------------------------------------------------------------------------------------------
# Execution
# ----------------------------------------------------------------------------------------------------------


def execute(path: Path, out: Path, parameters: dict) -> nbformat.NotebookNode:
    """Run a notebook with papermill in this venv's python3 kernel; a cell error raises PapermillExecutionError."""
    import nbformat
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


def assert_text_progress_only(book: nbformat.NotebookNode) -> None:
    """Progress bars are saved as text (tqdm's plain bars), never as widget state that shows as frozen bars."""
    kinds = {kind for cell in book.cells for output in cell.get("outputs", []) for kind in output.get("data", {})}
    assert not any("widget" in kind for kind in kinds) and "widgets" not in book.metadata


@pytest.fixture(scope="module")
def kernel():
    with pytest.MonkeyPatch.context() as patch:
        # Kernel specs in JUPYTER_PATH win over per-user ones, so "python3" is this venv's interpreter.
        patch.setenv("JUPYTER_PATH", str(Path(sys.prefix) / "share" / "jupyter"))
        yield


# The parameters `one_epoch_cv` was trained with, as 01_train takes them.
TRAINED = {"FOLDS": 2, "EPOCHS": 1, "SIZE": "128x64", "WORKERS": 0, "DEVICE": "cpu", "ENCODER_WEIGHTS": "none"}
TRAINED["OVERRIDES"] = {"lr": 1e-3}


@pytest.fixture(scope="module")
def train_runs(kernel, one_epoch_cv, tmp_path_factory) -> SimpleNamespace:
    """01_train three times: again on (a copy of) the finished tiny run, then with EPOCHS changed on that folder,
    then with SIZE changed on a new RUNS_DIR."""
    import papermill

    base = tmp_path_factory.mktemp("train-notebook")
    runs = base / "runs"
    shutil.copytree(one_epoch_cv.runs, runs, copy_function=os.link)  # nothing in it is rewritten in place
    before = {p.relative_to(runs): p.stat().st_mtime_ns for p in runs.rglob("*") if p.suffix in (".pt", ".jsonl")}
    common = {"DATA_ROOT": str(one_epoch_cv.root), **TRAINED}
    again = execute(TRAIN, base / "again.ipynb", {**common, "RUNS_DIR": str(runs)})
    after = {p.relative_to(runs): p.stat().st_mtime_ns for p in runs.rglob("*") if p.suffix in (".pt", ".jsonl")}
    with pytest.raises(papermill.PapermillExecutionError) as refused:
        execute(TRAIN, base / "refused.ipynb", {**common, "RUNS_DIR": str(runs), "EPOCHS": 2})
    new = base / "runs-64x32"
    changed = execute(TRAIN, base / "changed.ipynb", {**common, "RUNS_DIR": str(new), "SIZE": "64x32"})
    return SimpleNamespace(
        runs=runs, new=new, again=again, changed=changed, refused=refused.value, kept=before == after
    )


@pytest.mark.slow
def test_train_notebook_run_again_retrains_nothing(train_runs):
    assert train_runs.kept  # no checkpoint or log of the finished run was written again
    text = outputs_text(train_runs.again)
    assert f"| python environment | {sys.prefix} |" in text  # the kernel is this venv's python
    assert "training config: U-Net / resnet34, recipe seed" in text and "epochs 1 (recipe: 10)" in text
    assert "CV mIoU (2 folds, mean ± std, no selection on the scored fold): " in text  # a summary, in percent
    assert_text_progress_only(train_runs.again)


@pytest.mark.slow
def test_train_notebook_refuses_a_changed_setting_on_the_same_runs_dir_in_its_words(train_runs):
    error = " ".join(train_runs.refused.evalue.split())
    assert f"{train_runs.runs} holds runs trained with other settings (epochs: 1 -> 2)" in error
    assert "Set RUNS_DIR to a new folder (or put EPOCHS back)." in error and "--" not in error
    assert train_runs.refused.ename == "UserError"


@pytest.mark.slow
def test_train_notebook_trains_a_changed_setting_in_a_new_runs_dir(train_runs):
    summary = json.loads((train_runs.new / "summary.json").read_text())
    assert summary["k"] == 2 and summary["complete"] and summary["full"]["finished"]
    config = json.loads((train_runs.new / "full" / "config.json").read_text())["config"]
    assert config["size"] == [64, 32]
    book = train_runs.changed
    images = [o for c in book.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the live training curves were not drawn"
    bars = "".join(o.get("text", "") for c in book.cells for o in c.get("outputs", []) if o.get("name") == "stderr")
    assert re.search(r"cv: 100%\|[^|]*\| 2/2 epochs", bars) and re.search(r"cv: 100%\|[^|]*\| 3/3 epochs", bars)
    assert_text_progress_only(book)


@pytest.fixture(scope="module")
def evaluate_runs(kernel, one_epoch_cv, tmp_path_factory) -> SimpleNamespace:
    """02_evaluate twice in a row on the tiny run: with a comparison and photos, then with the default (empty)
    COMPARE_RUNS and IMAGES_DIR; outputs in a temporary folder."""
    base = tmp_path_factory.mktemp("evaluate-notebook")
    parameters = {
        "DATA_ROOT": str(one_epoch_cv.root),
        "RUNS_DIR": str(one_epoch_cv.runs),
        "CHECKPOINT": str(one_epoch_cv.runs / "full" / "best.pt"),
        "DEVICE": "cpu",
        "PRED_DIR": str(base / "predictions"),
        "TEST_PRED_DIR": str(base / "test_predictions"),
        "REPORT": str(base / "report.pdf"),
        "SUBMISSION": str(base / "submission.zip"),
        # the run beside itself under a second label: same folds, so the paired comparison runs too
        "COMPARE_RUNS": [str(one_epoch_cv.runs)],
        "COMPARE_EVALS": [None],
        "COMPARE_LABELS": "this,again",
        "IMAGES_DIR": str(one_epoch_cv.root / "leftImg8bit" / "val"),
        "IMAGES_OUT": str(base / "photos"),
        "IMAGES_COUNT": 3,
    }
    first = execute(EVALUATE, base / "first.ipynb", parameters)
    zipped = (base / "submission.zip").read_bytes()
    defaults = {"COMPARE_RUNS": [], "COMPARE_EVALS": [], "COMPARE_LABELS": None, "IMAGES_DIR": None}
    second = execute(EVALUATE, base / "second.ipynb", parameters | defaults)  # as Run All again with the defaults
    return SimpleNamespace(base=base, root=one_epoch_cv.root, first=first, second=second, zipped=zipped)


@pytest.mark.slow
def test_evaluate_notebook_predicts_scores_zips_and_reports(evaluate_runs):
    from cityseg.data.frames import list_frames

    base = evaluate_runs.base
    n_val = len(list_frames(evaluate_runs.root, "val", label_source=None))
    n_test = len(list_frames(evaluate_runs.root, "test", label_source=None))
    assert len(list((base / "predictions").rglob("*.png"))) == n_val
    with zipfile.ZipFile(base / "submission.zip") as archive:
        assert len(archive.namelist()) == n_test
    evaluation = json.loads((base / "predictions-eval" / "val.json").read_text())
    assert evaluation["cityseg"]["engine"] == "both" and evaluation["cityseg"]["n_frames"] == n_val
    reader = PdfReader(base / "report.pdf")
    assert len(reader.pages) == 6 and all("SYNTHETIC" in page.extract_text() for page in reader.pages)
    text = outputs_text(evaluate_runs.first)
    miou = 100 * evaluation["averageScoreClasses"]
    assert f"Validation mIoU (official cityscapesscripts): {miou:.2f} %" in text and "engine both" in text
    assert f"wrote {n_val} and kept 0 finished prediction(s)" in text and f"mIoU {miou:.2f}%" in text
    assert "**runs compared**" in text and "again − this: +0.00 ± 0.00 points over 2 folds" in text
    assert "PredictResult(" not in text and "Result(" not in text
    assert_text_progress_only(evaluate_runs.first)


@pytest.mark.slow
def test_evaluate_notebook_run_again_keeps_what_is_current(evaluate_runs):
    text = outputs_text(evaluate_runs.second)
    assert text.count("wrote 0 and kept 4 finished prediction(s)") == 2  # val and test
    assert (evaluate_runs.base / "submission.zip").read_bytes() == evaluate_runs.zipped  # the same zip, refreshed
    assert "submission: " in text and "report: " in text
    # the sections without input say so in one line each
    last_two = [cell for cell in evaluate_runs.second.cells if cell.cell_type == "code"][-2:]
    assert [outputs_text(SimpleNamespace(cells=[cell])).strip() for cell in last_two] == [
        "no other runs to compare (set COMPARE_RUNS)",
        "no photos of your own to predict (set IMAGES_DIR to a folder of them)",
    ]
    assert_text_progress_only(evaluate_runs.second)


@pytest.mark.slow
def test_evaluate_notebook_shows_overlays_of_the_photos_it_is_pointed_at(evaluate_runs):
    overlays = sorted((evaluate_runs.base / "photos").rglob("*_overlay.png"))
    assert len(overlays) == 3  # IMAGES_COUNT of the folder's four photos
    last = [cell for cell in evaluate_runs.first.cells if cell.cell_type == "code"][-1]
    assert "show_photos" in last.source
    assert any("image/png" in output.get("data", {}) for output in last.get("outputs", []))
    assert "wrote 3" in outputs_text(evaluate_runs.first)
