"""Every file format orch reads or writes, as typed records, with one reader and one writer each.

- ``results.json`` (requirements.md 3.2): ``Results``, read by ``load_results``.
- ``events.jsonl`` (requirements.md 3.1): the ``Event`` kinds, one per line, followed by
  ``EventTail`` (incremental, tolerant) or read whole by ``read_events``.
- ``state.json`` (the run state orch writes): ``RunState`` with its ``JobState`` records,
  read by ``parse_run`` and written by ``dump_run``.

pydantic validates all three (strict types: a string is never read as a number), so an
error names the file and the field. JSON has no NaN or infinity: writers store them as null,
and a required number that is null reads back as NaN.

The policy for a torn or corrupt file is the same everywhere: one line through the
``orchestrator`` logger (``warn_corrupt``) that names the file, why it cannot be used and
what is shown instead (the last good state, the lines that could be read, or the job without
results); never a traceback. The CLI prints such lines once each, as warnings.

``write_text_atomic`` is the one writer of whole files: a temp file in the same folder,
fsync, then rename, so a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    model_validator,
)

RESULTS_SCHEMA = 1
REFERENCE_ROWS = ("black", "copy_last", "oracle")
METRIC_NAMES = ("mse", "mae", "psnr", "ssim")

log = logging.getLogger("orchestrator")


# ---------------------------------------------------------------------------- writing


def jsonable(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    return value


def write_text_atomic(path: str | os.PathLike[str], text: str | bytes) -> Path:
    """Write through a temp file in the same folder, fsync, then rename over ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8") if isinstance(text, str) else text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def write_json_atomic(path: str | os.PathLike[str], payload: Any) -> Path:
    return write_text_atomic(path, json.dumps(jsonable(payload), indent=2, allow_nan=False) + "\n")


# ---------------------------------------------------------------------------- bad files


class CorruptFile(ValueError):
    """A file that cannot be used; the message names the file and the field."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def warn_corrupt(path: Path, reason: str, instead: str) -> str:
    """The one-line warning for a file that cannot be used, logged and returned."""
    line = f"{path}: {reason}; {instead}"
    log.warning(line)
    return line


@contextmanager
def collect_warnings() -> Iterator[list[str]]:
    """The warning lines logged inside the block, in order (they still reach the CLI)."""
    lines: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = _Collect(logging.WARNING)
    log.addHandler(handler)
    try:
        yield lines
    finally:
        log.removeHandler(handler)


def _error_text(error: ValidationError) -> str:
    """pydantic's first error as one line: "missing field 'final.oracle.ssim'"."""
    first = error.errors(include_url=False)[0]
    where = ""
    for part in first["loc"]:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    if first["type"] == "missing":
        return f"missing field '{where}'"
    if first["type"] == "json_invalid":
        return f"not valid JSON ({first['msg']})"
    return f"'{where}': {first['msg'][0].lower()}{first['msg'][1:]}" if where else first["msg"]


def _null_is_nan(value: Any) -> Any:
    return math.nan if value is None else value


def _scalars_only(value: Any) -> Any:
    # Eval metrics may carry per-frame lists beside the numbers; only the numbers are read.
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if not isinstance(v, (list, dict))}
    return value


Num = Annotated[float, BeforeValidator(_null_is_nan)]
Scalars = Annotated[dict[str, Num], BeforeValidator(_scalars_only)]


