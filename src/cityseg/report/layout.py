"""A4 portrait pages on matplotlib: wrapped text and `matplotlib.table` tables from the top, one plot area below.

A page is a Figure filled downwards by a cursor (inches from the top); cityseg.report.plots draws into the space
left. PdfPages writes TrueType text and no dates, so the same run files always give the same bytes.
"""

from __future__ import annotations

import contextlib
import functools
import io
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.table import Table as MplTable
from matplotlib.textpath import TextToPath
from PIL import Image

from cityseg.errors import UserError
from cityseg.fileio import atomic_write_bytes
from cityseg.report.tables import CellStyle, Table

WIDTH, HEIGHT = 8.27, 11.69  # A4 portrait, inches
MARGIN, TOP, BOTTOM = 0.75, 0.75, 0.6
TEXT_WIDTH = WIDTH - 2 * MARGIN
LINE = 1.3  # line height in font sizes
WARNING_RED = "#b00020"
PAGE_RC = {  # TrueType text (not Type 3), so readers and tests extract real characters
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "font.size": 8.0,
    "axes.titlesize": 9.0,
    "axes.labelsize": 8.0,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "legend.fontsize": 7.0,
    "legend.title_fontsize": 7.0,
}


def typesetting() -> contextlib.AbstractContextManager:
    """The matplotlib settings pages and figures are built and saved under."""
    return matplotlib.rc_context(PAGE_RC)


def wrap(text: str, width: float, size: float, bold: bool = False) -> list[str]:
    """Lines of at most the characters that fit `width` inches at `size` points (DejaVu Sans averages)."""
    chars = max(8, int(width * 72 / (size * (0.6 if bold else 0.53))))
    return [line for part in text.split("\n") for line in (textwrap.wrap(part, chars) or [""])]


