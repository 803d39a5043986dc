"""A run seen from another terminal: a job's log (`orch logs`, `-f` to follow it until the
job ends) and stopping the run (`orch stop`) as Ctrl-C in its own terminal would.

Both read the run state only; neither writes it. Stopping sends SIGTERM to the orchestrator
that drives the run, which then does exactly what it does on Ctrl-C (`lock.stop_on_signals`):
stops every job, records the unfinished ones as cancelled (the reason says `orch stop`) and
keeps worktrees and outputs for `--resume`.
"""

from __future__ import annotations

import codecs
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

from orchestrator import state as st
from orchestrator.errors import OrchError, UsageError

_READ_CHUNK = 1 << 16


# ---------------------------------------------------------------------------- which run


def load(home: Path, run_id: str | None) -> st.RunState:
    """The run ``run_id`` (default: the latest), its liveness worked out."""
    run = st.load_run(home, run_id)
    if run is None:
        raise UsageError(f"no run {run_id!r} in {home} (`orch status` shows the latest)"
                         if run_id else f"no run found in {home}: start one with `orch run`")
    return st.refresh_liveness(run)


# ---------------------------------------------------------------------------- logs


@dataclass(frozen=True)
class LogTarget:
    name: str  # as the run names it: a variant job, shared:<name> or gate:<variant>
    path: Path
    finished: bool  # its job has ended, or its run has


def log_targets(run: st.RunState) -> dict[str, LogTarget]:
    """Every job of ``run`` that has a log, by name: shared jobs, gates, then trainings."""
    over = run.status != st.RunStatus.running
    targets: dict[str, LogTarget] = {}
    for row in run.phase_jobs:
        if row.log_path:
            targets[row.name] = LogTarget(row.name, Path(row.log_path), over or row.stage.finished)
    for job in run.jobs:
        if job.log_path:
            targets[job.name] = LogTarget(job.name, Path(job.log_path), over or job.stage.finished)
    return targets


def find_log(run: st.RunState, name: str) -> LogTarget:
    """The job called ``name``; a shared job or gate also by its bare name (``tokenizer``)
    when no other job has it. An unknown name: a usage error listing the names."""
    targets = log_targets(run)
    if name in targets:
        return targets[name]
    by_bare = [t for key, t in targets.items() if key.split(":", 1)[-1] == name]
    if len(by_bare) == 1:
        return by_bare[0]
    known = ", ".join(targets) or "none yet"
    raise UsageError(f"no job {name!r} in run {run.run_id}; its jobs: {known}")


def read_log(path: Path, last: int | None = None) -> str:
    """The log's text, or its ``last`` lines; "" when there is none yet."""
    try:
        with open(path, "rb") as handle:
            end = handle.seek(0, os.SEEK_END)
            return _text_upto(handle, end, last)
    except FileNotFoundError:
        return ""


def _text_upto(handle: BinaryIO, end: int, last: int | None) -> str:
    """The first ``end`` bytes of an open log, or the last ``last`` lines of them, read
    backwards in chunks (a long training log is not read whole for a few lines)."""
    if last is None:
        handle.seek(0)
        return handle.read(end).decode("utf-8", errors="replace")
    data, position = b"", end
    while position > 0 and data.count(b"\n") <= last:
        step = min(_READ_CHUNK, position)
        position -= step
        handle.seek(position)
        data = handle.read(step) + data
    lines = data.splitlines(keepends=True)
    return b"".join(lines[-last:] if last > 0 else []).decode("utf-8", errors="replace")


