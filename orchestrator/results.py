"""Read what a training job writes: results.json and events.jsonl (requirements.md, 3.1-3.2).

Both files come from another process, possibly from another branch's code, so nothing here
trusts them: every field is checked and a file that fails is reported by name, never fatal.

- ``load_results`` validates one results.json into a frozen ``Results`` record.
- ``parse_event`` turns one JSON line into a typed event; kinds it does not know give None.
- ``EventTail`` follows a growing events.jsonl incrementally: it remembers the byte offset,
  keeps a torn last line for the next read and skips corrupt lines, so a monitor polling it
  a few times a second only reads what is new.
- ``JobProgress`` folds events into the numbers a monitor or report shows.

JSON has no NaN or infinity; writers store them as null, which reads back here as NaN.
"""

from __future__ import annotations

import json
import math
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS_SCHEMA = 1
REFERENCE_ROWS = ("black", "copy_last", "oracle")
METRIC_NAMES = ("mse", "mae", "psnr", "ssim")


class InvalidFile(ValueError):
    """A results or events file that cannot be used; the message names the file and the field."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


# --------------------------------------------------------------------------- field checks


class _FieldError(ValueError):
    pass


def _get(obj: dict[str, Any], key: str, where: str) -> Any:
    if key not in obj:
        raise _FieldError(f"missing field '{where}{key}'")
    return obj[key]


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _FieldError(f"'{where}' should be an object, got {type(value).__name__}")
    return value


def _num(value: Any, where: str) -> float:
    if value is None:  # a non-finite number, written as null
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _FieldError(f"'{where}' should be a number, got {value!r:.40}")
    return float(value)


def _opt_num(value: Any, where: str) -> float | None:
    return None if value is None else _num(value, where)


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _FieldError(f"'{where}' should be an integer, got {value!r:.40}")
    return value


def _opt_int(value: Any, where: str) -> int | None:
    return None if value is None else _int(value, where)


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _FieldError(f"'{where}' should be a string, got {value!r:.40}")
    return value


def _opt_str(value: Any, where: str) -> str | None:
    return None if value is None else _str(value, where)


def _num_list(value: Any, where: str) -> tuple[float, ...]:
    if not isinstance(value, list):
        raise _FieldError(f"'{where}' should be a list of numbers")
    return tuple(_num(item, f"{where}[{i}]") for i, item in enumerate(value))


# --------------------------------------------------------------------------- results.json


@dataclass(frozen=True)
class Metrics:
    """One row of ``final``: the model's or a reference's scores on the held-out clips."""

    mse: float
    mae: float
    psnr: float
    ssim: float
    mse_per_pixel: float
    per_frame: dict[str, tuple[float, ...]]  # metric name -> one value per future frame


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    train_loss: float
    eval: dict[str, float]
    seconds: float


@dataclass(frozen=True)
class Environment:
    python: str
    torch: str
    device: str
    cuda: str | None
    platform: str
    threads: int | None


@dataclass(frozen=True)
class Timings:
    wall_s: float
    train_s: float
    samples_per_s: float
    peak_memory_mb: float | None


@dataclass(frozen=True)
class Results:
    """A validated results.json. ``path`` is where it was read from."""

    path: Path
    variant: str
    preset: str
    seed: int
    status: str
    config: dict[str, Any]
    environment: Environment
    trainable: int
    frozen: int
    history: tuple[EpochStats, ...]
    final: dict[str, Metrics]  # "model", "black", "copy_last", "oracle"
    timings: Timings
    artifacts: dict[str, str]

    def artifact(self, name: str) -> Path | None:
        """Absolute path of an artifact (relative paths are relative to the job's output dir)."""
        relative = self.artifacts.get(name)
        return None if not relative else self.path.parent / relative


def _metrics(raw: Any, where: str) -> Metrics:
    row = _obj(raw, where)
    per_frame_raw = _obj(_get(row, "per_frame", f"{where}."), f"{where}.per_frame")
    per_frame = {
        str(name): _num_list(values, f"{where}.per_frame.{name}")
        for name, values in per_frame_raw.items()
    }
    return Metrics(
        **{m: _num(_get(row, m, f"{where}."), f"{where}.{m}") for m in METRIC_NAMES},
        mse_per_pixel=_num(_get(row, "mse_per_pixel", f"{where}."), f"{where}.mse_per_pixel"),
        per_frame=per_frame,
    )


def _results(path: Path, raw: Any) -> Results:
    doc = _obj(raw, "results")
    schema = _get(doc, "schema", "")
    if schema != RESULTS_SCHEMA:
        raise _FieldError(f"schema {schema!r} is not supported (this orch reads {RESULTS_SCHEMA})")
    env = _obj(_get(doc, "environment", ""), "environment")
    params = _obj(_get(doc, "parameters", ""), "parameters")
    timings = _obj(_get(doc, "timings", ""), "timings")
    final_raw = _obj(_get(doc, "final", ""), "final")
    final = {row: _metrics(_get(final_raw, row, "final."), f"final.{row}")
             for row in ("model", *REFERENCE_ROWS)}
    history_raw = _get(doc, "history", "")
    if not isinstance(history_raw, list):
        raise _FieldError("'history' should be a list")
    history = []
    for i, item in enumerate(history_raw):
        entry, where = _obj(item, f"history[{i}]"), f"history[{i}]."
        eval_raw = _obj(_get(entry, "eval", where), f"{where}eval")
        history.append(EpochStats(
            epoch=_int(_get(entry, "epoch", where), f"{where}epoch"),
            train_loss=_num(_get(entry, "train_loss", where), f"{where}train_loss"),
            eval={str(k): _num(v, f"{where}eval.{k}") for k, v in eval_raw.items()
                  if not isinstance(v, (list, dict))},
            seconds=_num(_get(entry, "seconds", where), f"{where}seconds"),
        ))
    artifacts_raw = _obj(_get(doc, "artifacts", ""), "artifacts")
    return Results(
        path=path,
        variant=_str(_get(doc, "variant", ""), "variant"),
        preset=_str(_get(doc, "preset", ""), "preset"),
        seed=_int(_get(doc, "seed", ""), "seed"),
        status=_str(_get(doc, "status", ""), "status"),
        config=_obj(_get(doc, "config", ""), "config"),
        environment=Environment(
            python=_str(_get(env, "python", "environment."), "environment.python"),
            torch=_str(_get(env, "torch", "environment."), "environment.torch"),
            device=_str(_get(env, "device", "environment."), "environment.device"),
            cuda=_opt_str(_get(env, "cuda", "environment."), "environment.cuda"),
            platform=_str(_get(env, "platform", "environment."), "environment.platform"),
            threads=_opt_int(_get(env, "threads", "environment."), "environment.threads"),
        ),
        trainable=_int(_get(params, "trainable", "parameters."), "parameters.trainable"),
        frozen=_int(_get(params, "frozen", "parameters."), "parameters.frozen"),
        history=tuple(history),
        final=final,
        timings=Timings(
            wall_s=_num(_get(timings, "wall_s", "timings."), "timings.wall_s"),
            train_s=_num(_get(timings, "train_s", "timings."), "timings.train_s"),
            samples_per_s=_num(_get(timings, "samples_per_s", "timings."),
                               "timings.samples_per_s"),
            peak_memory_mb=_opt_num(_get(timings, "peak_memory_mb", "timings."),
                                    "timings.peak_memory_mb"),
        ),
        artifacts={str(k): str(v) for k, v in artifacts_raw.items() if v is not None},
    )


def load_results(path: Path) -> Results:
    """Read and validate one results.json; raises ``InvalidFile`` naming the file and field."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InvalidFile(path, f"cannot read ({error.strerror or error})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidFile(path, f"not valid JSON ({error})") from None
    try:
        return _results(path, raw)
    except _FieldError as error:
        raise InvalidFile(path, str(error)) from None


# --------------------------------------------------------------------------- events.jsonl


@dataclass(frozen=True)
class StartEvent:
    time: float
    variant: str | None
    preset: str | None
    seed: int | None
    device: str | None
    epochs: int | None
    steps_per_epoch: int | None
    total_steps: int | None
    resumed_from_epoch: int
    pid: int | None


@dataclass(frozen=True)
class ProgressEvent:
    time: float
    epoch: int
    step: int
    total_steps: int | None
    loss: float
    samples_per_s: float | None
    eta_s: float | None
    lr: float | None
    memory_mb: float | None


@dataclass(frozen=True)
class EvalEvent:
    time: float
    epoch: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class CheckpointEvent:
    time: float
    epoch: int
    path: str


@dataclass(frozen=True)
class EndEvent:
    time: float
    status: str
    wall_s: float | None
    results: str | None


@dataclass(frozen=True)
class ErrorEvent:
    time: float
    message: str
    kind: str
    traceback: str


Event = StartEvent | ProgressEvent | EvalEvent | CheckpointEvent | EndEvent | ErrorEvent


def parse_event(raw: Any) -> Event | None:
    """One decoded JSON line as a typed event; None for a kind this reader does not know.

    Raises ValueError when a known kind lacks a field it cannot do without.
    """
    doc = _obj(raw, "event")
    kind = _str(_get(doc, "event", ""), "event")
    t = _num(_get(doc, "time", ""), "time")
    g = doc.get
    if kind == "start":
        return StartEvent(
            time=t, variant=_opt_str(g("variant"), "variant"),
            preset=_opt_str(g("preset"), "preset"),
            seed=_opt_int(g("seed"), "seed"), device=_opt_str(g("device"), "device"),
            epochs=_opt_int(g("epochs"), "epochs"),
            steps_per_epoch=_opt_int(g("steps_per_epoch"), "steps_per_epoch"),
            total_steps=_opt_int(g("total_steps"), "total_steps"),
            resumed_from_epoch=_opt_int(g("resumed_from_epoch"), "resumed_from_epoch") or 0,
            pid=_opt_int(g("pid"), "pid"),
        )
    if kind == "progress":
        return ProgressEvent(
            time=t, epoch=_int(_get(doc, "epoch", ""), "epoch"),
            step=_int(_get(doc, "step", ""), "step"),
            total_steps=_opt_int(g("total_steps"), "total_steps"),
            loss=_num(_get(doc, "loss", ""), "loss"),
            samples_per_s=_opt_num(g("samples_per_s"), "samples_per_s"),
            eta_s=_opt_num(g("eta_s"), "eta_s"), lr=_opt_num(g("lr"), "lr"),
            memory_mb=_opt_num(g("memory_mb"), "memory_mb"),
        )
    if kind == "eval":
        metrics = _obj(_get(doc, "metrics", ""), "metrics")
        return EvalEvent(time=t, epoch=_int(_get(doc, "epoch", ""), "epoch"),
                         metrics={str(k): _num(v, f"metrics.{k}") for k, v in metrics.items()
                                  if not isinstance(v, (list, dict))})
    if kind == "checkpoint":
        return CheckpointEvent(time=t, epoch=_int(_get(doc, "epoch", ""), "epoch"),
                               path=_str(_get(doc, "path", ""), "path"))
    if kind == "end":
        return EndEvent(time=t, status=_opt_str(g("status"), "status") or "success",
                        wall_s=_opt_num(g("wall_s"), "wall_s"),
                        results=_opt_str(g("results"), "results"))
    if kind == "error":
        return ErrorEvent(time=t, message=_opt_str(g("message"), "message") or "",
                          kind=_opt_str(g("kind"), "kind") or "exception",
                          traceback=_opt_str(g("traceback"), "traceback") or "")
    return None


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
            if final:  # catch up completely; a monitor takes the backlog one chunk per poll
                continue
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
                event = parse_event(json.loads(line))
            except (ValueError, UnicodeDecodeError):  # JSONDecodeError and _FieldError too
                self.bad_lines += 1
                continue
            if event is not None:
                events.append(event)
        return events


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
    return progress
