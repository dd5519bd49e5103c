"""Figure builders and the plain-text tables: what they draw and how numbers are formatted."""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from cityseg.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, TRAIN_ID_COLORS
from cityseg.report.plots import (
    ERROR_CORRECT,
    ERROR_IGNORED,
    ERROR_WRONG,
    Example,
    LiveCurves,
    class_iou_bars,
    confusion_figure,
    dataset_sample,
    error_map,
    figure_png,
    normalize_rows,
    qualitative_panel,
    training_curves,
)
from cityseg.report.tables import Table


def test_error_map_marks_wrong_red_ignored_white_and_right_black():
    truth = np.array([[0, 1], [IGNORE_INDEX, 2]], dtype=np.uint8)
    pred = np.array([[0, 2], [5, 2]], dtype=np.uint8)
    colours = error_map(truth, pred)
    assert colours.shape == (2, 2, 3) and colours.dtype == np.uint8
    assert tuple(colours[0, 0]) == ERROR_CORRECT
    assert tuple(colours[0, 1]) == ERROR_WRONG
    assert tuple(colours[1, 0]) == ERROR_IGNORED  # ignored ground truth is never counted as an error
    assert tuple(colours[1, 1]) == ERROR_CORRECT


def test_normalize_rows_sums_each_present_class_to_one_and_leaves_absent_classes_empty():
    conf = np.array([[8, 2, 0], [0, 0, 0], [1, 1, 2]])
    norm = normalize_rows(conf)
    np.testing.assert_allclose(norm[0], [0.8, 0.2, 0.0])
    assert np.isnan(norm[1]).all()
    np.testing.assert_allclose(norm[2].sum(), 1.0)


def test_training_curves_draw_each_run_and_skip_missing_validation():
    rows = [{"epoch": e, "train_loss": 2.0 / e, "val_loss": 2.5 / e, "val_miou": 0.1 * e} for e in (1, 2, 3)]
    full = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": None, "val_miou": None} for e in (1, 2)]
    fig = training_curves({"fold_0": rows, "fold_1": rows, "full": full})
    ax_loss, ax_miou, ax_legend = fig.axes
    labels = [line.get_label() for line in ax_loss.get_lines()]
    assert labels == ["fold_0 train_loss", "fold_0 val_loss", "fold_1 train_loss", "fold_1 val_loss", "full train_loss"]
    assert [line.get_label() for line in ax_miou.get_lines()] == ["fold_0 val_miou", "fold_1 val_miou"]
    np.testing.assert_allclose(ax_miou.get_lines()[0].get_ydata(), [10.0, 20.0, 30.0])  # plotted in percent
    # One legend, in its own row under the plots, so it covers no curve: a colour per run, a style per split.
    assert not ax_loss.get_legend() and not ax_miou.get_legend() and not ax_legend.axison
    entries = [text.get_text() for text in ax_legend.get_legend().get_texts()]
    assert entries == ["fold_0", "fold_1", "full", "train", "val"]
    assert ax_legend.get_position().y1 <= min(ax_loss.get_position().y0, ax_miou.get_position().y0)


def test_the_full_fit_alone_gets_no_empty_miou_panel():
    full = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": None, "val_miou": None} for e in (1, 2)]
    fig = training_curves({"full": full})
    assert len(fig.axes) == 2 and fig.axes[0].get_lines()  # the loss panel and the legend row


def test_class_iou_bars_show_cv_and_val_side_by_side_with_gaps_for_absent_classes():
    mean = [0.5] * NUM_CLASSES
    mean[3] = None  # a class absent from every fold
    fig = class_iou_bars(mean, [0.1] * NUM_CLASSES, [0.4] * NUM_CLASSES)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(CLASS_NAMES)
    widths = [p.get_width() for p in ax.patches]
    assert len(widths) == 2 * NUM_CLASSES
    assert math.isnan(widths[3]) and widths[0] == pytest.approx(50.0) and widths[NUM_CLASSES] == pytest.approx(40.0)
    assert not [t for t in ax.texts if t.get_text() == "0.00"]  # no zero: no zero labels


def test_a_zero_iou_gets_a_stub_bar_and_a_label_unlike_an_absent_class():
    val = [0.4] * NUM_CLASSES
    val[5] = 0.0  # pole: present, never right
    ax = class_iou_bars(None, None, val).axes[0]
    assert 0 < ax.patches[5].get_width() < 1  # a stub, visible
    (label,) = [t for t in ax.texts if t.get_text() == "0.00"]
    assert label.get_position()[1] == pytest.approx(ax.patches[5].get_y() + ax.patches[5].get_height() / 2)


