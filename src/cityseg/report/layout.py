"""A4 portrait pages on matplotlib: wrapped text and `matplotlib.table` tables filled downwards by a cursor (inches
from the top), one plot area below; PdfPages writes TrueType text and no dates, so reruns give the same bytes."""

import contextlib
import functools
import io
import itertools
import textwrap
from collections.abc import Callable, Mapping, Sequence
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
from cityseg.report.plots import figure_png
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


class Page:
    """One A4 portrait page, under its `title` if given; `synthetic` puts the SYNTHETIC mark into the running header."""

    def __init__(self, running_title: str, synthetic: bool, source: str, title: str = ""):
        self.figure, self.cursor = Figure(figsize=(WIDTH, HEIGHT)), TOP
        self.running_title = running_title
        mark = ("SYNTHETIC DATA (cityseg synth), not Cityscapes", WARNING_RED) if synthetic else ("Cityscapes", "0.35")
        self.figure.text(MARGIN / WIDTH, self._y(0.42), f"{source}  ·  {running_title}", fontsize=7.5, color="0.35")
        self.figure.text(1 - MARGIN / WIDTH, self._y(0.42), mark[0], fontsize=7.5, color=mark[1], ha="right")
        self.figure.add_artist(Line2D([MARGIN / WIDTH, 1 - MARGIN / WIDTH], [self._y(0.5)] * 2, lw=0.4, color="0.6"))
        if title:
            self.text(title, size=15.0, weight="bold", after=0.1)

    @staticmethod
    def _y(inches_from_top: float) -> float:
        return 1 - inches_from_top / HEIGHT

    def _need(self, inches: float, what: str) -> None:
        if self.cursor + inches > HEIGHT - BOTTOM + 1e-6:
            raise ValueError(f"{what} needs {inches:.2f} in but the page has {HEIGHT - BOTTOM - self.cursor:.2f} in")

    def text(
        self, text: str, size: float = 9.0, weight: str = "normal", color: str = "black", after: float = 0.08, box=None
    ):
        """A paragraph over the text width, wrapped by DejaVu Sans's average character width (inside a framed `box` of
        matplotlib bbox properties, if given)."""
        pad = 0.1 if box else 0.0
        chars = max(8, int((TEXT_WIDTH - 2 * pad) * 72 / (size * (0.6 if weight == "bold" else 0.53))))
        lines = [line for part in text.split("\n") for line in (textwrap.wrap(part, chars) or [""])]
        style = {"fontsize": size, "weight": weight, "color": color, "va": "top", "linespacing": LINE, "bbox": box}
        self._need(len(lines) * LINE * size / 72 + 2 * pad, f"text {text[:40]!r}")
        self.cursor += pad
        self.figure.text((MARGIN + pad) / WIDTH, self._y(self.cursor), "\n".join(lines), **style)
        self.cursor += len(lines) * LINE * size / 72 + pad + after

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
        """A centred booktabs table, numbers right-aligned, long text wrapped onto table rows of its own. styles:
        (row, column) -> CellStyle; swatches: a colour square per row; rules_before: body rows with a rule above."""
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
            for n, texts in enumerate(itertools.zip_longest(*row, fillvalue="")):  # the row's n-th line of text
                top, bottom = n == 0 and (r < 2 or r - 1 in rules_before), r == len(rows) - 1 and n == count - 1
                rule = 0.8 if bottom or r == n == 0 else 0.5 if r == 1 else 0.3
                cells = [(t, widths[c], numeric[c], styles.get((r - 1, c), CellStyle())) for c, t in enumerate(texts)]
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
        """The figure, its subplot area `height` inches below the cursor less fixed `margins` (l, r, b, t)."""
        height = HEIGHT - BOTTOM - self.cursor if height is None else height
        self._need(height, "plot")
        left, right, bottom, top = margins
        x0, x1 = (MARGIN + left) / WIDTH, 1 - (MARGIN + right) / WIDTH
        y0, y1 = self._y(self.cursor + height - bottom), self._y(self.cursor + top)
        self.figure.subplots_adjust(x0, y0, x1, y1, space, space)
        self.cursor += height
        return self.figure


@functools.lru_cache(maxsize=8192)
def _width(text: str, size: float, bold: bool) -> float:
    """Inches one line of text takes in the report's font (what the PDF will draw)."""
    font = FontProperties(size=size, weight="bold" if bold else "normal")
    return TextToPath().get_text_width_height_descent(text, font, ismath=False)[0] / 72


