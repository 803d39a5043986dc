"""Executors: where a job's process runs. Submit a JobSpec, get a JobHandle to poll or stop.

`LocalExecutor` starts each job as a subprocess in a new session (its own process group), so
stopping a job stops everything it started. A cluster executor (Ray) implements the same two
classes; the launcher sees only this interface.
"""

from __future__ import annotations

import os
import signal
import subprocess
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
    """A submitted job. poll() is non-blocking; terminate/kill act on the whole job."""

    pid: int | None = None
    pgid: int | None = None

    @abstractmethod
    def poll(self) -> int | None:
        """The exit code once the job has ended, else None."""

    @abstractmethod
    def terminate(self) -> None:
        """Ask the job to stop (SIGTERM to its process group)."""

    @abstractmethod
    def kill(self) -> None:
        """Stop the job now (SIGKILL to its process group)."""

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


class LocalHandle(JobHandle):
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.pgid = proc.pid  # start_new_session: the job leads its own group
        self._code: int | None = None

    def poll(self) -> int | None:
        if self._code is None:
            code = self.proc.poll()
            if code is not None:
                # A signal death is -N from Popen; report it the shell's way (128 + N).
                self._code = 128 - code if code < 0 else code
        return self._code

    def terminate(self) -> None:
        signal_group(self.pgid, signal.SIGTERM)

    def kill(self) -> None:
        signal_group(self.pgid, signal.SIGKILL)

    def alive(self) -> bool:
        self.poll()
        return group_alive(self.pgid)


class LocalExecutor(Executor):
    """Subprocesses on this machine, output (stdout + stderr) appended to the job's log."""

    def submit(self, spec: JobSpec) -> JobHandle:
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **spec.env}
        with open(spec.log_path, "ab") as log:
            log.write(f"$ {' '.join(spec.argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                spec.argv,
                cwd=spec.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return LocalHandle(proc)


def write_log(path: Path, text: str) -> None:
    """Append orch's own lines to a job's log (the job's output goes there too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(text)


def signal_group(pgid: int | None, sig: int) -> None:
    if not pgid:
        return
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def group_alive(pgid: int | None) -> bool:
    if not pgid:
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Zombies still count for killpg(0); look for a live member.
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def stop(handles: Sequence[JobHandle], grace: float, poll_s: float = 0.05) -> None:
    """SIGTERM every job's group, wait up to `grace` seconds, then SIGKILL what is left.

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


def stop_group(pgid: int | None, grace: float) -> None:
    """Stop a process group orch no longer holds a handle to (an orphan after a crash)."""
    signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    signal_group(pgid, signal.SIGKILL)