def test_confusion_figure_writes_every_cell_of_one_percent_or_more_and_the_diagonal_in_bold():
    conf = np.diag(np.arange(1, NUM_CLASSES + 1)) * 1000
    conf[0, 1] = 1000  # road: half right, half sidewalk
    conf[2, 3] = 5  # building -> wall: 5 of 3005 pixels, under 1 %: left blank
    fig = confusion_figure(conf)
    cells = {(int(t.get_position()[1]), int(t.get_position()[0])): t for t in fig.axes[0].texts}
    assert cells[(0, 0)].get_text() == "50" and cells[(0, 1)].get_text() == "50"
    assert (2, 3) not in cells and cells[(2, 2)].get_text() == "100"
    assert len(cells) == NUM_CLASSES + 1
    assert all(cells[(i, i)].get_fontweight() == "bold" for i in range(NUM_CLASSES))
    assert cells[(0, 1)].get_fontweight() == "normal"


def test_qualitative_panel_has_four_columns_and_shrinks_big_frames_without_mixing_labels():
    truth = np.zeros((1024, 2048), dtype=np.uint8)
    truth[:, 1024:] = 13  # car
    example = Example("frame", np.zeros((1024, 2048, 3), dtype=np.uint8), truth, truth.copy())
    fig = qualitative_panel([example, example])
    assert len(fig.axes) == 9  # two rows of four panels, and the palette's legend row
    assert [t.get_text() for t in fig.axes[8].get_legend().get_texts()] == list(CLASS_NAMES)
    shown = fig.axes[1].get_images()[0].get_array()
    assert max(shown.shape[:2]) <= 1024
    colours = {tuple(c) for c in np.asarray(shown).reshape(-1, 3)}
    assert colours == {(128, 64, 128), tuple(TRAIN_ID_COLORS[13])}  # road and car only, no blended colours


def test_dataset_sample_legend_lists_only_classes_present():
    mask = np.full((64, 128), IGNORE_INDEX, dtype=np.uint8)
    mask[:32] = 10  # sky
    mask[32:, :10] = 0  # road
    fig = dataset_sample(np.zeros((64, 128, 3), np.uint8), mask, "x")
    assert isinstance(fig, Figure) and [t.get_text() for t in fig.legends[0].get_texts()] == ["road", "sky"]


def test_figure_png_is_marked_as_ours():
    png = figure_png(training_curves({}), dpi=20)
    assert png.startswith(b"\x89PNG") and b"cityseg" in png


def test_class_iou_bars_use_the_cityscapes_palette():
    fig = class_iou_bars([0.5] * NUM_CLASSES, None, [0.4] * NUM_CLASSES)
    bars = fig.axes[0].patches
    for i in range(NUM_CLASSES):
        assert to_rgb(bars[i].get_facecolor()) == pytest.approx(tuple(TRAIN_ID_COLORS[i] / 255))  # CV: solid
        assert to_rgb(bars[NUM_CLASSES + i].get_edgecolor()) == pytest.approx(tuple(TRAIN_ID_COLORS[i] / 255))
        assert bars[NUM_CLASSES + i].get_hatch()  # val: hatched, in the class's colour


def test_table_aligns_numbers_right_and_renders_markdown():
    table = Table.build(("class", "IoU (%)"), [("road", "97.10"), ("traffic light", "5.00 ± 1.00")], title="t")
    lines = table.text().splitlines()
    assert lines[0].startswith("class") and lines[1].startswith("-----")
    assert lines[2].endswith("      97.10") and lines[3].endswith("5.00 ± 1.00")
    assert table.markdown().splitlines()[2:4] == ["| class | IoU (%) |", "|:---|---:|"]
    assert table.text(header=False).splitlines()[0].startswith("road")


def test_live_curves_keep_one_row_per_epoch_and_redraw_in_place(monkeypatch):
    shown = []

    class Handle:
        def update(self, obj):
            shown.append(("update", obj))

    def fake_display(obj, display_id=None):
        shown.append(("display", obj))
        return Handle()

    monkeypatch.setattr("IPython.display.display", fake_display)
    live = LiveCurves({"fold_0": [{"epoch": 1, "train_loss": 3.0, "val_loss": 3.0, "val_miou": 0.1}]})
    live.update("fold_0", {"epoch": 1, "train_loss": 2.0, "val_loss": 2.5, "val_miou": 0.2})  # resumed epoch 1
    live.update("fold_0", {"epoch": 2, "train_loss": 1.0, "val_loss": 2.0, "val_miou": 0.3})
    assert [r["train_loss"] for r in live.histories["fold_0"]] == [2.0, 1.0]
    assert [kind for kind, _ in shown] == ["display", "update"]  # one output, replaced