class _Record(BaseModel):
    """Read-only and strict: a number must be a number, a string a string."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")


# ---------------------------------------------------------------------------- results.json


class Metrics(_Record):
    """One row of ``final``: the model's or a reference's scores on the held-out clips."""

    mse: Num
    mae: Num
    psnr: Num
    ssim: Num
    mse_per_pixel: Num
    per_frame: dict[str, tuple[Num, ...]]  # metric name -> one value per future frame

    def scores(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in METRIC_NAMES}


class EpochStats(_Record):
    epoch: int
    train_loss: Num
    eval: Scalars
    seconds: Num


class Environment(_Record):
    python: str
    torch: str
    device: str
    cuda: str | None
    platform: str
    threads: int | None


class Parameters(_Record):
    trainable: int
    frozen: int


class Timings(_Record):
    wall_s: Num
    train_s: Num
    samples_per_s: Num
    peak_memory_mb: float | None


class Results(_Record):
    """A validated results.json. ``path`` is where it was read from."""

    schema_version: int = Field(alias="schema")
    variant: str
    preset: str
    seed: int
    status: str
    config: dict[str, Any]
    environment: Environment
    parameters: Parameters
    history: tuple[EpochStats, ...]
    final: dict[str, Metrics]  # "model", "black", "copy_last", "oracle"
    timings: Timings
    artifacts: dict[str, str | None]
    _path: Path = PrivateAttr(default=Path("results.json"))

    @model_validator(mode="after")
    def _every_row(self) -> Results:
        for row in ("model", *REFERENCE_ROWS):
            if row not in self.final:
                raise ValueError(f"missing field 'final.{row}'")
        return self

    @property
    def path(self) -> Path:
        return self._path

    @property
    def trainable(self) -> int:
        return self.parameters.trainable

    @property
    def frozen(self) -> int:
        return self.parameters.frozen

    def artifact(self, name: str) -> Path | None:
        """Absolute path of an artifact (relative paths are relative to the job's output dir)."""
        relative = self.artifacts.get(name)
        return None if not relative else self._path.parent / relative


def load_results(path: Path) -> Results:
    """Read and validate one results.json; raises ``CorruptFile`` naming the file and field."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CorruptFile(path, f"cannot read ({error.strerror or error})") from None
    try:
        schema = json.loads(data).get("schema")
    except (ValueError, UnicodeDecodeError) as error:
        raise CorruptFile(path, f"not valid JSON ({error})") from None
    except AttributeError:
        raise CorruptFile(path, "should be a JSON object") from None
    if schema != RESULTS_SCHEMA:
        raise CorruptFile(path, f"schema {schema!r} is not supported "
                                f"(this orch reads {RESULTS_SCHEMA})")
    try:
        results = Results.model_validate_json(data)
    except ValidationError as error:
        raise CorruptFile(path, _error_text(error)) from None
    results._path = path
    return results


# ---------------------------------------------------------------------------- events.jsonl


def _zero_if_null(value: Any) -> Any:
    return 0 if value is None else value


def _default_if_null(default: str) -> BeforeValidator:
    return BeforeValidator(lambda value: default if value is None else value)


class StartEvent(_Record):
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


class ProgressEvent(_Record):
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


class EvalEvent(_Record):
    event: Literal["eval"] = "eval"
    time: Num
    epoch: int
    metrics: Scalars


class CheckpointEvent(_Record):
    event: Literal["checkpoint"] = "checkpoint"
    time: Num
    epoch: int
    path: str


class EndEvent(_Record):
    event: Literal["end"] = "end"
    time: Num
    status: Annotated[str, _default_if_null("success")] = "success"
    wall_s: float | None = None
    results: str | None = None


class ErrorEvent(_Record):
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
        raise ValueError(_error_text(error)) from None


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


# ---------------------------------------------------------------------------- state.json

Outcome = Literal["passed", "failed", "error", "skipped"]
_STATE_CONFIG: ConfigDict = ConfigDict(strict=True)


class Stage(str, Enum):
    """Where a job stands. The order is the order a healthy job goes through."""

    pending = "pending"
    spawned = "spawned"
    gating = "gating"
    gate_failed = "gate_failed"
    queued = "queued"
    training = "training"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"

    def __str__(self) -> str:
        return self.value

    @property
    def finished(self) -> bool:
        return self in FINISHED_STAGES

    @property
    def active(self) -> bool:
        """A process of ours is (or should be) running for this job."""
        return self in (Stage.gating, Stage.training)


FINISHED_STAGES = frozenset({Stage.gate_failed, Stage.done, Stage.failed, Stage.cancelled})


class RunStatus(str, Enum):
    running = "running"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"
    died = "died"  # its orchestrator is gone (found by readers, never written)

    def __str__(self) -> str:
        return self.value


@dataclass
class TestOutcome:
    """One test of a gate, from pytest's junit XML."""

    __test__: ClassVar[bool] = False  # not a pytest test class
    __pydantic_config__: ClassVar[ConfigDict] = _STATE_CONFIG

    name: str
    outcome: Outcome
    seconds: float = 0.0
    message: str = ""


@dataclass
class GateResult:
    __pydantic_config__: ClassVar[ConfigDict] = _STATE_CONFIG

    passed: bool
    tests: list[TestOutcome] = field(default_factory=list)
    seconds: float = 0.0
    junit_path: str = ""

    @property
    def counts(self) -> dict[str, int]:
        out = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
        for t in self.tests:
            out[t.outcome] += 1
        return out


@dataclass
class JobState:
    """One training job: a variant at one seed on one preset."""

    __pydantic_config__: ClassVar[ConfigDict] = _STATE_CONFIG

    variant: str
    seed: int = 0
    preset: str = "tiny"
    name: str = ""  # "<variant>" or "<variant>-s<seed>"; also the output dir's name
    branch: str = ""
    worktree: str = ""
    commit: str = ""
    dirty: bool = False
    diff_path: str = ""
    stage: Stage = Stage.pending
    device: str = ""  # "cpu" or "cuda:0,1"
    gpus: list[int] = field(default_factory=list)
    threads: int = 0
    pid: int | None = None
    started: float | None = None
    finished: float | None = None
    exit_code: int | None = None
    reason: str = ""  # one line: why it failed or was cancelled
    log_tail: list[str] = field(default_factory=list)  # last log lines of a failed job
    log_path: str = ""
    output_dir: str = ""
    gate: GateResult | None = None

    def __post_init__(self) -> None:
        self.stage = Stage(self.stage)
        if not self.name:
            self.name = self.variant

    @property
    def events_path(self) -> Path:
        return Path(self.output_dir) / "events.jsonl"

    @property
    def results_path(self) -> Path:
        return Path(self.output_dir) / "results.json"


@dataclass
class RunState:
    __pydantic_config__: ClassVar[ConfigDict] = _STATE_CONFIG

    run_id: str
    preset: str
    started: float
    finished: float | None = None
    orchestrator_pid: int | None = None
    orchestrator_started: float | None = None  # when that pid took the run over (resume)
    status: RunStatus = RunStatus.running
    command: str = "train"  # the orch command that made this run: test-all, train or run
    artifacts: dict[str, str] = field(default_factory=dict)  # shared job name -> artifact path
    shared_running: list[str] = field(default_factory=list)  # shared jobs in flight, by name
    jobs: list[JobState] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.status = RunStatus(self.status)

    def job(self, name: str) -> JobState:
        for j in self.jobs:
            if j.name == name:
                return j
        raise KeyError(name)


_RUN: TypeAdapter[RunState] = TypeAdapter(RunState)


def dump_run(run: RunState) -> bytes:
    return _RUN.dump_json(run, indent=2) + b"\n"


def run_to_dict(run: RunState) -> dict[str, Any]:
    """JSON-ready, as `status --json` prints it."""
    return _RUN.dump_python(run, mode="json")  # type: ignore[no-any-return]


def parse_run(data: str | bytes, path: Path) -> RunState:
    """A state.json's text as a RunState; raises ``CorruptFile`` naming the field."""
    try:
        return _RUN.validate_json(data)
    except ValidationError as error:
        raise CorruptFile(path, _error_text(error)) from None
