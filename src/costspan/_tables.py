"""The ``costspan report`` table: fits any terminal width and never cuts a number.

rich shrinks a table that is too wide by cropping its cells (``$0.00…``), numbers included. So
the layout is decided here, before rich sees it: amounts and counts get exactly the width they
need and never wrap. When the table does not fit, the least useful columns go first (reasoning,
then cached tokens) while group values (tags, models) stay whole; then group values fold onto
more lines; then the input and output tokens go too; and a terminal too narrow even for that
gets one block of ``label value`` lines per group. Lines of text wrap between words only.
Amounts are exact: every amount of the column is shown with the same number of decimal places,
as many as the most precise one needs (``$0.00320200`` next to ``$0.00000008``).

An unpriced group reads ``unpriced``; a group mixing priced and unpriced calls shows the priced
sum with ``excl. N unpriced`` under it.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from rich.table import Table

from costspan._report import Report, ReportRow

_COLUMNS: Final = ("usd", "calls", "input", "cached", "output", "reasoning")
# What to leave out, in turn, when the table does not fit: the least useful columns first.
_DROPS: Final = (
    (),
    ("reasoning",),
    ("reasoning", "cached"),
    ("reasoning", "cached", "input", "output"),
)
_KEY_MIN: Final = 8  # a group value folds, but not into a column narrower than this
_UNPRICED: Final = "unpriced"


def places(amounts: Sequence[Decimal]) -> int:
    """Decimal places that show every amount exactly (at least 2)."""
    wanted = 2
    for amount in amounts:
        exponent = amount.normalize().as_tuple().exponent
        if isinstance(exponent, int):
            wanted = max(wanted, -exponent)
    return wanted


def money(amount: Decimal, digits: int) -> str:
    """``$`` and the exact amount with ``digits`` decimal places (never fewer than it needs)."""
    return f"${amount:.{max(digits, places([amount]))}f}"


def _usd_cell(row: ReportRow, digits: int) -> str:
    if row.usd is None:
        return _UNPRICED
    if row.unpriced_calls:
        return f"{money(row.usd, digits)}\nexcl. {row.unpriced_calls} unpriced"
    return money(row.usd, digits)


def _cells(row: ReportRow, digits: int) -> dict[str, str]:
    return {
        "usd": _usd_cell(row, digits),
        "calls": str(row.calls),
        "input": str(row.input_tokens),
        "cached": str(row.cached_input_tokens),
        "output": str(row.output_tokens),
        "reasoning": str(row.reasoning_tokens),
    }


@dataclass(frozen=True, slots=True)
class _Cells:
    keys: tuple[str, ...]
    key_rows: list[tuple[str, ...]]
    rows: list[dict[str, str]]

    def need(self, column: str) -> int:
        """The width a numeric column needs so that no word of it is ever cut."""
        words = [w for cells in self.rows for w in cells[column].split()]
        return max([len(column), *map(len, words)])

    def natural(self, index: int) -> int:
        """The width a group column needs to show every value whole."""
        values = [r[index] for r in self.key_rows]
        return max([len(self.keys[index]), *map(len, values)])


def _table_width(widths: Sequence[int]) -> int:
    # A vertical line before each column and after the last, one space of padding each side.
    return sum(widths) + 3 * len(widths) + 1


def render(report: Report, title: str, width: int) -> list[Table | str]:
    """The report for a terminal ``width`` columns wide: a table (and lines of text under it),
    or, when no table fits, blocks of lines. Text lines wrap between words only, so a number
    is never split; a word longer than the terminal is left whole for the terminal to wrap."""
    digits = places([row.usd for row in report if row.usd is not None])
    cells = _Cells(
        report.group_by,
        [tuple(row.tags[k] for k in report.group_by) for row in report],
        [_cells(row, digits) for row in report],
    )
    natural = [cells.natural(i) for i in range(len(cells.keys))]
    folded = [min(n, max(len(k), _KEY_MIN)) for n, k in zip(natural, cells.keys, strict=True)]
    # Keep group values whole while dropping columns of least use; fold them only when that
    # is not enough; drop the token columns last.
    for drop, key_min in (
        (_DROPS[0], natural),
        (_DROPS[1], natural),
        (_DROPS[2], natural),
        (_DROPS[2], folded),
        (_DROPS[3], natural),
        (_DROPS[3], folded),
    ):
        columns = [c for c in _COLUMNS if c not in drop]
        fixed = [cells.need(c) for c in columns]
        spare = width - _table_width([*key_min, *fixed])
        if spare < 0:
            continue
        key_widths = _share(spare, key_min, natural)
        table = _table(report, title, cells, columns, fixed, key_widths)
        lines = [_total(report)]
        if drop:
            lines.append(f"({', '.join(drop)} tokens left out to fit; --format csv has them)")
        return [table, *(_wrap(line, width) for line in lines)]
    return _blocks(report, title, cells, width)


def _wrap(text: str, width: int) -> str:
    return textwrap.fill(text, width, break_long_words=False, break_on_hyphens=False)


def _share(spare: int, widths: Sequence[int], wants: Sequence[int]) -> list[int]:
    """Give the spare width to the group columns, one at a time, up to what each needs."""
    widths = list(widths)
    while spare > 0 and any(w < n for w, n in zip(widths, wants, strict=True)):
        for i, (w, n) in enumerate(zip(widths, wants, strict=True)):
            if spare and w < n:
                widths[i] += 1
                spare -= 1
    return widths


def _table(
    report: Report,
    title: str,
    cells: _Cells,
    columns: Sequence[str],
    fixed: Sequence[int],
    key_widths: Sequence[int],
) -> Table:
    table = Table(title=title)
    for key, w in zip(cells.keys, key_widths, strict=True):
        table.add_column(key, width=w, overflow="fold")
    for column, w in zip(columns, fixed, strict=True):
        # Every word of these cells fits the width: "excl. 2 unpriced" wraps between words,
        # and a number is one word.
        table.add_column(column, justify="right", width=w, overflow="fold")
    for key_row, row in zip(cells.key_rows, cells.rows, strict=True):
        table.add_row(*key_row, *(row[c] for c in columns))
    return table


def _blocks(report: Report, title: str, cells: _Cells, width: int) -> list[Table | str]:
    lines = [_wrap(title, width)]
    label = max(map(len, _COLUMNS))
    for key_row, row in zip(cells.key_rows, cells.rows, strict=True):
        lines.append("")
        lines.append(_wrap(" / ".join(key_row) or "everything", width))
        for column in _COLUMNS:
            for n, part in enumerate(row[column].split("\n")):
                lines.append(f"  {column if n == 0 else '':<{label}}  {part}")
    lines.append("")
    lines.append(_wrap(_total(report), width))
    return [*lines]


def _total(report: Report) -> str:
    if report.calls and report.unpriced_calls == report.calls:
        return f"total unpriced: {report.calls} call(s), none with a known price"
    digits = places([row.usd for row in report if row.usd is not None])
    total = f"total {money(report.usd, digits)} in {report.calls} call(s)"
    if report.unpriced_calls:
        total += f", excluding {report.unpriced_calls} unpriced call(s)"
    return total
