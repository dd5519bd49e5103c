"""Plain-text tables and the one number format of the notebook, the PDF and the README."""

from __future__ import annotations

from cityseg.report.tables import mean_std_text, percent


def test_percent_and_mean_std_use_one_format():
    assert percent(0.66789) == "66.79"
    assert percent(None) == "n/a"
    assert percent(float("nan")) == "n/a"
    assert mean_std_text(0.5, 0.0123) == "50.00 ± 1.23"
    assert mean_std_text(0.5, None) == "50.00"  # one fold: no spread to show


def test_a_summary_imports_no_plotting():
    """`cityseg cv` prints its summary through cityseg.report.results: matplotlib must stay out of it."""
    import subprocess
    import sys

    code = "import sys; from cityseg.report.results import summary_text; import cityseg.report; print('matplotlib' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
