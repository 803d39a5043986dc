"""Where a job stands, folded from its events: what the monitor and the report show."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.formats import (
    EndEvent,
    ErrorEvent,
    EvalEvent,
    Event,
    EventTail,
    ProgressEvent,
    StartEvent,
    warn_corrupt,
)


@dataclass
class JobProgress:
    """Where a job stands, folded from its events. ``step_losses`` keeps every step's loss
    only when ``keep_steps`` (the report); a monitor keeps just the recent ``losses``."""

    keep_steps: bool = False
    start: StartEvent | None = None
    epoch: int | None = None
    epochs: int | None = None
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    samples_per_s: float | None = None
    eta_s: float | None = None
    memory_mb: float | None = None
    lr: float | None = None
    updated: float | None = None  # time of the last progress event (the ETA is as of then)
    losses: deque[float] = field(default_factory=lambda: deque(maxlen=40))
    step_losses: list[tuple[int, float]] = field(default_factory=list)
    last_eval: EvalEvent | None = None
    end: EndEvent | None = None
    error: ErrorEvent | None = None
    bad_lines: int = 0

    def apply(self, event: Event) -> None:
        if isinstance(event, StartEvent):
            self.start = event
            self.epochs = event.epochs
            self.total_steps = event.total_steps
            self.end = self.error = None  # a resumed run starts over
        elif isinstance(event, ProgressEvent):
            self.epoch, self.step, self.loss = event.epoch, event.step, event.loss
            self.total_steps = event.total_steps or self.total_steps
            self.samples_per_s, self.eta_s = event.samples_per_s, event.eta_s
            self.memory_mb = event.memory_mb if event.memory_mb is not None else self.memory_mb
            self.lr, self.updated = event.lr, event.time
            self.losses.append(event.loss)
            if self.keep_steps:
                self.step_losses.append((event.step, event.loss))
        elif isinstance(event, EvalEvent):
            self.last_eval = event
            self.epoch = max(self.epoch or 0, event.epoch)
        elif isinstance(event, EndEvent):
            self.end = event
        elif isinstance(event, ErrorEvent):
            self.error = event

    def apply_all(self, events: list[Event]) -> bool:
        for event in events:
            self.apply(event)
        return bool(events)

    def eta_at(self, now: float) -> float | None:
        """The job's own ETA, counted down by the time passed since it was reported."""
        if self.eta_s is None or self.updated is None or math.isnan(self.eta_s):
            return None
        return max(0.0, self.eta_s - max(0.0, now - self.updated))


def read_progress(path: Path, *, keep_steps: bool = True) -> JobProgress:
    """Fold a whole events.jsonl at once (the report's view of a finished job)."""
    tail = EventTail(path)
    progress = JobProgress(keep_steps=keep_steps)
    progress.apply_all(tail.read(final=True))
    progress.bad_lines = tail.bad_lines
    if tail.bad_lines:
        warn_corrupt(path, f"{tail.bad_lines} unreadable line(s)", "using the other lines")
    return progress
