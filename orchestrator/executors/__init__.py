"""Executors: where a job's processes run. `open_executor` gives the one a command asks for.

- ``base``: the interface (`JobSpec`, `JobHandle`, `Executor`) and `stop`.
- ``local``: subprocesses on this machine.
- ``ray`` and ``ray_worker``: tasks on a Ray cluster (ray is imported only there).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from orchestrator.errors import UsageError
from orchestrator.executors.base import Executor, JobHandle, JobSpec, stop
from orchestrator.executors.local import LocalExecutor, stop_orphan

if TYPE_CHECKING:
    from orchestrator.config import Config

__all__ = ["BACKENDS", "Executor", "JobHandle", "JobSpec", "LocalExecutor", "open_executor",
           "stop", "stop_orphan"]

BACKENDS = ("local", "ray")


@contextmanager
def open_executor(cfg: Config, name: str, address: str | None = None) -> Iterator[Executor]:
    """The executor `--backend NAME [--address ADDR]` asks for, released when the run ends."""
    if name not in BACKENDS:
        raise UsageError(f"unknown --backend {name!r}; use {' or '.join(BACKENDS)}")
    if address and name != "ray":
        raise UsageError("--address is for --backend ray")
    if name == "local":
        yield LocalExecutor()
        return
    from orchestrator.executors.ray import connect

    executor = connect(cfg.ray, address, cfg.grace_seconds)
    try:
        yield executor
    finally:
        executor.close()
