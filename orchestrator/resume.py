"""What `--resume` continues: the last train or run, its unfinished jobs set to go again."""

from __future__ import annotations

from pathlib import Path

from orchestrator.config import Config, Variant
from orchestrator.errors import UsageError
from orchestrator.executors import stop_orphan
from orchestrator.state import (
    JobState,
    RunState,
    Stage,
    latest_run_id,
    load_run,
    refresh_liveness,
)


def unfinished_jobs(home: Path, variants: list[Variant]) -> tuple[RunState, list[JobState]]:
    """The last train/run and its jobs of ``variants`` that `--resume` would run again;
    read only (what `--dry-run` shows)."""
    rid = latest_run_id(home, commands=("train", "run"))
    old = load_run(home, rid) if rid else None
    if old is None:
        raise UsageError("nothing to resume: no earlier `orch train` or `orch run` here")
    old = refresh_liveness(old)
    names = {v.name for v in variants}
    todo = [j for j in old.jobs if j.variant in names and j.stage not in (
        Stage.done, Stage.gate_failed)]
    if not todo:
        raise UsageError(f"run {old.run_id} has nothing left to do; start a new one with "
                         "`orch train`")
    return old, todo


def resumable_run(cfg: Config, home: Path, variants: list[Variant]) -> RunState:
    """The last train/run with its unfinished jobs of ``variants`` set to go again."""
    old, todo = unfinished_jobs(home, variants)
    for j in todo:
        # An orphan from a killed orchestrator still runs: stop it, then continue from its
        # last checkpoint, so no job runs twice over the same output dir.
        stop_orphan(j.pid, j.started, cfg.grace_seconds)
        gate_ok = j.gate is not None and j.gate.passed
        j.stage = Stage.queued if gate_ok else Stage.pending
        j.pid = j.exit_code = j.finished = None
        j.reason = ""
    return old
