"""Tracking exports: a run's finished jobs into TensorBoard event files or an MLflow store.

``export_run(run_dir, to=..., destination=...)`` reads each finished job's events.jsonl and
results.json once into a neutral ``JobRecord`` (scalars over steps, params, tags, files),
then writes it with the target's own library, and returns what it wrote per job. Design:

- One name per number in both targets: ``train/loss``, ``train/lr``,
  ``train/samples_per_s``, ``train/memory_mb`` per progress step; ``eval/<metric>`` at the
  step of the evaluation (the last progress step before it); ``final/<row>/<metric>`` (the
  model's and the reference rows' held-out numbers) and ``timings/<field>`` at the last step;
  ``series/<name>/<row>`` over the positions of a results curve (step = position).
- Params are results' ``config`` flattened to dotted keys (``train.lr``), plus the parameter
  counts; tags name the orch run, job, variant, seed, preset, branch and commit, then the
  environment and provenance. TensorBoard has no tags: its hparams hold the params and the
  ``orch.*`` tags.
- Exporting twice does not duplicate: a job already there (TensorBoard: event files in its
  folder; MLflow: a run tagged with the same orch run and job) is skipped, or with
  ``replace`` removed and written again. A write that fails leaves nothing half-written.
- TensorBoard: ``DIR/<run id>/<job>``, written with tensorboard's own ``EventFileWriter``
  and protos (no torch; tensorboard itself loads numpy, only when exporting). MLflow: one
  experiment (``orch`` by default), one MLflow run per job, through ``MlflowClient``; files
  uploaded are results.json, the job's diff.patch, the images the results list and the
  run's report.md/report.html; checkpoints stay where they are (their paths are tags).

Both libraries are the optional ``export`` extra, imported only here, inside functions.
"""

from __future__ import annotations

import importlib
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

from orchestrator import state as st
from orchestrator.errors import EXIT_JOB, OrchError, UsageError
from orchestrator.formats import (
    CorruptFile,
    EvalEvent,
    Event,
    ProgressEvent,
    Results,
    load_results,
    read_events,
    warn_corrupt,
)
from orchestrator.report.params import flatten

TARGETS = ("tensorboard", "mlflow")
INSTALL_HINT = "pip install 'orch[export]'"
DEFAULT_EXPERIMENT = "orch"
PROGRESS_FIELDS = ("loss", "lr", "samples_per_s", "memory_mb")
TIMING_FIELDS = ("wall_s", "train_s", "samples_per_s", "peak_memory_mb")
REPORT_FILES = ("report.md", "report.html")
MLFLOW_STATUS = {"done": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}
TB_EVENT_FILES = "events.out.tfevents.*"
DATABASE_SCHEMES = ("sqlite:", "postgresql", "mysql", "mssql")  # MLflow's SQL stores
# PNG colour type (IHDR byte 25) -> channels, TensorBoard's `colorspace` of an image summary.
PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


class MissingExtra(UsageError):
    """The target's library is not installed."""


class NothingToExport(OrchError):
    exit_code = EXIT_JOB


# ---------------------------------------------------------------------------- records


class Scalar(NamedTuple):
    tag: str
    step: int
    value: float
    wall_time: float  # Unix seconds


@dataclass(frozen=True)
class JobRecord:
    """One finished job as both targets take it."""

    name: str
    status: str  # the job's stage: done, failed or cancelled
    started: float
    finished: float
    tags: dict[str, str]
    params: dict[str, bool | int | float | str]
    scalars: tuple[Scalar, ...]
    images: dict[str, Path]  # name -> a picture the results list
    files: tuple[tuple[str, Path], ...]  # (folder among the artifacts, "" for the top; file)


@dataclass(frozen=True)
class JobExport:
    """What was written for one job: ``action`` is written, replaced or skipped; ``where``
    is the TensorBoard folder or the MLflow run id."""

    job: str
    action: str
    where: str
    scalars: int = 0
    params: int = 0
    artifacts: int = 0
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExportSummary:
    run_id: str
    target: str
    destination: str
    experiment: str | None  # MLflow's; None for TensorBoard
    jobs: tuple[JobExport, ...]
    not_exported: dict[str, str] = field(default_factory=dict)  # job -> why

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------- reading


