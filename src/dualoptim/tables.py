"""Result tables over :mod:`dualoptim.stats`: mean ± std cells, Markdown and terminal output.

A modality builds the header and the cells of its table (which rows, which columns); this module
formats the numbers the same way everywhere and writes the two outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .stats import mean_std


def mean_std_cell(values: Sequence[float], fmt: str = ".2f", std_of_one: bool = True) -> str:
    """``mean ± std`` of ``values`` (``-`` when there are none; only the mean for one value unless
    ``std_of_one``)."""
    if not values:
        return "-"
    mu, sd = mean_std(values)
    return f"{mu:{fmt}}" + (f" ± {sd:{fmt}}" if len(values) > 1 or std_of_one else "")


def mean_cell(values: Sequence[float], fmt: str = ".2f") -> str:
    """The mean of ``values`` (``-`` when there are none)."""
    return f"{mean_std(values)[0]:{fmt}}" if values else "-"


@dataclass
class Table:
    """A header and rows of cells, written as Markdown or printed to the terminal.

    ``align`` is one letter per column, ``l`` or ``r`` (missing letters: left), for the terminal; ``caption``
    is printed under the terminal table.
    """

    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    title: str = ""
    caption: str = ""
    align: str = ""

    def markdown(self) -> str:
        """A Markdown table (no title)."""
        lines = ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in self.rows]) + "\n"

    def print(self, width: int | None = None) -> None:
        """Print to the terminal (rich; ``width`` columns, default the terminal's) with the title and caption.
        Cells are plain text: brackets such as ``[adam+sgd]`` are shown, not read as rich markup."""
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table as RichTable

        table = RichTable(title=self.title or None, title_justify="left", caption=self.caption or None,
                          caption_justify="left")
        for i, h in enumerate(self.header):
            table.add_column(escape(h), justify="right" if self.align[i:i + 1] == "r" else "left")
        for r in self.rows:
            table.add_row(*map(escape, r))
        Console(width=width).print(table)


__all__ = ["Table", "mean_cell", "mean_std_cell"]
