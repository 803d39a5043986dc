"""The comparison as a Rich table for the terminal: the markdown's cells, styled."""

from __future__ import annotations

from rich import box
from rich.table import Table

from orchestrator.report.build import Report
from orchestrator.report.markdown import (
    PAIRED_COLUMNS,
    flagged,
    paired_rows,
    table_columns,
    table_rows,
)

FAILED_NOTES = ("failed", "unreadable", "no results", "cancelled", "gate_failed")


def results_table(report: Report) -> Table:
    table = Table(title=f"run {report.run_id} ({report.preset})", box=box.SIMPLE_HEAD,
                  header_style="bold", pad_edge=False, collapse_padding=True)
    for column in table_columns(report):
        left = column in ("variant", "note", "gate", "seed")
        table.add_column(column, justify="left" if left else "right",
                         no_wrap=column != "note", overflow="fold",
                         min_width=16 if column == "note" else None)
    rows = table_rows(report)
    for i, (kind, cells) in enumerate(rows):
        note = cells[-1]
        red = kind != "reference" and (flagged(note) or note.startswith(FAILED_NOTES))
        style = {"seed": "dim", "reference": "italic cyan"}.get(kind, "")
        if kind == "seed":
            cells = [cells[0], "  " + cells[1], *cells[2:]]
        cells = [c.replace(" ± ", "\n± ") for c in cells]  # narrower: interval below mean
        end = i + 1 < len(rows) and rows[i + 1][0] == "reference" and kind != "reference"
        table.add_row(*cells[:-1], f"[bold red]{note}[/]" if red else note,
                      style=style, end_section=end)
    return table


def paired_table(report: Report) -> Table | None:
    """The ranking metric's paired differences (every metric's are in report.md and .html);
    None when there are none."""
    rows = paired_rows(report, ranking_only=True)
    if not rows:
        return None
    table = Table(title="paired differences (ranking metric; all metrics in report.md)",
                  box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    for column in PAIRED_COLUMNS:
        table.add_column(column, justify="left" if column in ("A", "B", "verdict") else "right")
    for cells in rows:
        worse_than_floor = cells[5] == "A worse" and "(floor)" in cells[1]
        table.add_row(*cells[:5], f"[bold red]{cells[5]}[/]" if worse_than_floor else cells[5],
                      cells[6])
    return table
