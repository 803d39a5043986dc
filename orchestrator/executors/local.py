"""Jobs as subprocesses on this machine, stopped with everything they started.

Each job starts in a session of its own. Its processes are followed through psutil (the
leader and its descendants, found again at every signal), so stopping a job reaches the
workers it forked, on Linux and macOS alike, and a recorded pid that now belongs to another
process (after a crash and pid reuse) is never signalled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil

from orchestrator.executors.base import Executor, JobHandle, JobSpec
from orchestrator.state import find_process


class ProcessTree:
    """A job's processes: its leader and every descendant seen so far."""

    def __init__(self, leader: psutil.Process) -> None:
        self.leader = leader
        self.known: dict[int, psutil.Process] = {leader.pid: leader}

    def _refresh(self) -> list[psutil.Process]:
        try:
            for child in self.leader.children(recursive=True):
                self.known.setdefault(child.pid, child)
        except psutil.Error:  # the leader is gone: its children are still in `known`
            pass
        return [p for p in self.known.values() if _running(p)]

    def signal(self, sig: int) -> None:
        for proc in self._refresh():
            try:
                proc.send_signal(sig)
            except psutil.Error:
                pass

    def alive(self) -> bool:
        return bool(self._refresh())


def _running(proc: psutil.Process) -> bool:
    try:  # is_running() also tells a reused pid from the process we knew
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class LocalHandle(JobHandle):
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.pid = proc.pid
        self._tree: ProcessTree | None = None
        self._code: int | None = None

    @property
    def tree(self) -> ProcessTree:
        # Found when first needed (a stop): until orch reaps the leader, its pid is not free
        # for another process to take.
        if self._tree is None:
            self._tree = ProcessTree(psutil.Process(self.proc.pid))
        return self._tree

    def poll(self) -> int | None:
        if self._code is None:
            code = self.proc.poll()
            if code is not None:
                # A signal death is -N from Popen; report it the shell's way (128 + N).
                self._code = 128 - code if code < 0 else code
        return self._code

    def terminate(self) -> None:
        self.tree.signal(signal.SIGTERM)

    def kill(self) -> None:
        self.tree.signal(signal.SIGKILL)

    def alive(self) -> bool:
        if self._tree is None:  # never signalled: the leader is the job
            return self.poll() is None
        self.poll()  # reap the leader, so it does not linger as a zombie
        return self.tree.alive()


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


def stop_orphan(pid: int | None, started: float | None, grace: float) -> None:
    """Stop a job orch no longer holds a handle to (left running by a killed orchestrator),
    if the process at ``pid`` is still that job."""
    proc = find_process(pid, started)
    if proc is None:
        return
    tree = ProcessTree(proc)
    tree.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while tree.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    tree.signal(signal.SIGKILL)
