"""`orch stop`: end a run from another terminal, as Ctrl-C in its own would."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

# The orchestrator gives each job grace_seconds (10 in the study's config) after SIGTERM.
STOP_TIMEOUT_S = 60.0


def stop(
    run: Annotated[
        str | None, typer.Option("--run", help="Run id (default: the latest run).")] = None,
    timeout: Annotated[float, typer.Option(
        "--timeout", min=0.0, help="Seconds to wait for the run to end.")] = STOP_TIMEOUT_S,
    as_json: Annotated[bool, typer.Option("--json", help="Print what happened as JSON.")] = False,
) -> None:
    """Stop a running run: its orchestrator stops every job, records them as cancelled and
    keeps worktrees and outputs, so `orch train --resume` continues it.

    Sends SIGTERM to the orch process driving the run (the one recorded in its state, never
    a later process that reused its pid) and waits until the run has ended. Exits 0 when it
    stopped, 7 when the run was not running (nothing is sent), 1 when it is still running
    after --timeout.
    """
    from orchestrator import control, ui
    from orchestrator.cli import state_dir
    from orchestrator.errors import EXIT_NOT_RUNNING, OrchError

    result = control.stop_run(state_dir(), run, timeout=timeout)
    if as_json:
        ui.write_json(asdict(result))
    elif result.outcome == "stopped":
        cancelled = ", ".join(result.cancelled) or "none"
        ui.write(f"stopped run {result.run_id} (orch pid {result.pid}) in "
                 f"{ui.fmt_duration(result.seconds)}: {result.status}; cancelled: {cancelled}; "
                 f"worktrees and outputs kept in {result.run_dir}; continue with "
                 "`orch train --resume`", soft_wrap=True)
    elif result.outcome == "not_running":
        ui.info(f"run {result.run_id} is not running ({result.status}); nothing to stop")
    if result.outcome == "not_running":
        raise typer.Exit(EXIT_NOT_RUNNING)
    if result.outcome == "timeout":
        raise OrchError(f"run {result.run_id} is still running {timeout:.0f}s after SIGTERM "
                        f"to its orch (pid {result.pid}); wait, or run `orch stop` again")
