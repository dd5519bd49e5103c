"""A4 pages typeset like a paper: a running header, headings, wrapped paragraphs, ruled tables, plots.

Everything is placed in inches from the page's top edge by a cursor that moves down, so nothing
depends on a layout engine's guesses and nothing runs off the page unnoticed: a block that does not
fit raises instead of being cut. Text is proportional (DejaVu Sans), embedded as TrueType so PDF
readers and tests can extract it; tables have booktabs rules and right-aligned numbers.
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.textpath import TextToPath
from PIL import Image

from cityseg.errors import UserError
from cityseg.fileio import atomic_write_bytes
from cityseg.report.tables import Table, looks_numeric

A4_PORTRAIT = (8.27, 11.69)
A4_LANDSCAPE = (11.69, 8.27)
MARGIN = 0.75  # left and right, inches
BODY_TOP = 0.75  # below the running header
BODY_BOTTOM = 0.6  # above the footer
POINT = 1 / 72  # inches
TEXT_SIZE = 9.0
TABLE_SIZE = 8.5
COLUMN_GAP = 14.0  # points between table columns
WARNING_RED = "#b00020"
# TrueType text (not Type 3), so PDF readers and text extractors get real characters; plot text sized
# to sit with 8-9 pt body text.
PAGE_RC = {
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
    """The matplotlib settings pages are built and saved under (plot text reads its sizes when created)."""
    return matplotlib.rc_context(PAGE_RC)


@dataclass(frozen=True)
class CellStyle:
    """How one table cell stands out: text colour, weight, background."""

    color: str | None = None
    weight: str | None = None
    fill: str | None = None


@functools.lru_cache(maxsize=4096)
def text_width(text: str, size: float, weight: str = "normal") -> float:
    """Width in points of one line of text in the report's font (what the PDF will draw)."""
    width, _, _ = TextToPath().get_text_width_height_descent(
        text, FontProperties(size=size, weight=weight), ismath=False
    )
    return width


