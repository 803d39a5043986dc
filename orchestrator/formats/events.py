"""events.jsonl (requirements.md 3.1): one event a line, appended while a job runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, TypeAdapter, ValidationError

from orchestrator.formats.files import Num, Record, Scalars, error_text, warn_corrupt


def _zero_if_null(value: Any) -> Any:
    return 0 if value is None else value


def _default_if_null(default: str) -> BeforeValidator:
    return BeforeValidator(lambda value: default if value is None else value)


class StartEvent(Record):
    event: Literal["start"] = "start"
    time: Num
    variant: str | None = None
    preset: str | None = None
    seed: int | None = None
    device: str | None = None
    epochs: int | None = None
    steps_per_epoch: int | None = None
    total_steps: int | None = None
    resumed_from_epoch: Annotated[int, BeforeValidator(_zero_if_null)] = 0
    pid: int | None = None
    batch_size: int | None = None
    micro_batch: int | None = None
    accumulation: int | None = None


class ProgressEvent(Record):
    event: Literal["progress"] = "progress"
    time: Num
    epoch: int
    step: int
    total_steps: int | None = None
    loss: Num
    samples_per_s: float | None = None
    eta_s: float | None = None
    lr: float | None = None
    memory_mb: float | None = None


class EvalEvent(Record):
    event: Literal["eval"] = "eval"
    time: Num
    epoch: int
    metrics: Scalars


class CheckpointEvent(Record):
    event: Literal["checkpoint"] = "checkpoint"
    time: Num
    epoch: int
    path: str


class EndEvent(Record):
    event: Literal["end"] = "end"
    time: Num
    status: Annotated[str, _default_if_null("success")] = "success"
    wall_s: float | None = None
    results: str | None = None


class ErrorEvent(Record):
    event: Literal["error"] = "error"
    time: Num
    message: Annotated[str, _default_if_null("")] = ""
    kind: Annotated[str, _default_if_null("exception")] = "exception"
    traceback: Annotated[str, _default_if_null("")] = ""


Event = StartEvent | ProgressEvent | EvalEvent | CheckpointEvent | EndEvent | ErrorEvent
_EVENT: TypeAdapter[Event] = TypeAdapter(Annotated[Event, Field(discriminator="event")])


def parse_event(line: str | bytes) -> Event | None:
    """One JSON line as a typed event; None for a kind this reader does not know.

    Raises ``ValueError`` for a line that is not JSON, or a known kind that lacks a field.
    """
    try:
        return _EVENT.validate_json(line)
    except ValidationError as error:
        if error.errors(include_url=False)[0]["type"] == "union_tag_invalid":
            return None
        raise ValueError(error_text(error, tagged=True)) from None


class EventTail:
    """Follow one events.jsonl: each ``read()`` returns only the events appended since the last.

    A line without its newline yet (the writer is mid-append) waits for the next read; lines
    that are not JSON or not a valid event are counted in ``bad_lines`` and skipped. A file
    that shrinks or is replaced (a fresh run in the same dir) is read again from the start.
    """

    max_chunk = 1 << 20  # bytes per read; a huge backlog is caught up over several polls

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.bad_lines = 0
        self._partial = b""
        self._inode: int | None = None

    def read(self, *, final: bool = False) -> list[Event]:
        """New complete events. ``final=True`` also takes a last line lacking its newline."""
        try:
            stat = os.stat(self.path)
        except OSError:
            return []
        if stat.st_size < self.offset or (self._inode is not None and stat.st_ino != self._inode):
            self.offset, self._partial = 0, b""
        self._inode = stat.st_ino
        events: list[Event] = []
        while stat.st_size > self.offset:
            try:
                with open(self.path, "rb") as handle:
                    handle.seek(self.offset)
                    chunk = handle.read(self.max_chunk)
            except OSError:
                break
            if not chunk:
                break
            self.offset += len(chunk)
            lines = (self._partial + chunk).split(b"\n")
            self._partial = lines.pop()
            events.extend(self._parse(lines))
            if not final:  # a monitor takes a backlog one chunk per poll
                break
        if final and self._partial.strip():
            events.extend(self._parse([self._partial]))
            self._partial = b""
        return events

    def _parse(self, lines: list[bytes]) -> list[Event]:
        events = []
        for line in lines:
            if not line.strip():
                continue
            try:
                event = parse_event(line)
            except ValueError:
                self.bad_lines += 1
                continue
            if event is not None:
                events.append(event)
        return events


def read_events(path: Path, *, warn: bool = True) -> list[Event]:
    """Every readable event of a whole events.jsonl (a finished job's); [] if there is none.
    Unreadable lines are skipped, and said once in a warning when ``warn``."""
    tail = EventTail(path)
    events = tail.read(final=True)
    if warn and tail.bad_lines:
        warn_corrupt(path, f"{tail.bad_lines} unreadable line(s)", "using the other lines")
    return events
