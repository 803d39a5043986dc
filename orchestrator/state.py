"""Run state: where it lives under the state directory, how it is saved and loaded, and
whether the processes it names are still alive.

Layout of the state directory (``.orch/`` at the repo root, or ``$ORCH_HOME``)::

    latest                      id of the newest run (one line)
    lock                        held (flock) by the orchestrator that is running
    runs/<run_id>/state.json    RunState (orchestrator.formats), rewritten atomically
    runs/<run_id>/state.json.bak  the save before the last: the last good state if the
                                current file is ever found corrupt
    runs/<run_id>/<job>/        a job's output dir: events.jsonl, results.json, checkpoints/,
                                train.log, diff.patch (outside the worktree, so it survives
                                `orch clean`)
    runs/<run_id>/gates/<variant>/  junit.xml and gate.log of a variant's gate
    shared/<hash>/              artifacts of shared jobs, cached by a hash of what made them

The launcher is the only writer. Readers (status, monitor, compare) call `load_run` and then
`refresh_liveness`, which reports dead processes as such without writing anything.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from orchestrator.formats import (
    FINISHED_STAGES,
    CorruptFile,
    GateResult,
    JobState,
    Outcome,
    PhaseJob,
    RunState,
    RunStatus,
    Stage,
    TestOutcome,
    dump_run,
    parse_run,
    run_to_dict,
    warn_corrupt,
    write_text_atomic,
)

if TYPE_CHECKING:
    from orchestrator.config import Config, Variant

__all__ = [
    "FINISHED_STAGES", "GateResult", "JobState", "Outcome", "PhaseJob", "RunState", "RunStatus",
    "Stage", "TestOutcome", "run_to_dict",
]

HOME_ENV = "ORCH_HOME"
STATE_FILE = "state.json"
BACKUP_SUFFIX = ".bak"
# A process found at a recorded pid that started this long after the record is another one.
PID_REUSE_SLACK_S = 2.0


# ---------------------------------------------------------------------------- paths


def state_home(repo_root: Path | None = None) -> Path:
    """The state directory: $ORCH_HOME if set, else <repo root>/.orch."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return (repo_root or Path.cwd()).resolve() / ".orch"


def runs_dir(home: Path) -> Path:
    return home / "runs"


def run_dir(home: Path, run_id: str) -> Path:
    return runs_dir(home) / run_id


def state_path(home: Path, run_id: str) -> Path:
    return run_dir(home, run_id) / STATE_FILE


def new_run_id(now: float | None = None) -> str:
    """Sortable, readable and unique enough for one machine: 20250101-120000-<pid>."""
    t = time.localtime(now if now is not None else time.time())
    return time.strftime("%Y%m%d-%H%M%S", t) + f"-{os.getpid()}"


def job_name(variant: str, seed: int, n_seeds: int) -> str:
    return variant if n_seeds <= 1 else f"{variant}-s{seed}"


def new_jobs(cfg: Config, rdir: Path, variants: list[Variant], preset: str,
             seeds: int | list[int], *, stage: Stage = Stage.pending,
             overrides: dict[str, str] | None = None) -> list[JobState]:
    """A job for each variant at each seed (a count: seeds 0..n-1), its output in ``rdir``,
    ``overrides`` of the variant's config passed to it."""
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    jobs = []
    for v in variants:
        for seed in seed_list:
            name = job_name(v.name, seed, len(seed_list))
            jobs.append(JobState(
                variant=v.name, seed=seed, preset=preset, name=name, branch=v.branch,
                stage=stage, worktree=str(cfg.worktree_path(v)), output_dir=str(rdir / name),
                log_path=str(rdir / name / "train.log"), overrides=dict(overrides or {})))
    return jobs


# ---------------------------------------------------------------------------- save and load


def save_run(home: Path, run: RunState, *, latest: bool = False) -> Path:
    """Write the run's state.json atomically, keeping the previous save as its backup;
    ``latest`` also marks it the newest run."""
    path = state_path(home, run.run_id)
    if path.exists():
        keep = path.with_name(f".{path.name}.{os.getpid()}.link")
        keep.unlink(missing_ok=True)
        os.link(path, keep)
        os.replace(keep, path.with_name(path.name + BACKUP_SUFFIX))
    write_text_atomic(path, dump_run(run))
    if latest:
        write_text_atomic(home / "latest", run.run_id + "\n")
    return path


