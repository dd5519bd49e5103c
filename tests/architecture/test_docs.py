"""Figures the README quotes are the measured ones: its model table matches the newest model_zoo row of
BENCHMARKS.md (written by bench/model_zoo.py), so a rerun of the bench that moves a number fails until the
README follows."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _newest_row(benchmark: str) -> list[str]:
    rows = [line for line in (ROOT / "BENCHMARKS.md").read_text().splitlines() if f"| {benchmark} |" in line]
    assert rows, f"BENCHMARKS.md has no {benchmark} row"
    return [cell.strip() for cell in max(rows).strip("|").split("|")]  # rows start with their date


def test_the_readme_model_table_is_the_newest_model_zoo_row():
    _date, _name, _machine, _command, figures, ratios, _notes = _newest_row("model_zoo")
    measured = {
        model: (params, gflop)
        for model, params, gflop in re.findall(r"(\w+/\w+): ([\d.]+)M params, (\d+) GFLOP", figures)
    }
    ratio = dict(re.findall(r"(\w+/\w+) ([\d.]+)x", ratios))
    readme = {
        model: (params, gflop, vs)
        for model, params, gflop, vs in re.findall(
            r"^\| `(\w+/\w+)`[^|]*\| ([\d.]+) M \| (\d+) \| ([\d.]+)x \|", (ROOT / "README.md").read_text(), re.M
        )
    }
    assert set(readme) == set(measured) and len(readme) >= 5, (sorted(readme), sorted(measured))
    for model, (params, gflop, vs) in readme.items():
        assert (params, gflop) == measured[model], model
        assert vs == ratio.get(model, "1.00"), model
