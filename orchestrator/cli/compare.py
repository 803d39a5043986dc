"""orch compare: merge a run's results into a terminal table, report.md and report.html."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from orchestrator import state as st
from orchestrator import ui
from orchestrator.errors import EXIT_JOB, OrchError, UsageError
from orchestrator.report import (
    TABLE_COLUMNS,
    Report,
    build_report,
    flag_lines,
    latest_run_with_results,
    table_rows,
)


class NoResults(OrchError):
    exit_code = EXIT_JOB


def find_run_dir(run_id: str | None) -> Path:
    """The run dir of ``run_id``, or of the newest run with results; a UsageError says what
    exists."""
    home = st.state_home()
    if run_id is None:
        run_id = latest_run_with_results(home)
        if run_id is None:
            raise UsageError(f"no run found in {home}: start one with `orch train` or `orch run`")
    path = st.run_dir(home, run_id)
    if not path.is_dir():
        known = st.list_runs(home)
        hint = f"; known runs: {', '.join(known[-5:])}" if known else ""
        raise UsageError(f"no run '{run_id}' in {home}{hint}")
    return path


def results_table(report: Report) -> Table:
    table = Table(title=f"run {report.run_id} ({report.preset})", box=box.SIMPLE_HEAD,
                  header_style="bold", pad_edge=False, collapse_padding=True)
    for column in TABLE_COLUMNS:
        left = column in ("variant", "note", "gate", "seed")
        table.add_column(column, justify="left" if left else "right",
                         no_wrap=column != "note", overflow="fold",
                         min_width=16 if column == "note" else None)
    rows = table_rows(report)
    for i, (kind, cells) in enumerate(rows):
        note = cells[-1]
        note_style = "bold red" if kind != "reference" and ("below" in note or note.startswith(
            ("failed", "unreadable", "no results", "cancelled", "gate_failed"))) else ""
        style = {"seed": "dim", "reference": "italic cyan"}.get(kind, "")
        if kind == "seed":
            cells = [cells[0], "  " + cells[1], *cells[2:]]
        cells = [c.replace(" ± ", "\n± ") for c in cells]  # narrower: interval below mean
        end = i + 1 < len(rows) and rows[i + 1][0] == "reference" and kind != "reference"
        table.add_row(*cells[:-1], f"[{note_style}]{note}[/]" if note_style else note,
                      style=style, end_section=end)
    return table


def compare(
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the merged records as JSON.")] = False,
    run: Annotated[
        str | None, typer.Option("--run", help="Run id (default: the newest run with "
                                 "results).")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder for report.md and report.html "
                                  "(default: the run's folder).")] = None,
) -> None:
    """Merge every job's results into a table, report.md and report.html.

    Variants are ranked by PSNR beside the black, copy-last and tokenizer-oracle rows; with
    several seeds, mean ± 95% interval. Unreadable results files are named and skipped.
    """
    report = build_report(find_run_dir(run), out_dir=out)
    if json_output:
        ui.write_json(report.to_dict())
    for warning in report.warnings:
        ui.warn(warning)
    if not report.has_results:
        raise NoResults(f"run {report.run_id} has no readable results yet: "
                        "see `orch status` for where its jobs stand")
    if json_output:
        return
    ui.write(results_table(report))
    for line in flag_lines(report):
        ui.write(f"[bold red]{line}[/]")
    ui.write(f"report: {report.markdown_path}  {report.html_path}")
