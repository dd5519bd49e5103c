"""`cityseg evaluate`: exit codes, the table, the JSON (official keys + cityseg section) and CSV it writes,
where it writes them by default, and what it refuses to overwrite."""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys

import pytest
from helpers_noisy import write_noisy_predictions

from cityseg.cli import main
from cityseg.data.frames import list_frames
from cityseg.evaluation import compare_exports, default_json_path, evaluate
from cityseg.evaluation import runner as runner_module
from cityseg.labels import CLASS_NAMES

OFFICIAL_KEYS = {
    "confMatrix", "priors", "labels", "classScores", "classInstScores", "categoryScores", "categoryInstScores",
    "averageScoreClasses", "averageScoreInstClasses", "averageScoreCategories", "averageScoreInstCategories",
}  # fmt: skip


def _unwrapped(text: str) -> str:
    """The CLI wraps error paragraphs at 100 columns; compare words, not line breaks."""
    return " ".join(text.split())


@pytest.fixture
def pred(synth_raw_root, tmp_path):
    out = tmp_path / "predictions"
    write_noisy_predictions(list_frames(synth_raw_root, "val", label_source="ids"), out, seed=9)
    return out


def test_writes_table_json_and_csv(pred, synth_raw_root, tmp_path, capsys):
    out = tmp_path / "eval" / "val.json"
    assert (
        main(["evaluate", str(pred), str(synth_raw_root), "--json", str(out), "--workers", "2", "--engine", "both"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "mIoU (19 classes)" in printed.splitlines()[-4] and "fast is" in printed

    result = json.loads(out.read_text())
    assert OFFICIAL_KEYS <= set(result)
    info = result["cityseg"]
    assert info["engine"] == "both" and info["split"] == "val" and info["n_frames"] == 4
    assert info["pred_dir"] == str(pred.resolve()) and info["synthetic"] is True
    assert {"official_s", "fast_s", "validate_s"} <= set(info["timings"])
    assert info["scores"]["miou"] == result["averageScoreClasses"]
    assert OFFICIAL_KEYS <= set(info["fast"])
    assert 0 < result["averageScoreClasses"] < 1 and "fractions of 1" in info["units"]  # the JSON keeps fractions

    with (tmp_path / "eval" / "val.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["class"] for r in rows] == list(CLASS_NAMES)
    for row in rows:
        assert float(row["IoU (fraction of 1)"]) == pytest.approx(result["classScores"][row["class"]])
        iiou = float(row["iIoU (fraction of 1)"])
        assert (math.isnan(iiou) and math.isnan(result["classInstScores"][row["class"]])) or iiou == pytest.approx(
            result["classInstScores"][row["class"]]
        )
    assert not list(out.parent.glob(".*"))  # no temp files left


def test_scores_are_printed_in_percent_with_two_decimals(pred, synth_raw_root, tmp_path, capsys):
    assert main(["evaluate", str(pred), str(synth_raw_root), "--json", str(tmp_path / "e.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    result = json.loads((tmp_path / "e.json").read_text())
    mean = next(line for line in lines if line.startswith("mIoU (19 classes)"))
    assert mean.split()[3:5] == [f"{100 * result['averageScoreClasses']:.2f}", "%"]
    road = next(line for line in lines if line.startswith("road "))
    assert road.split()[1:3] == [f"{100 * result['classScores']['road']:.2f}", "%"]
    assert not any(re.search(r"\b0\.\d{3}\b", line) for line in lines)  # no fractions anywhere in the table


def test_default_json_goes_beside_not_inside_the_prediction_folder(pred, synth_raw_root, capsys):
    before = sorted(p.name for p in pred.iterdir())
    assert main(["evaluate", str(pred), str(synth_raw_root), "--engine", "fast"]) == 0
    expected = default_json_path(pred, "val")
    assert expected.is_file() and expected.with_suffix(".csv").is_file()
    assert pred.resolve() not in expected.parents
    assert sorted(p.name for p in pred.iterdir()) == before
    assert str(expected) in capsys.readouterr().out
    # a second run replaces its own earlier output
    assert main(["evaluate", str(pred), str(synth_raw_root), "--engine", "official"]) == 0
    assert json.loads(expected.read_text())["cityseg"]["engine"] == "official"


def test_refuses_to_overwrite_a_foreign_file(pred, synth_raw_root, tmp_path, capsys):
    foreign = tmp_path / "notes.json"
    foreign.write_text('{"mine": true}')
    assert main(["evaluate", str(pred), str(synth_raw_root), "--json", str(foreign)]) == 2
    assert "was not written by `cityseg evaluate`" in _unwrapped(capsys.readouterr().err)
    assert foreign.read_text() == '{"mine": true}'
    foreign_csv = tmp_path / "other.csv"
    foreign_csv.write_text("a,b\n1,2\n")
    assert main(["evaluate", str(pred), str(synth_raw_root), "--json", str(tmp_path / "other.json")]) == 2
    assert foreign_csv.read_text() == "a,b\n1,2\n" and not (tmp_path / "other.json").exists()


def test_bad_predictions_exit_2_with_one_paragraph(pred, synth_raw_root, tmp_path, capsys):
    next(pred.iterdir()).unlink()
    assert main(["evaluate", str(pred), str(synth_raw_root), "--json", str(tmp_path / "e.json")]) == 2
    err = _unwrapped(capsys.readouterr().err)
    assert err.startswith("error: ") and "without a prediction" in err and "Traceback" not in err


def test_engine_mismatch_exits_1(pred, synth_raw_root, tmp_path, monkeypatch, capsys):
    real = runner_module.run_fast

    def wrong(*args, **kwargs):
        export, frames = real(*args, **kwargs)
        export["averageScoreClasses"] += 0.01
        return export, frames

    monkeypatch.setattr(runner_module, "run_fast", wrong)
    out = tmp_path / "e.json"
    assert main(["evaluate", str(pred), str(synth_raw_root), "--json", str(out), "--engine", "both"]) == 1
    assert "disagrees with the official script" in _unwrapped(capsys.readouterr().err)
    assert not out.exists()


def test_runs_as_a_subprocess(pred, synth_raw_root, tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cityseg",
            "evaluate",
            str(pred),
            str(synth_raw_root),
            "--json",
            str(tmp_path / "s.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "s.json").is_file()


def test_an_evaluation_never_imports_torch(pred, synth_raw_root, tmp_path):
    """Importing torch costs a first evaluation seconds (more than the scoring itself on val)."""
    script = "import sys\nfrom cityseg.cli import main\ncode = main(sys.argv[1:])\nprint('torch' in sys.modules, file=sys.stderr)\nsys.exit(code)"
    done = subprocess.run(
        [sys.executable, "-c", script, "evaluate", str(pred), str(synth_raw_root), "--json", str(tmp_path / "e.json")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "False", "the evaluation imported torch"


def test_the_default_engine_is_fast_and_identical_to_the_official_script_on_sorted_frames(
    pred, synth_raw_root, tmp_path
):
    """Both engines see the frames in sorted order (prediction_pairs), so every number is equal, not just close;
    the official CLI sums frames in glob order, so its iIoU may differ from these in the last bits."""
    out = tmp_path / "default.json"
    assert main(["evaluate", str(pred), str(synth_raw_root), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["cityseg"]["engine"] == "fast" and "official_s" not in result["cityseg"]["timings"]
    official = evaluate(pred, synth_raw_root, "val", engine="official")
    assert compare_exports(official, result) == ([], 0.0)


SHA = "ab" * 32


def test_the_prediction_manifest_is_copied_into_the_json(pred, synth_raw_root, tmp_path):
    settings = {"checkpoint_sha256": SHA, "mode": "whole", "precision": "float32", "crop": [1024, 512]}
    (pred / ".cityseg-predict.json").write_text(json.dumps({"settings": {**settings, "nested": {"a": [1]}}}))
    result = evaluate(pred, synth_raw_root, "val", engine="fast", json_out=tmp_path / "e.json")
    made = json.loads((tmp_path / "e.json").read_text())["cityseg"]["predictions"]
    assert made == result["cityseg"]["predictions"]
    assert made["checkpoint_sha256"] == SHA and made["settings"] == settings  # what is not a plain value is left out


@pytest.mark.parametrize(
    "manifest",
    [
        '{"settings": [1, 2]}',
        '{"settings": "whole"}',
        '{"settings": {"checkpoint_sha256": 5}}',
        '{"frames": {}}',
        "not json",
        '{"settings": ' + "[" * 200_000 + "]" * 200_000 + "}",
    ],
    ids=["list", "string", "no-sha", "no-settings", "garbage", "deep"],
)
def test_a_malformed_manifest_is_skipped_with_a_warning(pred, synth_raw_root, tmp_path, capsys, manifest):
    (pred / ".cityseg-predict.json").write_text(manifest)
    assert main(["evaluate", str(pred), str(synth_raw_root), "--json", str(tmp_path / "e.json")]) == 0
    assert "is not a readable `cityseg predict` manifest" in _unwrapped(capsys.readouterr().err)
    info = json.loads((tmp_path / "e.json").read_text())["cityseg"]
    assert info["predictions"] is None and "manifest" in info["warnings"][0]


def test_a_json_path_below_a_file_is_exit_2_not_a_traceback(pred, synth_raw_root, tmp_path, capsys):
    (tmp_path / "taken").write_text("mine")
    assert main(["evaluate", str(pred), str(synth_raw_root), "--json", str(tmp_path / "taken" / "e.json")]) == 2
    assert "which is a file, not a folder" in _unwrapped(capsys.readouterr().err)
    assert (tmp_path / "taken").read_text() == "mine"