def wrap(text: str, width_pt: float, size: float, weight: str = "normal") -> list[str]:
    """Greedy word wrap to `width_pt` by measured widths; explicit newlines start new lines."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if line and text_width(candidate, size, weight) > width_pt:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


class Page:
    """One A4 page filled from the top; `synthetic` puts the SYNTHETIC mark into the running header."""

    def __init__(self, running_title: str, synthetic: bool, landscape: bool = False, source: str = "cityseg report"):
        self.width, self.height = A4_LANDSCAPE if landscape else A4_PORTRAIT
        self.figure = Figure(figsize=(self.width, self.height))
        self.cursor = BODY_TOP
        self.synthetic = synthetic
        self._header(f"{source}  ·  {running_title}")

    @property
    def text_width(self) -> float:
        """Inches between the margins."""
        return self.width - 2 * MARGIN

    @property
    def remaining(self) -> float:
        """Inches left above the footer."""
        return self.height - BODY_BOTTOM - self.cursor

    def _y(self, from_top: float) -> float:
        return self.height - from_top

    def _text(self, x: float, from_top: float, text: str, **style) -> None:
        self.figure.text(x, self._y(from_top), text, transform=self.figure.dpi_scale_trans, **style)

    def _rule(self, from_top: float, x0: float, x1: float, width: float = 0.5, color: str = "black") -> None:
        y = self._y(from_top)
        self.figure.add_artist(
            Line2D([x0, x1], [y, y], transform=self.figure.dpi_scale_trans, linewidth=width, color=color)
        )

    def _need(self, inches: float, what: str) -> None:
        if inches > self.remaining + 1e-6:
            raise ValueError(f"{what} needs {inches:.2f} in but the page has {self.remaining:.2f} in left")

    def _header(self, text: str) -> None:
        top = 0.42
        self._text(MARGIN, top, text, fontsize=7.5, color="0.35", va="baseline")
        mark = (
            ("SYNTHETIC DATA (cityseg synth), not Cityscapes", WARNING_RED, "bold")
            if self.synthetic
            else ("Cityscapes", "0.35", "normal")
        )
        self._text(
            self.width - MARGIN, top, mark[0], fontsize=7.5, color=mark[1], weight=mark[2], ha="right", va="baseline"
        )
        self._rule(top + 0.08, MARGIN, self.width - MARGIN, 0.4, "0.6")

    def footer(self, number: int, total: int, note: str = "") -> None:
        """Page number (and a note) under the body; called once all pages exist."""
        bottom = self.height - 0.35
        if note:
            self._text(MARGIN, bottom, note, fontsize=6.5, color="0.45", va="baseline")
        self._text(
            self.width - MARGIN, bottom, f"{number} / {total}", fontsize=7.5, color="0.35", ha="right", va="baseline"
        )

    def space(self, inches: float) -> None:
        """Vertical white space."""
        self.cursor += inches

    def title(self, text: str, size: float = 16.0) -> None:
        """The page's title in large bold type."""
        self.paragraph(text, size=size, weight="bold", after=0.12)

    def heading(self, text: str, size: float = 11.5) -> None:
        """A section heading with some air above it."""
        self.space(0.08)
        self.paragraph(text, size=size, weight="bold", after=0.06)

    def paragraph(
        self,
        text: str,
        size: float = TEXT_SIZE,
        weight: str = "normal",
        color: str = "black",
        style: str = "normal",
        after: float = 0.08,
        indent: float = 0.0,
    ) -> None:
        """Wrapped text over the full width (minus `indent`, in inches)."""
        lines = wrap(text, (self.text_width - indent) / POINT, size, weight)
        line_height = 1.32 * size * POINT
        self._need(len(lines) * line_height, f"paragraph {text[:40]!r}")
        for line in lines:
            self.cursor += line_height
            self._text(
                MARGIN + indent,
                self.cursor - 0.3 * size * POINT,
                line,
                fontsize=size,
                weight=weight,
                color=color,
                style=style,
                va="baseline",
            )
        self.cursor += after

    def banner(self, text: str, color: str = WARNING_RED, size: float = 9.5) -> None:
        """A framed warning that no reader can miss (used for SYNTHETIC data)."""
        pad = 0.1
        lines = wrap(text, (self.text_width - 2 * pad) / POINT, size, "bold")
        height = len(lines) * 1.32 * size * POINT + 2 * pad
        self._need(height, "banner")
        top = self.cursor
        self.figure.add_artist(
            Rectangle(
                (MARGIN, self._y(top + height)),
                self.text_width,
                height,
                transform=self.figure.dpi_scale_trans,
                facecolor="#fdecee",
                edgecolor=color,
                linewidth=1.0,
            )
        )
        self.cursor += pad
        for line in lines:
            self.cursor += 1.32 * size * POINT
            self._text(
                MARGIN + pad,
                self.cursor - 0.3 * size * POINT,
                line,
                fontsize=size,
                weight="bold",
                color=color,
                va="baseline",
            )
        self.cursor = top + height + 0.12

    def table(
        self,
        table: Table,
        size: float = TABLE_SIZE,
        styles: Mapping[tuple[int, int], CellStyle] | None = None,
        swatches: Sequence[tuple[float, float, float] | None] | None = None,
        rules_before: Sequence[int] = (),
        after: float = 0.15,
    ) -> None:
        """A booktabs table: rules above, under the header and below; text left, numbers right-aligned.

        styles: (row, column) -> CellStyle; swatches: a colour square before each row's first cell;
        rules_before: body rows that get a thin rule above them (e.g. a mean row). A column too wide for
        the page is wrapped over several lines.
        """
        styles = styles or {}
        columns = len(table.columns)
        numeric = [bool(table.rows) and all(looks_numeric(row[i]) for row in table.rows) for i in range(columns)]
        swatch = 1.1 * size if swatches is not None else 0.0
        body = [
            max(
                [
                    text_width(row[i], size, (styles.get((r, i)) or CellStyle()).weight or "normal")
                    for r, row in enumerate(table.rows)
                ],
                default=0.0,
            )
            for i in range(columns)
        ]
        body[0] += swatch
        widths = _column_widths(
            body, table.columns, numeric, self.text_width / POINT - COLUMN_GAP * (columns - 1), size
        )
        cells = [
            [wrap(cell, widths[i] - (swatch if i == 0 else 0), size) for i, cell in enumerate(row)]
            for row in table.rows
        ]
        header = [wrap(c, widths[i], size, "bold") for i, c in enumerate(table.columns)]
        line = 1.3 * size * POINT
        header_lines = max(len(h) for h in header)
        row_lines = [max(len(c) for c in row) for row in cells]
        total_width = (sum(widths) + COLUMN_GAP * (columns - 1)) * POINT
        height = (header_lines + sum(row_lines)) * line + 0.12
        self._need(height, f"table {table.columns}")
        left = MARGIN + (self.text_width - total_width) / 2
        starts = [left + (sum(widths[:i]) + COLUMN_GAP * i) * POINT for i in range(columns)]
        self._rule(self.cursor, left, left + total_width, 0.8)
        self.cursor += 0.04
        self._table_row(header, starts, widths, numeric, header_lines, line, size, lambda i: CellStyle(weight="bold"))
        self._rule(self.cursor + 0.02, left, left + total_width, 0.5)
        self.cursor += 0.04
        for r, (row, lines) in enumerate(zip(cells, row_lines, strict=True)):
            if r in rules_before:
                self._rule(self.cursor + 0.01, left, left + total_width, 0.3, "0.5")
            if swatches is not None and swatches[r] is not None:
                self.figure.add_artist(
                    Rectangle(
                        (starts[0], self._y(self.cursor + 0.85 * line)),
                        0.75 * size * POINT,
                        0.75 * size * POINT,
                        transform=self.figure.dpi_scale_trans,
                        facecolor=swatches[r],
                        edgecolor="0.3",
                        linewidth=0.3,
                    )
                )
            self._table_row(
                row,
                starts,
                widths,
                numeric,
                lines,
                line,
                size,
                lambda i, r=r: styles.get((r, i)) or CellStyle(),
                swatch * POINT,
            )
        self._rule(self.cursor + 0.04, left, left + total_width, 0.8)
        self.cursor += 0.04 + after

    def _table_row(
        self,
        cells: Sequence[list[str]],
        starts: Sequence[float],
        widths: Sequence[float],
        numeric: Sequence[bool],
        lines: int,
        line: float,
        size: float,
        style_of: Callable[[int], CellStyle],
        first_indent: float = 0.0,
    ) -> None:
        """One table row of (possibly wrapped) cells; the first column's text starts `first_indent` in."""
        top = self.cursor
        for i, cell_lines in enumerate(cells):
            style = style_of(i)
            if style.fill is not None:
                x = starts[i] - COLUMN_GAP / 2 * POINT
                self.figure.add_artist(
                    Rectangle(
                        (x, self._y(top + lines * line + 0.02)),
                        (widths[i] + COLUMN_GAP) * POINT,
                        lines * line + 0.02,
                        transform=self.figure.dpi_scale_trans,
                        facecolor=style.fill,
                        edgecolor="none",
                    )
                )
            x = starts[i] + widths[i] * POINT if numeric[i] else starts[i] + (first_indent if i == 0 else 0.0)
            for n, text in enumerate(cell_lines):
                self._text(
                    x,
                    top + (n + 1) * line - 0.25 * size * POINT,
                    text,
                    fontsize=size,
                    weight=style.weight or "normal",
                    color=style.color or "black",
                    ha="right" if numeric[i] else "left",
                    va="baseline",
                )
        self.cursor = top + lines * line

    def axes(
        self,
        height: float,
        left: float = 0.5,
        right: float = 0.1,
        top: float = 0.1,
        bottom: float = 0.45,
        x: float = 0.0,
        width: float | None = None,
    ):
        """A plot area `height` inches tall (margins for labels included) at the cursor; returns its axes."""
        self._need(height, "plot")
        width = self.text_width - x if width is None else width
        rect = (
            (MARGIN + x + left) / self.width,
            (self._y(self.cursor + height) + bottom) / self.height,
            (width - left - right) / self.width,
            (height - top - bottom) / self.height,
        )
        return self.figure.add_axes(rect)

    def axes_row(self, height: float, count: int, gap: float = 0.3, **margins):
        """`count` plot areas side by side, sharing the height; the cursor moves below them."""
        width = (self.text_width - gap * (count - 1)) / count
        axes = [self.axes(height, x=i * (width + gap), width=width, **margins) for i in range(count)]
        self.cursor += height
        return axes

    def plot(self, height: float, **margins):
        """One plot area over the full width; the cursor moves below it."""
        ax = self.axes(height, **margins)
        self.cursor += height
        return ax


