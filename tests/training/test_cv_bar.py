"""The one cv progress bar: its total follows the full fit's epoch count once the folds have chosen it."""

from __future__ import annotations

import json

import pytest

from cityseg.training.cv import _Bar


@pytest.mark.parametrize("enabled", [True, False])
def test_the_bar_total_follows_the_chosen_full_fit_epochs_and_keeps_its_start(tmp_path, enabled):
    (tmp_path / "fold_0").mkdir()
    (tmp_path / "fold_0" / "log.jsonl").write_text("".join(json.dumps({"epoch": e}) + "\n" for e in range(3)))
    planned = {"fold_0": (tmp_path / "fold_0", 3), "full": (tmp_path / "full", 5)}
    bar = _Bar(planned, enabled, None)
    started = getattr(bar.bar, "start_t", None)  # a disabled tqdm keeps no clock
    assert (bar.bar.total, bar.bar.n) == (8, 3)
    bar.set_epochs("full", 2)
    assert (bar.bar.total, bar.bar.n) == (5, 3) and getattr(bar.bar, "start_t", None) == started
    bar("full", {"epoch": 0})
    assert bar.bar.n == (4 if enabled else 3)  # a hidden bar counts nothing
    bar.bar.close()
