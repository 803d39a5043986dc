"""`orch status`: where each variant stands, from the run state on disk."""

from __future__ import annotations

import typer

RunOpt = typer.Option(None, "--run", help="A run id (default: the latest run).")
JsonOpt = typer.Option(False, "--json", help="Print the run state as JSON.")


def status(run_id: str | None = RunOpt, as_json: bool = JsonOpt) -> None:
    """Show the latest run: each job's stage, device, gate outcome and failure reason.

    Read-only. A run whose orchestrator died is reported as such (dead processes are
    detected), and `orch train --resume` continues it.
    """
    from orchestrator import ui
    from orchestrator.cli import setup
    from orchestrator.errors import UsageError
    from orchestrator.state import load_run, refresh_liveness, run_to_dict

    _, home = setup()
    run = load_run(home, run_id)
    if run is None:
        if run_id is not None:
            raise UsageError(f"no run {run_id!r}")
        if as_json:
            ui.write_json(None)
        else:
            ui.info("no runs yet; start one with `orch run`")
        return
    run = refresh_liveness(run)
    if as_json:
        ui.write_json(run_to_dict(run))
        return
    ui.write(ui.jobs_table(run))
    if any(j.gate is not None for j in run.jobs):
        ui.write()
        ui.write(ui.gate_table(run))
    if run.status == "died":
        ui.warn("the orchestrator of this run died; continue it with `orch train --resume`")