def _column_widths(
    body: Sequence[float], headers: Sequence[str], numeric: Sequence[bool], available: float, size: float
) -> list[float]:
    """Column widths in points that fit `available`: natural widths if they fit; else long headers wrap
    over their cells, or (when a text column would still keep 100 points) that text column wraps instead."""
    full = [max(b, text_width(h, size, "bold")) for b, h in zip(body, headers, strict=True)]
    if sum(full) <= available:
        return full
    narrow = [
        max(b, *(text_width(word, size, "bold") for word in h.split(" "))) for b, h in zip(body, headers, strict=True)
    ]
    for i in sorted(range(len(full)), key=lambda i: full[i] - narrow[i]):  # the shortest headers unwrap first
        narrow[i] += max(0.0, min(full[i] - narrow[i], available - sum(narrow)))
    if sum(narrow) <= available + 0.5:
        return narrow
    text_columns = [i for i in range(len(full)) if not numeric[i]] or list(range(len(full)))
    widest = max(text_columns, key=lambda i: full[i])
    if available - (sum(full) - full[widest]) >= 100.0:  # wrap the body text, keep the headers whole
        return [available - (sum(full) - full[widest]) if i == widest else w for i, w in enumerate(full)]
    return [max(60.0, available - (sum(narrow) - narrow[widest])) if i == widest else w for i, w in enumerate(narrow)]