class Page:
    """One A4 portrait page; `synthetic` puts the SYNTHETIC mark into the running header."""

    def __init__(self, running_title: str, synthetic: bool, source: str = "cityseg report"):
        self.figure = Figure(figsize=(WIDTH, HEIGHT))
        self.cursor = TOP
        mark = ("SYNTHETIC DATA (cityseg synth), not Cityscapes", WARNING_RED) if synthetic else ("Cityscapes", "0.35")
        self.figure.text(MARGIN / WIDTH, self._y(0.42), f"{source}  ·  {running_title}", fontsize=7.5, color="0.35")
        self.figure.text(1 - MARGIN / WIDTH, self._y(0.42), mark[0], fontsize=7.5, color=mark[1], ha="right")
        self.figure.add_artist(Line2D([MARGIN / WIDTH, 1 - MARGIN / WIDTH], [self._y(0.5)] * 2, lw=0.4, color="0.6"))

    @staticmethod
    def _y(inches_from_top: float) -> float:
        return 1 - inches_from_top / HEIGHT

    def _need(self, inches: float, what: str) -> None:
        if self.cursor + inches > HEIGHT - BOTTOM + 1e-6:
            raise ValueError(f"{what} needs {inches:.2f} in but the page has {HEIGHT - BOTTOM - self.cursor:.2f} in")

    def text(
        self, text: str, size: float = 9.0, weight: str = "normal", color: str = "black", after: float = 0.08, box=None
    ):
        """A paragraph over the text width (inside a framed `box` of matplotlib bbox properties, if given)."""
        pad = 0.1 if box else 0.0
        lines = wrap(text, TEXT_WIDTH - 2 * pad, size, weight == "bold")
        style = {"fontsize": size, "weight": weight, "color": color, "va": "top", "linespacing": LINE, "bbox": box}
        self._need(len(lines) * LINE * size / 72 + 2 * pad, f"text {text[:40]!r}")
        self.cursor += pad
        self.figure.text((MARGIN + pad) / WIDTH, self._y(self.cursor), "\n".join(lines), **style)
        self.cursor += len(lines) * LINE * size / 72 + pad + after

    def title(self, text: str) -> None:
        self.text(text, size=15.0, weight="bold", after=0.1)

    def heading(self, text: str) -> None:
        self.cursor += 0.08
        self.text(text, size=11.0, weight="bold", after=0.04)

    def note(self, text: str) -> None:
        self.text(text, size=8.0, color="0.25", after=0.05)

    def banner(self, text: str) -> None:
        """A framed warning no reader can miss (SYNTHETIC data)."""
        box = {"boxstyle": "square,pad=0.6", "facecolor": "#fdecee", "edgecolor": WARNING_RED, "linewidth": 1.0}
        self.text(text, size=9.0, weight="bold", color=WARNING_RED, after=0.15, box=box)

    def table(
        self,
        table: Table,
        size: float = 8.5,
        styles: Mapping[tuple[int, int], CellStyle] | None = None,
        swatches: Sequence[object | None] | None = None,
        rules_before: Sequence[int] = (),
        after: float = 0.15,
    ) -> None:
        """A centred table with booktabs rules, numbers right-aligned, long text wrapped (a wrapped cell continues on
        table rows of its own, so a row's lines share baselines). styles: (row, column) -> CellStyle; swatches: a
        colour square before each row; rules_before: body rows with a thin rule above (e.g. a mean row)."""
        styles, numeric, line = styles or {}, table.numeric(), LINE * size / 72
        self.cursor += 0.05
        chars = _column_chars(table.columns, table.cells(), int(TEXT_WIDTH * 72 / (size * 0.55)))
        header = [textwrap.wrap(c, max([chars[i], *map(len, c.split())])) or [""] for i, c in enumerate(table.columns)]
        rows = [header, *([textwrap.wrap(c, chars[i]) or [""] for i, c in enumerate(row)] for row in table.cells())]
        widths = [
            max(_width(t, size, r == 0) for r, row in enumerate(rows) for t in row[i]) + 0.14
            for i in range(len(numeric))
        ]
        swatch = line if swatches is not None else 0.0
        total, lines = swatch + sum(widths), sum(max(map(len, row)) for row in rows)
        self._need(lines * line + 0.04, f"table {table.columns}")
        left = MARGIN + max(0.0, TEXT_WIDTH - total) / 2
        box = (left / WIDTH, self._y(self.cursor + lines * line), total / WIDTH, lines * line / HEIGHT)
        ax = self.figure.add_axes(box)
        ax.set_axis_off()
        grid, y = MplTable(ax, bbox=(0, 0, 1, 1)), 0
        for r, row in enumerate(rows):
            count = max(map(len, row))
            for n in range(count):
                top, bottom = n == 0 and (r < 2 or r - 1 in rules_before), r == len(rows) - 1 and n == count - 1
                rule = 0.8 if bottom or r == n == 0 else 0.5 if r == 1 else 0.3
                cells = [
                    (t[n] if n < len(t) else "", widths[c], numeric[c], styles.get((r - 1, c), CellStyle()))
                    for c, t in enumerate(row)
                ]
                if swatch:
                    cells.insert(0, ("", swatch, False, CellStyle(fill=swatches[r - 1] if r and n == 0 else None)))
                for x, (text, width, right, style) in enumerate(cells):
                    cell = grid.add_cell(y, x, width / total, 1 / lines, text=text, loc="right" if right else "left")
                    cell.PAD, cell.visible_edges = 0.07 / width, "closed" if style.fill else "T" * top + "B" * bottom
                    cell.set(linewidth=1.0 if style.fill else rule, facecolor=style.fill or "none")
                    cell.set_edgecolor("white" if style.fill else "black")  # white: filled cells stand apart
                    weight = "bold" if r == 0 else style.weight or "normal"
                    cell.get_text().set(color=style.color or "black", weight=weight, va="center_baseline")
                y += 1
        grid.auto_set_font_size(False)
        grid.set_fontsize(size)
        ax.add_table(grid)
        self.cursor += lines * line + after

    def plot_area(self, height: float | None = None, margins: Sequence[float] = (0.6, 0.1, 0.5, 0.3), space=0.3):
        """The page's figure, its subplot area `height` inches below the cursor (default: the rest) less `margins`
        (left, right, bottom, top, inches). Fixed margins: constrained layout varies in the last bits between runs."""
        height = HEIGHT - BOTTOM - self.cursor if height is None else height
        self._need(height, "plot")
        left, right, bottom, top = margins
        self.figure.subplots_adjust(
            (MARGIN + left) / WIDTH,
            self._y(self.cursor + height - bottom),
            1 - (MARGIN + right) / WIDTH,
            self._y(self.cursor + top),
            space,
            space,
        )
        self.cursor += height
        return self.figure


@functools.lru_cache(maxsize=8192)
def _width(text: str, size: float, bold: bool) -> float:
    """Inches one line of text takes in the report's font (what the PDF will draw)."""
    font = FontProperties(size=size, weight="bold" if bold else "normal")
    return TextToPath().get_text_width_height_descent(text, font, ismath=False)[0] / 72


