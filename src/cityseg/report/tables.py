"""Tables of text and `Score`s (0..1 fractions until shown): one object a notebook shows as Markdown, the PDF typesets,
and files keep as full-precision CSV and as LaTeX holding exactly the PDF's text."""

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass


def percent(value: float | None, digits: int = 2) -> str:
    """A 0..1 score as a percentage with fixed decimals, the one format people read."""
    return "n/a" if value is None or not math.isfinite(value) else f"{100.0 * value:.{digits}f}"


def mean_std_text(mean: float | None, std: float | None, digits: int = 2) -> str:
    """`mean ± std` in percent (just the mean when there is no spread)."""
    return percent(mean, digits) + (f" ± {percent(std, digits)}" if std is not None and math.isfinite(std) else "")


@dataclass(frozen=True)
class Score:
    """A 0..1 score (optionally ± a std) shown in percent; `signed` for differences (+1.23 points)."""

    value: float | None
    std: float | None = None
    signed: bool = False

    def __str__(self) -> str:
        if not self.signed or self.value is None or not math.isfinite(self.value):
            return mean_std_text(self.value, self.std)
        return f"{100 * self.value:+.2f}" + (f" ± {percent(self.std)}" if self.std is not None else "")


@dataclass(frozen=True)
class CellStyle:
    """How one table cell stands out in the PDF: text colour, weight, background."""

    color: str | None = None
    weight: str | None = None
    fill: str | None = None


def looks_numeric(cell: object) -> bool:
    """Scores, numbers, `mean ± std` and dashes align right like the numbers beside them."""
    head = str(cell).split(" ± ")[0].strip()
    if isinstance(cell, Score | int | float) or head in ("n/a", "-", "–", ""):
        return True
    try:
        float(head)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Table:
    """Column titles and rows of cells; `title` a caption, `empty` the sentence shown for no rows."""

    columns: tuple[str, ...]
    rows: tuple[tuple[object, ...], ...]
    title: str = ""
    empty: str = ""

    @classmethod
    def build(
        cls, columns: Sequence[str], rows: Sequence[Sequence[object]], title: str = "", empty: str = ""
    ) -> "Table":
        """Cells are kept as given: `Score`s stay numbers for the CSV; anything else is shown with str."""
        cells = tuple(tuple(c if isinstance(c, Score) else str(c) for c in r) for r in rows)
        return cls(tuple(columns), cells, title, empty)

    def cells(self) -> list[list[str]]:
        """Every row as the text people read."""
        return [[str(c) for c in row] for row in self.rows]

    def numeric(self) -> list[bool]:
        return [bool(self.rows) and all(looks_numeric(r[i]) for r in self.rows) for i in range(len(self.columns))]

    def text(self, header: bool = True) -> str:
        """Aligned monospace text: text columns left-aligned, numeric columns right-aligned."""
        if self.empty and not self.rows:
            return self.empty
        body = self.cells()
        widths = [max([len(c), *(len(r[i]) for r in body)]) for i, c in enumerate(self.columns)]
        numeric = self.numeric()

        def line(cells: Sequence[str]) -> str:
            parts = [c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cells, widths, numeric, strict=True)]
            return "  ".join(parts).rstrip()

        head = [line(self.columns), "  ".join("-" * w for w in widths)] if header else []
        return "\n".join([*head, *(line(r) for r in body)])

    def markdown(self) -> str:
        """GitHub-flavoured Markdown, how Jupyter displays the table."""
        if self.empty and not self.rows:
            return f"**{self.title}**: {self.empty}" if self.title else self.empty
        align = "|" + "|".join("---:" if n else ":---" for n in self.numeric()) + "|"
        body = ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in self.cells()]
        caption = [f"**{self.title}**", ""] if self.title else []
        return "\n".join([*caption, "| " + " | ".join(self.columns) + " |", align, *body])

    def csv(self) -> str:
        """Score columns as `<title> (fraction)` (and `<title> std (fraction)`) at full precision, text as shown."""
        scored = [any(isinstance(r[i], Score) for r in self.rows) for i in range(len(self.columns))]
        spread = [any(isinstance(r[i], Score) and r[i].std is not None for r in self.rows) for i in range(len(scored))]
        header: list[str] = []
        for name, is_score, has_std in zip(self.columns, scored, spread, strict=True):
            name = name.replace(" (%)", "").replace(" (points)", "")
            header += [f"{name} (fraction)"] + ([f"{name} std (fraction)"] if has_std else []) if is_score else [name]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        for row in self.rows:
            cells: list[object] = []
            for cell, is_score, has_std in zip(row, scored, spread, strict=True):
                value, std = (cell.value, cell.std) if isinstance(cell, Score) else (None if is_score else cell, None)
                cells += [_number(value)] + ([_number(std)] if has_std else [])
            writer.writerow(cells)
        return out.getvalue()

    def latex(self) -> str:
        """A booktabs tabular holding exactly the PDF's text (needs \\usepackage{booktabs})."""
        spec = "".join("r" if n else "l" for n in self.numeric())
        head, *body = [" & ".join(map(_tex, row)) + r" \\" for row in [self.columns, *self.cells()]]
        lines = [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", head, r"\midrule", *body, r"\bottomrule"]
        return "\n".join(lines) + "\n\\end{tabular}\n"

    def _repr_markdown_(self) -> str:
        return self.markdown()

    def _repr_pretty_(self, printer, cycle: bool) -> None:
        printer.text(str(self))

    def __str__(self) -> str:
        return (self.title + "\n" if self.title else "") + self.text()


def count(number: float, noun: str) -> str:
    """'1 epoch', '2 epochs', '0.5 epochs'."""
    return f"{number:g} {noun}{'' if number == 1 else 's'}"


def _number(value: object) -> object:
    return "" if value is None or (isinstance(value, float) and not math.isfinite(value)) else value


_TEX = {c: "\\" + c for c in "&%$#_{}"} | {"~": r"\textasciitilde{}", "^": r"\^{}", "\\": r"\textbackslash{}"}
_TEX |= {"±": r"$\pm$", "−": "$-$", "Δ": r"$\Delta$", "–": "--"}


def _tex(text: str) -> str:
    return "".join(_TEX.get(c, c) for c in text)
