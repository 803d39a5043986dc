"""The run state's rows for the phases before training: shared jobs and gates.

The driver calls these as the jobs start and end, so that the live view, `orch monitor`
from another terminal and `orch logs` find each one (its stage, its events, its log) in
state.json, as they find a training job. A shared job whose artifact is cached gets a row
too, done at once and marked ``cached``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from orchestrator import shared_jobs
from orchestrator.formats import GateResult, PhaseJob, RunState, Stage
from orchestrator.lock import interrupt_reason

if TYPE_CHECKING:
    from orchestrator.executors import JobSpec

RUNNING_STAGE = {"shared": Stage.training, "gate": Stage.gating}


def plan_shared(run: RunState, plans: list[shared_jobs.SharedPlan]) -> None:
    """A row per shared job the run needs, ahead of the gates' rows: a cached one done at
    once, the others queued (this run's earlier rows for them, on a resume, replaced)."""
    rows = [PhaseJob(name=p.name, phase="shared", stage=Stage.done if p.cached else Stage.queued,
                     cached=p.cached, output_dir=str(p.out_dir if p.cached else p.work_dir),
                     log_path=str(p.log_path))
            for p in plans]
    run.phase_jobs = rows + [row for row in run.phase_jobs if row.phase != "shared"]


def find(run: RunState, name: str) -> PhaseJob | None:
    return next((row for row in run.phase_jobs if row.name == name), None)


def started(run: RunState, spec: JobSpec, pid: int | None) -> None:
    """The job of ``spec`` (``shared:...`` or ``gate:...``) has started as ``pid``."""
    row = find(run, spec.name)
    if row is None:
        row = PhaseJob(name=spec.name, phase="gate" if spec.name.startswith("gate:") else "shared")
        run.phase_jobs.append(row)
    row.stage, row.pid, row.started = RUNNING_STAGE[row.phase], pid, time.time()
    row.finished = None
    row.output_dir, row.log_path = str(spec.out_dir), str(spec.log_path)
    row.exit_code, row.reason, row.gate, row.cached = None, "", None, False


def shared_ended(run: RunState, plan: shared_jobs.SharedPlan, code: int) -> str:
    """``plan``'s job exited with ``code``: publish its artifact (its events go with it) and
    return why it failed, "" when it did not."""
    why = shared_jobs.failure(plan, code)
    row = _ended(run, plan.name, code)
    if row is not None and why:
        row.stage, row.reason = Stage.failed, why
    elif row is not None:
        row.stage, row.output_dir = Stage.done, str(plan.out_dir)
    return why


def gate_ended(run: RunState, name: str, code: int, result: GateResult, reason: str) -> None:
    """The gate ``name`` exited with ``code``; ``reason`` is its first failure, if any."""
    row = _ended(run, name, code)
    if row is None:
        return
    row.gate, row.reason = result, reason
    row.stage = Stage.done if result.passed else Stage.gate_failed


def _ended(run: RunState, name: str, code: int) -> PhaseJob | None:
    row = find(run, name)
    if row is not None:
        row.exit_code, row.pid, row.finished = code, None, time.time()
    return row


@contextmanager
def closed_on_exit(run: RunState, phase: str) -> Iterator[None]:
    """Rows of ``phase`` not finished when an exception leaves the block end with the run,
    as the driver records its jobs: cancelled on Ctrl-C (or `orch stop`), failed otherwise."""
    try:
        yield
    except BaseException as error:
        interrupted = isinstance(error, KeyboardInterrupt)
        first_line = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        # The words the driver records for its jobs.
        why = interrupt_reason(error) if interrupted else f"orch stopped: {first_line}"
        for row in run.phase_jobs:
            if row.phase == phase and not row.stage.finished:
                row.stage = Stage.cancelled if interrupted else Stage.failed
                row.reason, row.pid, row.finished = why, None, time.time()
        raise