def _column_chars(columns: Sequence[str], cells: Sequence[Sequence[str]], budget: int) -> list[int]:
    """Characters per column: the longest cell, headers whole if the table fits, else wrapped at their words; if
    still too wide, the widest text column wraps."""
    body = [max([1, *(len(row[i]) for row in cells)]) for i in range(len(columns))]
    if sum(max(b, len(c)) + 3 for b, c in zip(body, columns, strict=True)) <= budget:
        return [max(b, len(c)) for b, c in zip(body, columns, strict=True)]
    natural = [max([b, *map(len, c.split())]) + 3 for b, c in zip(body, columns, strict=True)]
    if sum(natural) <= budget:
        return body
    widest = max(range(len(body)), key=lambda i: body[i])
    return [max(16, budget - sum(natural) + natural[i] - 3) if i == widest else b for i, b in enumerate(body)]


def write_pdf(pages: Sequence[Page], out_pdf: Path, title: str, creator: str, subject: str, footer: str) -> None:
    """Number the pages and write them atomically with fixed metadata: no dates, so reruns give the same bytes."""
    for number, page in enumerate(pages, start=1):
        page.figure.text(MARGIN / WIDTH, 0.35 / HEIGHT, footer, fontsize=6.5, color="0.45")
        page.figure.text(1 - MARGIN / WIDTH, 0.35 / HEIGHT, f"{number} / {len(pages)}", fontsize=7.5, ha="right")
    metadata = {"Title": title, "Creator": creator, "Subject": subject, "CreationDate": None, "ModDate": None}
    buffer = io.BytesIO()  # PdfPages seeks: render in memory, write the file in one go
    with typesetting(), PdfPages(buffer, metadata=metadata) as pdf:
        for page in pages:
            pdf.savefig(page.figure)
    write_bytes(out_pdf, buffer.getvalue())


def check_output(out_pdf: Path, creator: str, command: str, side_folders: Mapping[Path, Sequence[str]]) -> None:
    """Refuse, before drawing, to replace a PDF or a side file (figure, table) that `command` did not write."""
    if out_pdf.is_dir():
        raise UserError(f"--out {out_pdf} is a folder; pass a file name ending in .pdf.")
    foreign = [out_pdf] if out_pdf.exists() and not _is_ours(out_pdf, creator) else []
    for folder, names in side_folders.items():
        if folder.exists() and not folder.is_dir():
            raise UserError(f"{folder} is a file, but `{command}` writes into a folder of that name; move it away.")
        foreign += [folder / name for name in names if (folder / name).exists() and not _is_ours(folder / name)]
    if foreign:
        raise UserError(
            f"{foreign[0]} exists and was not written by `{command}`; it is left alone. Pass another --out or "
            "move that file away."
        )


def figures_dir(out_pdf: Path) -> Path:
    """`report.pdf` -> `report_figures/`, the figures as PNGs."""
    return Path(out_pdf).with_name(Path(out_pdf).stem + "_figures")


def tables_dir(out_pdf: Path) -> Path:
    """`report.pdf` -> `report_tables/`, the tables as CSV and LaTeX."""
    return Path(out_pdf).with_name(Path(out_pdf).stem + "_tables")


TABLE_MARK = "% written by cityseg"  # first line of each .tex; the CSVs are recognised by their .tex twin


def _is_ours(path: Path, creator: str | None = None) -> bool:
    """A file cityseg wrote: with `creator`, a PDF naming it in its (uncompressed) info dictionary; else a figure (PNG
    marked Software=cityseg) or a table (its .tex twin starts with TABLE_MARK)."""
    try:
        if creator is not None:
            data = path.read_bytes()
            return data.startswith(b"%PDF") and f"/Creator ({creator})".encode() in data
        if path.suffix == ".png":
            with Image.open(path) as image:
                return image.info.get("Software") == "cityseg"
        return path.with_suffix(".tex").read_text(encoding="utf-8").startswith(TABLE_MARK)
    except (OSError, UnicodeDecodeError):
        return False


def write_tables(folder: Path, tables: Mapping[str, Table]) -> None:
    """Each table as `<name>.csv` (fractions at full precision) and `<name>.tex` (the PDF's text)."""
    for name, table in tables.items():
        write_bytes(folder / f"{name}.tex", f"{TABLE_MARK}: {table.title or name}\n{table.latex()}".encode())
        write_bytes(folder / f"{name}.csv", table.csv().encode())


def write_bytes(path: Path, data: bytes) -> None:
    """Atomically, so a kill leaves the old file or the new one."""
    atomic_write_bytes(path, lambda handle: handle.write(data))