def _column_chars(columns: Sequence[str], cells: Sequence[Sequence[str]], budget: int) -> list[int]:
    """Characters per column: whole if the table fits, else headers then the widest column wrap."""
    body = [max([1, *(len(row[i]) for row in cells)]) for i in range(len(columns))]
    if sum(max(b, len(c)) + 3 for b, c in zip(body, columns, strict=True)) <= budget:
        return [max(b, len(c)) for b, c in zip(body, columns, strict=True)]
    natural = [max([b, *map(len, c.split())]) + 3 for b, c in zip(body, columns, strict=True)]
    if sum(natural) <= budget:
        return body
    widest = max(range(len(body)), key=lambda i: body[i])
    return [max(16, budget - sum(natural) + natural[i] - 3) if i == widest else b for i, b in enumerate(body)]


class Document:
    """The pages of one PDF and the figures and tables beside it, by `creator`: the command named in every page's
    header and in the PDF's metadata, and the only one whose files `check` lets this document replace."""

    def __init__(self, out_pdf: Path, creator: str, synthetic: bool):
        self.out_pdf, self.creator, self.synthetic, self.pages = Path(out_pdf), creator, synthetic, []

    def check(self, tables: Sequence[str], figures: Sequence[str] = ()) -> None:
        """Refuse, before drawing, to replace the PDF or a figure or table beside it that `creator` did not write."""
        if self.out_pdf.is_dir():
            raise UserError(f"--out {self.out_pdf} is a folder; pass a file name ending in .pdf.")
        side = [figures_dir(self.out_pdf) / f"{name}.png" for name in figures]
        side += [tables_dir(self.out_pdf) / f"{name}{ext}" for name in tables for ext in (".csv", ".tex")]
        for folder in dict.fromkeys(path.parent for path in side):
            if folder.exists() and not folder.is_dir():
                raise UserError(
                    f"{folder} is a file, but `{self.creator}` writes into a folder of that name; move it away."
                )
        foreign = [self.out_pdf] if self.out_pdf.exists() and not _is_ours(self.out_pdf, self.creator) else []
        foreign += [path for path in side if path.exists() and not _is_ours(path)]
        if foreign:
            raise UserError(
                f"{foreign[0]} exists and was not written by `{self.creator}`; it is left alone. Pass another --out or "
                "move that file away."
            )

    def page(self, running_title: str, title: str = "") -> Page:
        self.pages.append(Page(running_title, self.synthetic, self.creator, title))
        return self.pages[-1]

    def add(self, draw: Callable[[Page], object]) -> None:
        """Draw a block on the last page, or on a new page under the same running title when it does not fit."""
        try:
            draw(self.pages[-1])
        except ValueError:  # a block checks that it fits before it draws anything
            draw(self.page(self.pages[-1].running_title))

    def write(
        self, title: str, subject: str, footer: str, tables: Mapping[str, Table], figures: Mapping[str, Figure] = {}
    ) -> None:
        """The numbered pages as a PDF with fixed metadata (no dates: reruns give the same bytes), the figures as PNGs
        and the tables as CSV (fractions at full precision) and LaTeX (the PDF's text), each file written atomically."""
        pages, pdf, tables_folder = self.pages, io.BytesIO(), tables_dir(self.out_pdf)
        for number, page in enumerate(pages, start=1):
            page.figure.text(MARGIN / WIDTH, 0.35 / HEIGHT, footer, fontsize=6.5, color="0.45")
            page.figure.text(1 - MARGIN / WIDTH, 0.35 / HEIGHT, f"{number} / {len(pages)}", fontsize=7.5, ha="right")
        metadata = {"Title": title, "Creator": self.creator, "Subject": subject, "CreationDate": None, "ModDate": None}
        with typesetting():
            with PdfPages(pdf, metadata=metadata) as document:
                for page in pages:
                    document.savefig(page.figure)
            files = {self.out_pdf: pdf.getvalue()}
            files |= {figures_dir(self.out_pdf) / f"{name}.png": figure_png(fig) for name, fig in figures.items()}
        for name, table in tables.items():  # the CSV is known as ours by its .tex twin
            files[tables_folder / f"{name}.tex"] = f"{TABLE_MARK}: {table.title or name}\n{table.latex()}".encode()
            files[tables_folder / f"{name}.csv"] = table.csv().encode()
        for path, data in files.items():  # a kill leaves the old file or the new one
            atomic_write_bytes(path, data)


def figures_dir(out_pdf: Path) -> Path:
    """`report.pdf` -> `report_figures/`, the figures as PNGs."""
    return Path(out_pdf).with_name(Path(out_pdf).stem + "_figures")


def tables_dir(out_pdf: Path) -> Path:
    """`report.pdf` -> `report_tables/`, the tables as CSV and LaTeX."""
    return Path(out_pdf).with_name(Path(out_pdf).stem + "_tables")


TABLE_MARK = "% written by cityseg"  # first line of each .tex; the CSVs are recognised by their .tex twin


def _is_ours(path: Path, creator: str | None = None) -> bool:
    """A file cityseg wrote: a PDF naming `creator`, a PNG marked cityseg, or a TABLE_MARK table."""
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
