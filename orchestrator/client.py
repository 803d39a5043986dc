"""What a train script uses to write orch's files: events, results, and the thread grant.

Importable without torch (the standard library and orch's own formats only), so any study's
train script, in any framework, can speak the contract (requirements.md, section 3)::

    from orchestrator.client import Run

    with Run.open(args.output) as run:  # DIR/events.jsonl; an exception ends in an error event
        run.start(variant="wide", preset=args.preset, seed=args.seed, epochs=3,
                  steps_per_epoch=len(batches))
        for epoch in range(1, 4):
            for step, batch in enumerate(batches, 1):
                ...
                run.progress(epoch=epoch, step=step, loss=loss)
                if (threads := run.thread_grant()) is not None:
                    set_threads(threads)  # e.g. torch.set_num_threads
            run.eval(epoch=epoch, metrics={"accuracy": accuracy})
            run.checkpoint(epoch=epoch, path="checkpoints/last.pt")
        run.write_results(results)  # validated, then written atomically
        run.end()

The study's own training loop (``shared.training``) writes through it too: one writer of
the format.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path
from types import TracebackType
from typing import Any

from orchestrator.formats.files import jsonable, write_json_atomic

EVENTS_FILE = "events.jsonl"
RESULTS_FILE = "results.json"
# The file orch names to a job (jobenv.THREADS_FILE_ENV) and rewrites with a larger thread
# count when other jobs end and free their cores.
THREADS_FILE_ENV = "ORCH_THREADS_FILE"


class Run:
    """One job's output folder: appends events to ``events.jsonl`` as they happen (each line
    flushed, so orch's monitor sees it at once) and writes ``results.json`` atomically."""

    def __init__(self, output_dir: str | os.PathLike[str]) -> None:
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.events_path = self.output_dir / EVENTS_FILE
        self.started = time.time()
        self._grant = ThreadGrant()
        self._ended = False

    @classmethod
    def open(cls, output_dir: str | os.PathLike[str]) -> Run:
        return cls(output_dir)

    # -- events ---------------------------------------------------------------------------

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one event; returns the record written. NaN and infinity are not JSON:
        written as null, so every reader can parse every line."""
        record = {"event": event, "time": time.time(), **jsonable(fields)}
        line = json.dumps(record, allow_nan=False)
        with open(self.events_path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
        if event in ("end", "error"):
            self._ended = True
        return record

    def start(self, **fields: Any) -> dict[str, Any]:
        """The run begins: ``variant``, ``preset``, ``seed``, ``epochs``, ``steps_per_epoch``,
        ``total_steps``... (all optional); the process id is added."""
        return self.emit("start", pid=os.getpid(), **fields)

    def progress(self, *, epoch: int, step: int, loss: float, **fields: Any) -> dict[str, Any]:
        """Training progress: ``total_steps``, ``samples_per_s``, ``eta_s``, ``lr``,
        ``memory_mb`` optional."""
        return self.emit("progress", epoch=epoch, step=step, loss=loss, **fields)

    def eval(self, *, epoch: int, metrics: dict[str, Any], **fields: Any) -> dict[str, Any]:
        """The model's held-out metrics after ``epoch`` (the study's declared names)."""
        return self.emit("eval", epoch=epoch, metrics=metrics, **fields)

    def checkpoint(self, *, epoch: int, path: str) -> dict[str, Any]:
        """A checkpoint written after ``epoch``; ``path`` relative to the output folder."""
        return self.emit("checkpoint", epoch=epoch, path=path)

    def end(self, **fields: Any) -> dict[str, Any]:
        """The run succeeded; ``results`` names results.json unless told otherwise."""
        fields.setdefault("results", RESULTS_FILE)
        fields.setdefault("wall_s", time.time() - self.started)
        return self.emit("end", status="success", **fields)

    def error(self, message: str, *, kind: str = "exception", traceback_text: str = ""
              ) -> dict[str, Any]:
        """The run failed: one line of ``message``; ``kind`` ``oom``, ``interrupted``,
        ``checkpoint``, ``data``, ``config`` or ``exception``."""
        text = message.strip().splitlines()[0] if message.strip() else "error"
        return self.emit("error", message=text, kind=kind, traceback=traceback_text[-4000:])

    # -- results --------------------------------------------------------------------------

    def write_results(self, record: dict[str, Any]) -> Path:
        """Validate ``record`` against the results format, then write it atomically: a
        reader sees the old file or the new one, never half of one. A record the format
        refuses raises ``ValueError`` naming the field, before anything is written."""
        from orchestrator.formats.results import check_results

        check_results(jsonable(record))
        return write_json_atomic(self.output_dir / RESULTS_FILE, record)

    # -- threads --------------------------------------------------------------------------

    def thread_grant(self) -> int | None:
        """A new thread count orch granted this job since the last call, else None."""
        return self._grant.poll()

    # -- as a context ---------------------------------------------------------------------

    def __enter__(self) -> Run:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        """An exception that leaves the block without an end or error event gets one."""
        if error is None or self._ended or isinstance(error, SystemExit):
            return
        text = "".join(traceback.format_exception(kind, error, tb))
        self.error(str(error) or type(error).__name__, kind=error_kind(error),
                   traceback_text="" if isinstance(error, KeyboardInterrupt) else text)


def error_kind(error: BaseException) -> str:
    """``oom``, ``interrupted`` or ``exception``, from the exception alone."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    if isinstance(error, (RuntimeError, MemoryError)) and (
            isinstance(error, MemoryError) or "out of memory" in str(error).lower()):
        return "oom"
    return "exception"


class ThreadGrant:
    """Follows the thread count orch grants a running job: when other jobs end, orch writes
    a larger count to the file named by ``ORCH_THREADS_FILE``. ``poll()`` is cheap (a stat
    at most every ``check_every_s``). Without the variable (a run started by hand) it never
    grants anything."""

    def __init__(self, check_every_s: float = 2.0) -> None:
        self.path = os.environ.get(THREADS_FILE_ENV) or None
        self.check_every_s = check_every_s
        self.granted: int | None = None
        self._next_check = 0.0
        self._seen: tuple[int, int] | None = None  # (inode, mtime) of the file last read

    def poll(self) -> int | None:
        """The newly granted thread count, if the grant changed since the last poll."""
        if self.path is None:
            return None
        now = time.monotonic()
        if now < self._next_check:
            return None
        self._next_check = now + self.check_every_s
        try:
            stat = os.stat(self.path)
            stamp = (stat.st_ino, stat.st_mtime_ns)  # orch replaces the file: a new inode
            if stamp == self._seen:
                return None
            self._seen = stamp
            with open(self.path, encoding="utf-8") as grant:
                threads = int(grant.read().strip())
        except (OSError, ValueError):  # not written yet, or caught mid-replace: next time
            return None
        if threads < 1 or threads == self.granted:
            return None
        self.granted = threads
        return threads