def read_state_file(path: Path, *, warn: bool = True) -> RunState | None:
    """The run in ``path``; if that file is torn or corrupt, a one-line warning and the last
    good state (the backup), else None. Never raises for a bad file."""
    try:
        return parse_run(path.read_bytes(), path)
    except FileNotFoundError:
        return None
    except (OSError, CorruptFile) as error:
        reason = error.reason if isinstance(error, CorruptFile) else str(error)
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    try:
        run = parse_run(backup.read_bytes(), backup)
    except (OSError, CorruptFile):
        if warn:
            warn_corrupt(path, reason, "no good copy is left; this run is skipped")
        return None
    if warn:
        warn_corrupt(path, reason, "showing its last good state")
    return run


def load_run(home: Path, run_id: str | None = None) -> RunState | None:
    """The run `run_id`, or the latest run; None if there is none."""
    if run_id is None:
        run_id = latest_run_id(home)
        if run_id is None:
            return None
    return read_state_file(state_path(home, run_id))


def latest_run_id(home: Path, commands: tuple[str, ...] | None = None) -> str | None:
    """The newest run, or the newest made by one of `commands` (e.g. ("train", "run"))."""
    latest = home / "latest"
    if commands is None and latest.exists():
        rid = latest.read_text(encoding="utf-8").strip()
        if rid and state_path(home, rid).exists():
            return rid
    for rid in reversed(list_runs(home)):
        if commands is None:
            return rid
        run = read_state_file(state_path(home, rid), warn=False)
        if run is not None and run.command in commands:
            return rid
    return None


def list_runs(home: Path) -> list[str]:
    return sorted(p.name for p in runs_dir(home).glob("*") if (p / STATE_FILE).exists())


def existing_run_dir(home: Path, run_id: str) -> Path:
    """The folder of run ``run_id``; a UsageError naming the latest runs when there is none."""
    from orchestrator.errors import UsageError

    path = run_dir(home, run_id)
    if not path.is_dir():
        known = list_runs(home)
        hint = f"; known runs: {', '.join(known[-5:])}" if known else ""
        raise UsageError(f"no run '{run_id}' in {home}{hint}")
    return path


# ---------------------------------------------------------------------------- liveness


def find_process(pid: int | None, started: float | None = None) -> psutil.Process | None:
    """The live (not zombie) process at ``pid``, if it is the one recorded: one that began
    after ``started`` is a later process that reused the number."""
    if not pid or pid <= 0:
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return None
        if started is not None and proc.create_time() > started + PID_REUSE_SLACK_S:
            return None
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied:  # another user's process there: it exists, so say alive
        return psutil.Process(pid)
    return proc


def pid_alive(pid: int | None, started: float | None = None) -> bool:
    """True if the process recorded as ``pid`` (begun by ``started``) still runs."""
    return find_process(pid, started) is not None


def refresh_liveness(run: RunState) -> RunState:
    """The truth about a run read from disk, computed without writing anything.

    If the orchestrator that owns a running run is dead, the run is "died", and each job that
    was not finished is reported failed with reason "orchestrator died" (or done, if its
    results.json exists, or still training if its own process outlived the orchestrator).
    If the orchestrator is alive but a job's recorded process is gone, the job is failed.
    """
    if run.status != RunStatus.running:
        return run
    orch_alive = pid_alive(run.orchestrator_pid, run.orchestrator_started)
    jobs = []
    for job in run.jobs:
        if job.stage.finished:
            jobs.append(job)
            continue
        job_alive = pid_alive(job.pid, job.started)
        if orch_alive:
            # The launcher reaps a job and records its exit within one poll; a job that wrote
            # its results has just exited, not died.
            if (job.stage.active and job.pid and not job_alive
                    and not job.results_path.exists()):
                job = replace(job, stage=Stage.failed, reason="process died")
        elif job.stage.active and job_alive:
            job = replace(job, reason="orchestrator died; job still running")
        elif job.stage == Stage.training and job.results_path.exists():
            job = replace(job, stage=Stage.done, reason="finished after the orchestrator died")
        else:
            job = replace(job, stage=Stage.failed, reason="orchestrator died")
        jobs.append(job)
    # With its orchestrator gone, nothing will record a shared job's or gate's end.
    phase_jobs = [p if p.stage.finished or orch_alive
                  else replace(p, stage=Stage.failed, reason="orchestrator died")
                  for p in run.phase_jobs]
    return replace(run, jobs=jobs, phase_jobs=phase_jobs,
                   status=RunStatus.running if orch_alive else RunStatus.died)