@dataclass
class _Follower:
    """Reads what a log file gained since the last read, from the start again when the file
    was replaced or cut."""

    path: Path
    offset: int = 0
    inode: int | None = None
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"))

    def first(self, last: int | None) -> str:
        """What is there now (its ``last`` lines, or all of it); later reads go on from it."""
        try:
            with open(self.path, "rb") as handle:
                self.inode = os.fstat(handle.fileno()).st_ino
                self.offset = handle.seek(0, os.SEEK_END)
                return _text_upto(handle, self.offset, last)
        except FileNotFoundError:
            return ""

    def read(self) -> str:
        try:
            stat = self.path.stat()
        except OSError:
            return ""
        if stat.st_size < self.offset or (self.inode is not None and stat.st_ino != self.inode):
            self.offset = 0
        self.inode = stat.st_ino
        if stat.st_size == self.offset:
            return ""
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read(stat.st_size - self.offset)
        self.offset += len(data)
        return self.decoder.decode(data)


def follow_log(home: Path, run_id: str, name: str, *, last: int | None = None,
               interval: float = 0.25) -> Iterator[str]:
    """The log of job ``name`` (its ``last`` lines, or all of it), then whatever is appended,
    like `tail -f`, until the run's state says the job has ended (or the run has, or its
    orchestrator died): then the rest, and the iterator ends. A log not there yet is waited
    for."""
    state_file = st.state_path(home, run_id)
    run = load(home, run_id)
    target = find_log(run, name)
    follower = _Follower(target.path)
    if text := follower.first(last):
        yield text
    signature: tuple[int, int] | None = None
    while True:
        # The end is seen before the read below, so that read holds all the job wrote.
        try:
            stat = state_file.stat()
            if (stat.st_mtime_ns, stat.st_size) != signature:
                signature = (stat.st_mtime_ns, stat.st_size)
                run = st.read_state_file(state_file, warn=False) or run
        except OSError:
            pass  # between a save's rename and the next: keep the last good copy
        finished = find_log(st.refresh_liveness(run), target.name).finished
        if text := follower.read():
            yield text
        if finished:
            return
        time.sleep(interval)


# ---------------------------------------------------------------------------- stop


@dataclass(frozen=True)
class StopResult:
    run_id: str
    outcome: Literal["stopped", "not_running", "timeout"]
    status: str  # the run's status when orch stop returned
    pid: int | None  # the orchestrator's
    cancelled: list[str]  # jobs, shared jobs and gates now recorded as cancelled
    run_dir: str
    seconds: float  # from the signal to the run's end (or the timeout)


def stop_run(home: Path, run_id: str | None = None, *, timeout: float,
             interval: float = 0.2) -> StopResult:
    """Send SIGTERM to the orchestrator driving the run and wait until the run has ended:
    its state no longer running and the process gone (``timeout`` at most).

    Only the process recorded as the run's orchestrator gets the signal: the pid and its
    start time must match, so a reused pid is never signalled. A run that is not running
    (ended, or its orchestrator died) gets nothing and comes back ``not_running``.
    """
    run = load(home, run_id)
    rdir = str(st.run_dir(home, run.run_id))
    process = st.find_process(run.orchestrator_pid, run.orchestrator_started)
    if run.status != st.RunStatus.running or process is None:
        return StopResult(run.run_id, "not_running", str(run.status), run.orchestrator_pid,
                          [], rdir, 0.0)
    try:
        process.send_signal(signal.SIGTERM)
    except ProcessLookupError:  # it ended just now, by itself
        pass
    except PermissionError:
        raise OrchError(f"not allowed to signal pid {process.pid}, which drives run "
                        f"{run.run_id}: stop it as the user who started it") from None
    sent = time.monotonic()
    deadline = sent + timeout
    while True:
        current = load(home, run.run_id)
        gone = st.find_process(run.orchestrator_pid, run.orchestrator_started) is None
        if (current.status != st.RunStatus.running and gone) or time.monotonic() >= deadline:
            break
        time.sleep(interval)
    ended = current.status != st.RunStatus.running
    cancelled = [r.name for r in current.phase_jobs if r.stage == st.Stage.cancelled]
    cancelled += [j.name for j in current.jobs if j.stage == st.Stage.cancelled]
    return StopResult(run.run_id, "stopped" if ended else "timeout", str(current.status),
                      run.orchestrator_pid, cancelled, rdir, time.monotonic() - sent)
