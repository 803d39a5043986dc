"""Why a job ended badly, in one line (from its error event, else the end of its log), and
the error a command exits with when a run had failures."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

from orchestrator.errors import GateFailed, JobFailed, OrchError
from orchestrator.formats import ErrorEvent, JobState, RunState, Stage, read_events

TAIL_LINES = 20
OOM_RE = re.compile(r"CUDA out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED", re.I)


def log_tail(path: Path, n: int = TAIL_LINES) -> list[str]:
    if not path.exists():
        return []
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 16384))
        lines = f.read().decode(errors="replace").splitlines()
    return [ln.rstrip() for ln in lines if ln.strip()][-n:]


EXIT_OUT_OF_MEMORY = 5  # the train contract's exit code for a CUDA out-of-memory


def out_of_memory(job: JobState) -> bool:
    """Whether ``job`` ended by running out of GPU memory (its exit code or error event)."""
    if job.exit_code == EXIT_OUT_OF_MEMORY:
        return True
    return job.reason.startswith("CUDA out of memory")


def exit_reason(code: int, events_path: Path, tail: list[str]) -> str:
    """One line for why a job ended with `code`: its error event, else its log's last line.
    A CUDA out-of-memory is named as such whichever way it shows up."""
    errors = [e for e in read_events(events_path) if isinstance(e, ErrorEvent)]
    last = errors[-1] if errors else None
    if (last is not None and last.kind == "oom") or OOM_RE.search("\n".join(tail)):
        return "CUDA out of memory" + (f": {last.message}" if last and last.message else "")
    if code > 128 and code - 128 in signal.Signals._value2member_map_:
        return f"killed by {signal.Signals(code - 128).name}"
    if last is not None and last.message:
        return f"exit {code}: {last.message}"[:300]
    line = next((ln.strip() for ln in reversed(tail) if not ln.startswith("$ ")), "")
    return f"exit {code}: {line}"[:300] if line else f"exit {code}"


def outcome_error(run: RunState) -> OrchError | None:
    """The error a command exits with for this finished run, or None if it all went well."""
    failed = [j for j in run.jobs if j.stage == Stage.failed]
    gated = sorted({j.variant for j in run.jobs if j.stage == Stage.gate_failed})
    if failed:
        first = failed[0]
        return JobFailed(
            f"{len(failed)} job(s) failed, first {first.name}: {first.reason}; "
            f"log: {first.log_path}"
        )
    if gated:
        return GateFailed(
            f"gate failed for {', '.join(gated)}; see `orch status`, fix, then run again"
        )
    return None