def _finished_jobs(run_dir: Path) -> tuple[str, list[st.JobState], dict[str, str]]:
    """The run id, its finished jobs with output, and why each other job is left out."""
    run = st.read_state_file(run_dir / st.STATE_FILE)
    if run is None:  # a run folder copied without its state: the job folders it holds
        jobs = [st.JobState(variant=p.name, name=p.name, output_dir=str(p),
                            stage=st.Stage.done if (p / "results.json").exists()
                            else st.Stage.failed)
                for p in sorted(run_dir.iterdir())
                if (p / "results.json").exists() or (p / "events.jsonl").exists()]
        return run_dir.name, jobs, {}
    run = st.refresh_liveness(run)
    finished, left_out = [], {}
    for job in run.jobs:
        has_output = bool(job.output_dir) and (job.events_path.exists()
                                               or job.results_path.exists())
        if job.stage.finished and has_output:
            finished.append(job)
        elif job.stage.active:
            left_out[job.name] = f"still {job.stage.value}: export it when it ends"
        else:
            left_out[job.name] = f"not trained ({job.stage.value})"
    return run.run_id, finished, left_out


def _flat(prefix: str, value: dict[str, Any]) -> dict[str, bool | int | float | str]:
    """Nested mappings as dotted keys (the report's params table's), under ``prefix``;
    lists, nulls and empty mappings as JSON text, which both targets take."""
    flat = flatten(value, f"{prefix}." if prefix else "", omit=())
    return {key: item if isinstance(item, (bool, int, float, str))
            else json.dumps(item, default=str) for key, item in flat.items()}


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _event_scalars(events: list[Event]) -> tuple[list[Scalar], int, float | None]:
    """Per-step scalars from the events, the last step and the last event's time."""
    scalars: list[Scalar] = []
    step, last_time = 0, None
    for event in events:
        last_time = event.time
        if isinstance(event, ProgressEvent):
            step = event.step
            for name in PROGRESS_FIELDS:
                value = getattr(event, name)
                if _finite(value):
                    scalars.append(Scalar(f"train/{name}", step, float(value), event.time))
        elif isinstance(event, EvalEvent):
            at = step or event.epoch  # no progress yet: the epoch is the only position
            scalars += [Scalar(f"eval/{metric}", at, value, event.time)
                        for metric, value in event.metrics.items() if _finite(value)]
    return scalars, step, last_time


def _result_scalars(results: Results, step: int, when: float) -> list[Scalar]:
    scalars = [Scalar(f"final/{row}/{metric}", step, value, when)
               for row, values in results.metrics.items()
               for metric, value in values.items() if _finite(value)]
    scalars += [Scalar(f"timings/{name}", step, float(value), when) for name in TIMING_FIELDS
                if _finite(value := getattr(results.timings, name))]
    scalars += [Scalar(f"series/{name}/{row}", position, value, when)
                for name, series in results.series.items()
                for row, values in series.rows.items()
                for position, value in enumerate(values) if _finite(value)]
    return scalars


def job_record(job: st.JobState, run_id: str, run_dir: Path) -> JobRecord:
    """Everything one finished job has to export; a corrupt results.json is warned about
    and the job goes without it."""
    events = read_events(job.events_path)
    scalars, last_step, last_time = _event_scalars(events)
    results = None
    if job.results_path.exists():
        try:
            results = load_results(job.results_path)
        except CorruptFile as error:
            warn_corrupt(error.path, error.reason, "exporting the job's events alone")
    written = [p.stat().st_mtime for p in (job.events_path, job.results_path) if p.exists()]
    finished = job.finished or last_time or max(written)
    started = events[0].time if events else (job.started or finished)
    code = results.provenance.get("code") if results else None
    commit = job.commit or (code.get("commit") if isinstance(code, dict) else None) or ""
    tags = {"orch.run_id": run_id, "orch.job": job.name,
            "orch.variant": results.variant if results else job.variant,
            "orch.seed": str(results.seed if results else job.seed),
            "orch.preset": results.preset if results else job.preset,
            "orch.status": job.stage.value}
    if job.branch:
        tags |= {"orch.branch": job.branch, "orch.dirty": str(job.dirty).lower()}
    if commit:
        tags |= {"orch.commit": commit, "mlflow.source.git.commit": commit}
    params: dict[str, bool | int | float | str] = {}
    images: dict[str, Path] = {}
    files = [("report", run_dir / name) for name in REPORT_FILES]
    if job.diff_path:
        files.append(("", Path(job.diff_path)))
    if results is not None:
        scalars += _result_scalars(results, last_step, finished)
        params = _flat("", results.config)
        if results.parameters is not None:
            params |= _flat("parameters", results.parameters.model_dump())
        for prefix, values in (("environment", results.environment),
                               ("provenance", results.provenance),
                               ("artifacts", results.artifacts)):
            tags |= {key: str(value) for key, value in _flat(prefix, values).items()}
        images = {name: results.image_path(name) for name in results.images
                  if results.image_path(name).is_file()}
        files += [("", results.path), *(("images", path) for path in images.values())]
    return JobRecord(name=job.name, status=job.stage.value, started=started,
                     finished=finished, tags=tags, params=params, scalars=tuple(scalars),
                     images=images, files=tuple((folder, path) for folder, path in files
                                                if path.is_file()))


