"""`orch logs`: print or follow one job's log."""

from __future__ import annotations

from typing import Annotated

import typer


def logs(
    job: Annotated[str, typer.Argument(help="A job of the run: a variant's job (e.g. baseline), "
                                       "shared:NAME or gate:VARIANT.", show_default=False)],
    follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="Keep printing what the job writes until it ends (or Ctrl-C).",
    )] = False,
    run: Annotated[
        str | None, typer.Option("--run", help="Run id (default: the latest run).")] = None,
    lines: Annotated[int | None, typer.Option(
        "--lines", "-n", min=0, help="Only the last N lines (default: the whole log).",
    )] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print {job, path, finished, text} as JSON (not with --follow).",
    )] = False,
) -> None:
    """Print a job's log: a training job's, a shared job's (shared:tokenizer, or just
    tokenizer) or a gate's (gate:baseline).

    With `-f` it follows the log like `tail -f` until the run's state says the job has
    ended, then exits; Ctrl-C stops following (the job goes on). An unknown job name is a
    usage error that lists the run's jobs.
    """
    from orchestrator import control, ui
    from orchestrator.cli import state_dir
    from orchestrator.errors import UsageError

    if follow and as_json:
        raise UsageError("--json prints the log once; drop it to --follow")
    home = state_dir()
    state = control.load(home, run)
    target = control.find_log(state, job)
    if not follow:
        text = control.read_log(target.path, lines)
        if as_json:
            ui.write_json({"run_id": state.run_id, "job": target.name, "path": str(target.path),
                           "finished": target.finished, "text": text})
        elif not target.path.exists():
            ui.info(f"{target.name} has no log yet ({target.path})")
        else:
            ui.write_raw(text)
        return
    try:
        for text in control.follow_log(home, state.run_id, target.name, last=lines):
            ui.write_raw(text)
    except KeyboardInterrupt:
        ui.info(f"stopped following {target.name}; the job goes on")
