"""The environment of every process orch starts: import path, devices, thread share.

A job runs with its worktree first on the import path, sees only the devices it was given,
and uses the threads it was granted. A CPU job may be granted more threads while it runs
(cores freed by jobs that ended): orch rewrites a small file the job's training loop follows
(``shared.runtime.ThreadBudget``).
"""

from __future__ import annotations

import os
from pathlib import Path

from orchestrator.formats import write_text_atomic

PRESET_ENV = "ORCH_PRESET"
THREADS_FILE_ENV = "ORCH_THREADS_FILE"
THREADS_FILE = "orch-threads"  # in a training job's output dir: its current thread grant


def job_env(worktree: Path, cuda_visible: str, threads: int, preset: str,
            threads_file: Path | None = None) -> dict[str, str]:
    """The variables orch sets for a process in ``worktree`` (merged over its own)."""
    path = os.environ.get("PYTHONPATH", "")
    env = {
        "PYTHONPATH": str(worktree) + (os.pathsep + path if path else ""),
        "CUDA_VISIBLE_DEVICES": cuda_visible,
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",  # the GPU indices nvidia-smi shows
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "PYTHONUNBUFFERED": "1",
        PRESET_ENV: preset,
    }
    if threads_file is not None:
        threads_file.unlink(missing_ok=True)  # a grant left by an earlier attempt
        env[THREADS_FILE_ENV] = str(threads_file)
    return env


def grant_threads(threads_file: Path, threads: int) -> None:
    """Let the job that follows ``threads_file`` use ``threads`` threads from now on."""
    write_text_atomic(threads_file, f"{threads}\n")
