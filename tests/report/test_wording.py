"""Sentences of the report and the comparison that read right in the edge cases (one epoch, nothing differs)."""

from __future__ import annotations

from types import SimpleNamespace

from cityseg.report.compare import Comparison
from cityseg.report.pdf import full_fit_text


def run_files(epochs: int, finished: bool) -> SimpleNamespace:
    full = {"epochs": epochs, "epochs_done": 0, "finished": finished, "schedule_epochs": 4}
    summary = {"folds": [{"select": "last"}], "chosen_epochs": [epochs], "full": full}
    return SimpleNamespace(summary=summary, configs={"full": {"n_train": 8}})


def test_full_fit_text_says_one_epoch_in_the_singular():
    assert "8 train images, 1 epoch = the folds' epochs" in full_fit_text(run_files(1, True))
    assert "0 of 1 epoch done" in full_fit_text(run_files(1, False))
    assert "8 train images, 3 epochs = " in full_fit_text(run_files(3, True))


def test_settings_that_differ_say_so_in_a_sentence_when_none_does():
    def compared(label: str, lr: float) -> SimpleNamespace:
        return SimpleNamespace(label=label, runs=SimpleNamespace(config={"config": {"lr": lr, "epochs": 2}}))

    same = Comparison([compared("a", 1e-3), compared("b", 1e-3)]).settings_table()
    assert not same.rows
    for shown in (same.markdown(), str(same)):
        assert "None: every setting is the same." in shown and "| setting |" not in shown
    differ = Comparison([compared("a", 1e-3), compared("b", 3e-3)]).settings_table()
    assert [row[0] for row in differ.rows] == ["lr"] and "| setting | a | b |" in differ.markdown()
