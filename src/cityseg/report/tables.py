"""Plain-text tables: one object that a notebook shows as Markdown and the PDF prints as monospace text.

Tables stay text everywhere (never pictures of text), so a reader can copy numbers out of
the report and tests can find them with a PDF text extractor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Table:
    """Column titles and rows of already formatted cells; `title` is a caption, not a cell."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    title: str = ""

    @classmethod
    def build(cls, columns: Sequence[str], rows: Sequence[Sequence[object]], title: str = "") -> Table:
        """Make a table from any cell values (formatted with str) so callers format numbers once, upstream."""
        return cls(tuple(columns), tuple(tuple(str(c) for c in row) for row in rows), title)

    def text(self, header: bool = True) -> str:
        """Aligned monospace text: text columns left-aligned, numeric columns right-aligned."""
        widths = [
            max(len(c), *(len(r[i]) for r in self.rows)) if self.rows else len(c) for i, c in enumerate(self.columns)
        ]
        numeric = [_column_numeric(self, i) for i in range(len(self.columns))]

        def line(cells: Sequence[str]) -> str:
            parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric, strict=True)]
            return "  ".join(parts).rstrip()

        rule = "  ".join("-" * w for w in widths)
        head = [line(self.columns), rule] if header else []
        return "\n".join([*head, *(line(r) for r in self.rows)])

    def markdown(self) -> str:
        """GitHub-flavoured Markdown, how Jupyter displays the table."""
        head = "| " + " | ".join(self.columns) + " |"
        align = "|" + "|".join("---:" if _column_numeric(self, i) else ":---" for i in range(len(self.columns))) + "|"
        body = ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in self.rows]
        caption = [f"**{self.title}**", ""] if self.title else []
        return "\n".join([*caption, head, align, *body])

    def _repr_markdown_(self) -> str:
        return self.markdown()

    def _repr_pretty_(self, printer, cycle: bool) -> None:
        """Plain-text display (terminal IPython, executed notebooks read as text) shows the aligned table."""
        printer.text(str(self))

    def __str__(self) -> str:
        return (self.title + "\n" if self.title else "") + self.text()


def looks_numeric(cell: str) -> bool:
    """Numbers, `mean ± std` and `n/a` align to the right like the numbers beside them."""
    head = cell.split(" ± ")[0].strip().rstrip("%")
    if head in ("n/a", "-", "–", ""):
        return True
    try:
        float(head)
    except ValueError:
        return False
    return True


def _column_numeric(table: Table, index: int) -> bool:
    return bool(table.rows) and all(looks_numeric(row[index]) for row in table.rows)


def percent(value: float | None, digits: int = 2) -> str:
    """Format a 0..1 score as a percentage with fixed decimals, the one format used in tables and text."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{100.0 * value:.{digits}f}"


def mean_std_text(mean: float | None, std: float | None, digits: int = 2) -> str:
    """`mean ± std` in percent, so fold results read the same in the notebook, the PDF and the README."""
    if std is None or not math.isfinite(std):
        return percent(mean, digits)
    return f"{percent(mean, digits)} ± {percent(std, digits)}"
