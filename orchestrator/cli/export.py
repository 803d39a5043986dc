"""`orch export`: a run's jobs into TensorBoard event files or an MLflow tracking store."""

from __future__ import annotations

from typing import Annotated

import typer


def export(
    destination: Annotated[str, typer.Argument(
        show_default=False,
        help="TensorBoard: a folder (each job goes to DESTINATION/RUN_ID/JOB). MLflow: a "
        "tracking URI, e.g. sqlite:///mlflow.db or http://host:5000.")],
    to: Annotated[str, typer.Option(
        "--to", metavar="TARGET", show_default=False,
        help="tensorboard or mlflow (both: pip install 'orch[export]').")],
    run: Annotated[str | None, typer.Option(
        "--run", help="Run id (default: the newest run with results).")] = None,
    experiment: Annotated[str, typer.Option(
        "--experiment", help="MLflow: the experiment to log into.")] = "orch",
    replace: Annotated[bool, typer.Option(
        "--replace", help="Write again the jobs already exported (default: skip them).")
    ] = False,
    json_output: Annotated[bool, typer.Option(
        "--json", help="Print what was written per job as JSON.")] = False,
) -> None:
    """Write every finished job of a run to TensorBoard or MLflow.

    Per step the training loss, learning rate, speed and memory, and each evaluation's
    metrics; then the final metrics of the model and the reference rows, the timings and
    the results' curves; the run config as params (TensorBoard: hparams), with the run,
    variant, seed, preset and commit as tags; in MLflow also results.json, the images, the
    job's diff and the run's report as artifacts. A job already exported is skipped
    (`--replace` writes it again); jobs still running are left for a later export.
    """
    from orchestrator import ui
    from orchestrator.cli.compare import find_run_dir
    from orchestrator.errors import UsageError
    from orchestrator.export import TARGETS, export_run

    if to not in TARGETS:  # checked before the run is looked for: the usage error comes first
        raise UsageError(f"--to {to!r}: export to one of {', '.join(TARGETS)}")
    summary = export_run(find_run_dir(run), to=to, destination=destination,
                         experiment=experiment, replace=replace)
    if json_output:
        ui.write_json(summary.to_dict())
        return
    for name, why in summary.not_exported.items():
        ui.warn(f"{name}: {why}")
    where = "MLflow run" if to == "mlflow" else "folder"
    ui.write(ui.table(("job", "action", where, "scalars", "params", "artifacts"), [
        (j.job, j.action, j.where, *(("", "", "") if j.action == "skipped" else
                                     (j.scalars, j.params, j.artifacts)))
        for j in summary.jobs], title=f"run {summary.run_id} to {to}"))
    for job in summary.jobs:
        for note in job.notes:
            ui.info(f"{job.job}: {note}")
    if to == "tensorboard":
        ui.info(f"view: tensorboard --logdir {destination}")
    else:
        ui.info(f"view: mlflow ui --backend-store-uri {destination} (the full mlflow "
                f"package), experiment {summary.experiment}")