# ---------------------------------------------------------------------------- the export


def export_run(run_dir: Path, *, to: str, destination: str,
               experiment: str = DEFAULT_EXPERIMENT, replace: bool = False) -> ExportSummary:
    """Write every finished job of the run in ``run_dir`` to TensorBoard (``destination``
    a folder) or MLflow (a tracking URI, e.g. ``sqlite:///mlflow.db``)."""
    if to not in TARGETS:
        raise UsageError(f"--to {to!r}: export to one of {', '.join(TARGETS)}")
    run_id, jobs, left_out = _finished_jobs(run_dir)
    if not jobs:
        raise NothingToExport(f"no finished job in run {run_id}: see `orch status` for "
                              "where its jobs stand")
    records = [job_record(job, run_id, run_dir) for job in jobs]
    if to == "tensorboard":
        root = Path(destination) / run_id
        module = _require("tensorboard.summary.writer.event_file_writer", to, "tensorboard")
        done = tuple(_write_tensorboard(module, record, root / record.name, replace)
                     for record in records)
        return ExportSummary(run_id, to, destination, None, done, left_out)
    client = _mlflow_client(destination)
    experiment_id = _mlflow_experiment(client, experiment, destination)
    done = tuple(_write_mlflow(client, experiment_id, record, run_id, replace)
                 for record in records)
    return ExportSummary(run_id, to, destination, experiment, done, left_out)


def _require(module: str, target: str, package: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(f"--to {target} needs the {package} package, not installed here: "
                           f"{INSTALL_HINT}") from None


# ---------------------------------------------------------------------------- TensorBoard


def _png_size(path: Path) -> tuple[int, int, int] | None:
    """Width, height and channels from a PNG's header; None for anything else."""
    with open(path, "rb") as handle:
        head = handle.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return (int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big"),
            PNG_CHANNELS.get(head[25], 3))


def _write_tensorboard(writer_module: ModuleType, record: JobRecord, folder: Path,
                       replace: bool) -> JobExport:
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.plugins.hparams import summary_v2 as hparams_summary

    before = sorted(folder.glob(TB_EVENT_FILES))
    if before and not replace:
        return JobExport(record.name, "skipped", str(folder),
                         notes=("already exported; --replace writes it again",))
    for old in before:
        old.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    hparams = record.params | {key: value for key, value in record.tags.items()
                               if key.startswith("orch.")}
    summaries = [(record.started, 0, hparams_summary.hparams_pb(
        hparams, trial_id=record.name, start_time_secs=record.started))]
    summaries += [(s.wall_time, s.step, summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag=s.tag, simple_value=s.value)])) for s in record.scalars]
    notes = []
    for name, path in record.images.items():
        size = _png_size(path)
        if size is None:
            notes.append(f"image {name}: TensorBoard takes PNG only, left out")
            continue
        image = summary_pb2.Summary.Image(width=size[0], height=size[1], colorspace=size[2],
                                          encoded_image_string=path.read_bytes())
        summaries.append((record.finished, 0, summary_pb2.Summary(value=[
            summary_pb2.Summary.Value(tag=f"images/{name}", image=image)])))
    writer = writer_module.EventFileWriter(str(folder))
    try:
        for wall_time, step, summary in summaries:
            writer.add_event(event_pb2.Event(wall_time=wall_time, step=step, summary=summary))
        writer.close()
    except BaseException:
        writer.close()
        for partial in folder.glob(TB_EVENT_FILES):
            partial.unlink(missing_ok=True)
        raise
    return JobExport(record.name, "replaced" if before else "written", str(folder),
                     scalars=len(record.scalars), params=len(hparams),
                     artifacts=len(record.images) - len(notes), notes=tuple(notes))