def check_output(out_pdf: Path, creator: str, command: str, figure_names: Sequence[str] = ()) -> None:
    """Refuse, before any drawing, to replace a PDF or figure PNG that `command` did not write."""
    if out_pdf.is_dir():
        raise UserError(f"--out {out_pdf} is a folder; pass a file name ending in .pdf.")
    if out_pdf.exists() and not is_our_pdf(out_pdf, creator):
        raise UserError(
            f"{out_pdf} exists and was not written by `{command}`; it is left alone. Pass another "
            "--out or move that file away."
        )
    folder = figures_dir(out_pdf)
    if figure_names and folder.exists() and not folder.is_dir():
        raise UserError(
            f"{folder} is a file, but the report writes its figures into a folder of that name; move it away."
        )
    for name in figure_names:
        png = folder / f"{name}.png"
        if png.exists() and not _is_our_png(png):
            raise UserError(
                f"{png} exists and was not written by `{command}`; it is left alone. Pass another "
                "--out or move that file away."
            )


def figures_dir(out_pdf: Path) -> Path:
    """`report.pdf` -> `report_figures/`, the folder the README embeds figures from."""
    out_pdf = Path(out_pdf)
    return out_pdf.with_name(out_pdf.stem + "_figures")


def is_our_pdf(path: Path, creator: str) -> bool:
    """A PDF cityseg wrote carries its Creator string in the (uncompressed) info dictionary."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return data.startswith(b"%PDF") and f"/Creator ({creator})".encode() in data


def _is_our_png(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            return image.info.get("Software") == "cityseg"
    except OSError:
        return False


def write_pdf(
    pages: Sequence[Page], out_pdf: Path, title: str, creator: str, subject: str, footer_note: str = ""
) -> None:
    """Number the pages and write them atomically with fixed metadata: no dates, so the same run files
    always give the same bytes (the demo's report.pdf is committed and must not change on a rebuild)."""
    for number, page in enumerate(pages, start=1):
        page.footer(number, len(pages), footer_note)
    metadata = {"Title": title, "Creator": creator, "Subject": subject, "CreationDate": None, "ModDate": None}
    buffer = io.BytesIO()  # PdfPages seeks, so render in memory and write the file in one go
    with typesetting(), PdfPages(buffer, metadata=metadata) as pdf:
        for page in pages:
            pdf.savefig(page.figure)
    write_readable(out_pdf, buffer.getvalue())


def write_readable(path: Path, data: bytes) -> None:
    """Atomic write, then the usual 0644 (the temp file's private 0600 would surprise whoever shares the report)."""
    atomic_write_bytes(path, lambda handle: handle.write(data))
    path.chmod(0o644)
