"""orch compare: merge a run's results into a terminal table, report.md and report.html."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orchestrator.errors import EXIT_JOB, OrchError, UsageError


class NoResults(OrchError):
    exit_code = EXIT_JOB


def find_run_dir(run_id: str | None) -> Path:
    """The run dir of ``run_id``, or of the newest run with results; a UsageError says what
    exists."""
    from orchestrator import state as st
    from orchestrator.report import latest_run_with_results

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
    from orchestrator import ui
    from orchestrator.report import build_report, write_report
    from orchestrator.report.markdown import flag_lines
    from orchestrator.report.terminal import results_table

    run_dir = find_run_dir(run)
    report = write_report(build_report(run_dir), out or run_dir)
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