# ---------------------------------------------------------------------------- MLflow


def _mlflow_error(uri: str, error: Exception) -> UsageError:
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return UsageError(f"MLflow at {uri}: {first}")


def _mlflow_client(uri: str) -> Any:
    _require("mlflow", "mlflow", "mlflow-skinny")
    if uri.startswith(DATABASE_SCHEMES):  # mlflow-skinny leaves out its database layer
        _require("sqlalchemy", "mlflow", "SQLAlchemy")
        _require("alembic", "mlflow", "alembic")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///"):  # SQLite makes the file, not its folder
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)  # opens (and for SQLite, makes) the store
    except MlflowException as error:
        raise _mlflow_error(uri, error) from None
    return client


def _mlflow_experiment(client: Any, name: str, uri: str) -> str:
    """The experiment's id, made when new. A local SQLite store keeps its files beside the
    database (MLflow's default is ./mlruns under whatever folder the export runs in)."""
    from mlflow.exceptions import MlflowException

    try:
        found = client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        location = None
        if uri.startswith("sqlite:///"):
            db = Path(uri.removeprefix("sqlite:///")).resolve()
            location = (db.parent / "mlartifacts").as_uri()
        return str(client.create_experiment(name, artifact_location=location))
    except MlflowException as error:
        raise _mlflow_error(uri, error) from None


def _mlflow_key(key: str) -> str:
    """A key MLflow accepts on every platform: other characters become underscores."""
    return re.sub(r"[^/\w.\- ]", "_", key).strip("/") or "_"


def _write_mlflow(client: Any, experiment_id: str, record: JobRecord, run_id: str,
                  replace: bool) -> JobExport:
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.exceptions import MlflowException
    from mlflow.utils import validation as limits

    query = (f"tags.`orch.run_id` = '{run_id}' and "
             f"tags.`orch.job` = '{record.name}'")
    try:
        existing = client.search_runs([experiment_id], filter_string=query)
    except MlflowException as error:
        raise _mlflow_error(client.tracking_uri, error) from None
    if existing and not replace:
        return JobExport(record.name, "skipped", existing[0].info.run_id,
                         notes=("already exported; --replace writes it again",))
    for old in existing:
        client.delete_run(old.info.run_id)
    notes: list[str] = []
    params = []
    for key, value in record.params.items():
        name, text = _mlflow_key(key), str(value)
        if len(name) > limits.MAX_ENTITY_KEY_LENGTH:
            notes.append(f"param {key[:40]}...: key longer than MLflow takes, left out")
            continue
        if len(text) > limits.MAX_PARAM_VAL_LENGTH:
            notes.append(f"param {name}: cut to MLflow's {limits.MAX_PARAM_VAL_LENGTH} chars")
            text = text[:limits.MAX_PARAM_VAL_LENGTH]
        params.append(Param(name, text))
    tags = [RunTag(_mlflow_key(key), value[:limits.MAX_TAG_VAL_LENGTH])
            for key, value in record.tags.items()]
    metrics = [Metric(_mlflow_key(s.tag), s.value, int(s.wall_time * 1000), s.step)
               for s in record.scalars]
    run = client.create_run(experiment_id, start_time=int(record.started * 1000),
                            run_name=f"{run_id}/{record.name}")
    mlflow_run_id = run.info.run_id
    try:
        for batch in _chunks(tags, limits.MAX_PARAMS_TAGS_PER_BATCH):
            client.log_batch(mlflow_run_id, tags=batch)
        for batch in _chunks(params, limits.MAX_PARAMS_TAGS_PER_BATCH):
            client.log_batch(mlflow_run_id, params=batch)
        for batch in _chunks(metrics, limits.MAX_METRICS_PER_BATCH):
            client.log_batch(mlflow_run_id, metrics=batch)
        for folder, path in record.files:
            client.log_artifact(mlflow_run_id, str(path), folder or None)
        client.set_terminated(mlflow_run_id, MLFLOW_STATUS.get(record.status, "FINISHED"),
                              end_time=int(record.finished * 1000))
    except BaseException as error:
        client.delete_run(mlflow_run_id)  # a half-written run would be "already exported"
        if isinstance(error, MlflowException):
            raise _mlflow_error(client.tracking_uri, error) from None
        raise
    return JobExport(record.name, "replaced" if existing else "written", mlflow_run_id,
                     scalars=len(metrics), params=len(params), artifacts=len(record.files),
                     notes=tuple(notes))


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]
