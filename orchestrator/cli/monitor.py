"""orch monitor: attach the live view to a run's jobs, from any terminal."""

from __future__ import annotations

from typing import Annotated

import typer


def monitor(
    run: Annotated[
        str | None, typer.Option("--run", help="Run id (default: the latest run).")] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Draw the current state once and exit.")] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.1, help="Seconds between polls.")] = 0.5,
) -> None:
    """Watch every job of a run live: stage, progress, loss, speed, memory, last log line.

    Attaches to the run that `orch train` or `orch run` is driving and exits when it ends.
    Ctrl-C only detaches the view; the jobs keep running. Without a terminal (CI, a pipe)
    it prints one plain line per change of stage or epoch instead.
    """
    from orchestrator import state as st
    from orchestrator import ui
    from orchestrator.cli import state_dir
    from orchestrator.errors import UsageError
    from orchestrator.monitor import watch

    home = state_dir()
    run_id = run or st.latest_run_id(home)
    if run_id is None:
        raise UsageError(f"no run found in {home}: start one with `orch train` or `orch run`")
    result = watch(st.run_dir(home, run_id), console=ui.out, interval=interval, once=once)
    if result.detached:
        ui.info(f"detached from run {run_id}; its jobs keep running "
                f"(`orch monitor --run {run_id}` to re-attach)")
    elif result.run is not None and not once:
        ui.info(f"run {run_id} {result.run.status}; `orch compare` builds the report")
