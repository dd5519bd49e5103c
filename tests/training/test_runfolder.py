"""runfolder.load_log is the one reader of log.jsonl: for the trainer resuming its own run and for the report."""

from __future__ import annotations

import json

import pytest

from cityseg.errors import UserError
from cityseg.training.runfolder import LOG_FILE, load_log, run_names

PRODUCER = "`cityseg cv DATA_ROOT --out RUNS`"


def write_log(run_dir, text: str) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LOG_FILE).write_text(text)


def test_a_torn_last_line_is_skipped_by_every_reader(tmp_path):
    rows = [{"epoch": 1, "val_miou": 0.1}, {"epoch": 2, "val_miou": 0.2}]
    # A kill mid-append leaves the third row without its newline, complete or not.
    for torn in ('{"epoch": 3, "val', '{"epoch": 3, "val_miou": 0.3}'):
        write_log(tmp_path, "".join(json.dumps(row) + "\n" for row in rows) + torn)
        assert load_log(tmp_path) == rows
        assert load_log(tmp_path, PRODUCER) == rows


def test_a_missing_log_is_empty_for_the_trainer_and_an_error_for_the_report(tmp_path):
    assert load_log(tmp_path) == []
    with pytest.raises(UserError, match="missing.*cityseg cv"):
        load_log(tmp_path, PRODUCER)


def test_a_damaged_line_is_an_error_naming_the_line(tmp_path):
    write_log(tmp_path, '{"epoch": 1}\nnot json\n{"epoch": 2}\n')
    for producer in (None, PRODUCER):
        with pytest.raises(UserError, match=f"line 2 of {tmp_path / LOG_FILE}"):
            load_log(tmp_path, producer)


def test_the_report_refuses_an_epoch_logged_twice_and_rows_without_an_epoch(tmp_path):
    write_log(tmp_path, '{"epoch": 1}\n{"epoch": 2}\n{"epoch": 2}\n')
    assert [row["epoch"] for row in load_log(tmp_path)] == [1, 2, 2]  # the trainer repairs, it does not judge
    with pytest.raises(UserError, match=r"epoch 2 twice \(lines 2 and 3\)"):
        load_log(tmp_path, PRODUCER)
    write_log(tmp_path, '{"epoch": 1}\n[1, 2]\n')
    with pytest.raises(UserError, match="line 2 is not an epoch record"):
        load_log(tmp_path, PRODUCER)


def test_run_names_lists_folds_in_number_order_then_the_full_fit(tmp_path):
    for name in ("fold_10", "fold_2", "full", "fold_x", "notes"):
        (tmp_path / name).mkdir()
    (tmp_path / "fold_3").write_text("a file, not a run")
    assert run_names(tmp_path) == ["fold_2", "fold_10", "full"]
