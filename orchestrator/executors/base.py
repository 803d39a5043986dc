"""What every executor provides: submit a `JobSpec`, get a `JobHandle` to poll or stop.

The launcher sees only this interface; `local` runs subprocesses on this machine, `ray`
runs the same specs as tasks on a Ray cluster.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.devices import Gpu


@dataclass(frozen=True)
class JobSpec:
    """A command to run: argv in cwd with env (merged over orch's environment)."""

    name: str
    argv: list[str]
    cwd: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    # Resources the job holds, for executors that schedule themselves (Ray).
    gpus: tuple[int, ...] = ()
    threads: int = 1
    gpu_memory_mb: int = 0  # reserved per GPU: how a cluster executor sizes a packed share
    # The code a remote executor ships: recorded before submission because a copy of the
    # worktree on another machine has no .git to ask. Empty commit: snapshot cwd at submit.
    commit: str = ""
    diff: str = ""
    output_dir: Path | None = None  # what comes back from a remote job (default: log's folder)

    @property
    def out_dir(self) -> Path:
        return self.output_dir or self.log_path.parent


class JobHandle(ABC):
    """A submitted job. poll() is non-blocking; terminate/kill act on all its processes."""

    pid: int | None = None  # a local process id; None where it would mean nothing here

    @abstractmethod
    def poll(self) -> int | None:
        """The exit code once the job has ended, else None."""

    @abstractmethod
    def terminate(self) -> None:
        """Ask the job to stop (SIGTERM to each of its processes)."""

    @abstractmethod
    def kill(self) -> None:
        """Stop the job now (SIGKILL to each of its processes)."""

    @abstractmethod
    def alive(self) -> bool:
        """True while any process of the job remains."""


class Executor(ABC):
    """Where jobs run. The launcher plans with `resources()` and polls what `submit` returns."""

    where = "this machine"  # for messages
    # Without any GPU, GPU jobs run on CPU (a laptop). A cluster may refuse instead, so a
    # GPU job fails at once rather than waiting for a GPU node that never comes.
    cpu_fallback = True
    # Jobs share this machine's cores with orch, so a running job can take over the cores
    # that ended jobs free (the thread grant file). A cluster reserved CPUs per task instead.
    thread_grants = True

    @abstractmethod
    def submit(self, spec: JobSpec) -> JobHandle: ...

    def resources(self) -> tuple[list[Gpu], int] | None:
        """The GPUs and cores to plan for, or None for this machine's (discovered)."""
        return None

    def close(self) -> None:
        """Release what the executor holds (a cluster connection); jobs have ended."""
        return None


def write_log(path: Path, text: str) -> None:
    """Append orch's own lines to a job's log (the job's output goes there too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(text)


def stop(handles: Sequence[JobHandle], grace: float, poll_s: float = 0.05) -> None:
    """SIGTERM every job, wait up to `grace` seconds, then SIGKILL what is left.

    A second Ctrl-C during the wait skips straight to SIGKILL.
    """
    for h in handles:
        h.terminate()
    deadline = time.monotonic() + grace
    try:
        while any(h.alive() for h in handles) and time.monotonic() < deadline:
            time.sleep(poll_s)
    except KeyboardInterrupt:
        pass
    for h in handles:
        if h.alive():
            h.kill()
    deadline = time.monotonic() + 5
    while any(h.alive() for h in handles) and time.monotonic() < deadline:
        time.sleep(poll_s)
