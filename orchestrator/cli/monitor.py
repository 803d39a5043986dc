"""orch monitor: attach the live view to a run's jobs, from any terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def monitor(
    run: Annotated[
        str | None, typer.Option("--run", help="Run id (default: the latest run).")] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Draw the current state once and exit.")] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.1, help="Seconds between polls.")] = 0.5,
    as_json: Annotated[bool, typer.Option(
        "--json", help="With --once: the run state and each job's progress as JSON.")] = False,
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
    if as_json:
        if not once:
            raise UsageError("--json prints one snapshot: add --once")
        ui.write_json(_snapshot(home, run_id))
        return
    result = watch(st.run_dir(home, run_id), console=ui.out, interval=interval, once=once)
    if result.detached:
        ui.info(f"detached from run {run_id}; its jobs keep running "
                f"(`orch monitor --run {run_id}` to re-attach)")
    elif result.run is not None and not once:
        ui.info(f"run {run_id} {result.run.status}; `orch compare` builds the report")


def _snapshot(home: Path, run_id: str) -> dict[str, Any]:
    """The run's state with each job's progress as the live view shows it."""
    import time

    from orchestrator import control
    from orchestrator import state as st
    from orchestrator.progress import read_progress

    run = control.load(home, run_id)  # its liveness worked out
    data = st.run_to_dict(run)
    now = time.time()
    for job, raw in zip(run.jobs, data["jobs"], strict=True):
        p = read_progress(job.events_path, keep_steps=False)
        raw["progress"] = {
            "epoch": p.epoch, "epochs": p.epochs, "step": p.step, "total_steps": p.total_steps,
            "loss": p.loss, "lr": p.lr, "samples_per_s": p.samples_per_s,
            "eta_s": p.eta_at(now), "memory_mb": p.memory_mb,
            "eval": dict(p.last_eval.metrics) if p.last_eval is not None else None,
        }
    return data
