"""orch compare: merge a run's results into a terminal table, report.md and report.html."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orchestrator.errors import EXIT_JOB, OrchError, UsageError

if TYPE_CHECKING:
    from orchestrator.study import StudySpec


class NoResults(OrchError):
    exit_code = EXIT_JOB


def find_run_dir(run_id: str | None) -> Path:
    """The run dir of ``run_id``, or of the newest run with results; a UsageError says what
    exists."""
    from orchestrator import state as st
    from orchestrator.cli import state_dir
    from orchestrator.report import latest_run_with_results

    home = state_dir()
    if run_id is None:
        run_id = latest_run_with_results(home)
        if run_id is None:
            raise UsageError(f"no run found in {home}: start one with `orch train` or `orch run`")
    return st.existing_run_dir(home, run_id)


def declared_study() -> tuple[StudySpec | None, dict[str, str]]:
    """The study's declaration of its metrics and reference rows, and each variant's folder
    (for the code diff of two variants that live in one commit), from the config; (None, {})
    when there is no readable config (a run compared away from its repo): the report then
    goes by what the results hold."""
    from orchestrator.cli import optional_config

    cfg = optional_config()
    if cfg is None:
        return None, {}
    return (cfg.study.spec() if cfg.study else None), cfg.variant_folders()


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

    Variants are ranked by the metric the study declares (config.yaml `study`) beside its
    reference rows, the floors a model must beat and the ceilings it should not pass; with
    several seeds, mean ± 95% interval. Unreadable results files are named and skipped.
    """
    from orchestrator import ui
    from orchestrator.report import build_report, write_report
    from orchestrator.report.markdown import flag_lines
    from orchestrator.report.terminal import paired_table, results_table

    run_dir = find_run_dir(run)
    study, folders = declared_study()
    report = write_report(build_report(run_dir, study, folders=folders), out or run_dir)
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
    if (paired := paired_table(report)) is not None:
        ui.write(paired)
    for line in flag_lines(report):
        ui.write(f"[bold red]{line}[/]")
    ui.write(f"report: {report.markdown_path}  {report.html_path}")
