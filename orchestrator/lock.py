"""One orch run at a time per state directory, and signals that stop it cleanly."""

from __future__ import annotations

import fcntl
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TextIO

from orchestrator.errors import Locked


@contextmanager
def run_lock(home: Path) -> Iterator[None]:
    """Hold `<state>/lock` for the life of a run; a second orch run is refused. The kernel
    drops the lock when the process dies, so a killed orchestrator never leaves it stuck."""
    home.mkdir(parents=True, exist_ok=True)
    f: TextIO = open(home / "lock", "a+")  # noqa: SIM115 - held open for the whole run
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            raise Locked(
                f"another orch run (pid {holder}) is running here; wait for it, watch it with "
                "`orch monitor`, or stop it (Ctrl-C in its terminal)"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield
    finally:
        f.close()


class Stopped(KeyboardInterrupt):
    """SIGTERM (`orch stop`, or a kill): handled as Ctrl-C, recorded as what it was."""


def interrupt_reason(error: BaseException) -> str:
    """What a run's unfinished jobs record when ``error`` (a KeyboardInterrupt) ended it."""
    return ("stopped (`orch stop` or SIGTERM)" if isinstance(error, Stopped)
            else "interrupted (Ctrl-C)")


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, and Ctrl-C works even if the parent ignored SIGINT."""

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise Stopped

    old_term = signal.signal(signal.SIGTERM, on_term)
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
