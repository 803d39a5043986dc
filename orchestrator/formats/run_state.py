"""state.json: the run state orch writes while it drives a run, and every reader reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, TypeAdapter, ValidationError

from orchestrator.formats.files import CorruptFile, error_text

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
    micro_batch: int | None = None  # clips per forward/backward; None: the preset's batch
    memory_mb: float = 0.0  # GPU memory planned for it (0: none)
    memory_basis: str = ""  # plan (a rehearsal measured it) or config (an estimate)
    retries: list[str] = field(default_factory=list)  # one line per out-of-memory retry
    # Command-line overrides of the variant's config (`-s KEY=VALUE`): dotted key -> the text
    # typed; the job's results record the typed values.
    overrides: dict[str, str] = field(default_factory=dict)

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
class PhaseJob:
    """A job of the phases before training, each a row of the live view and a name for
    `orch logs`: a shared job (``shared:<name>``) or a variant's gate (``gate:<variant>``)."""

    __pydantic_config__: ClassVar[ConfigDict] = _STATE_CONFIG

    name: str
    phase: Literal["shared", "gate"]
    stage: Stage = Stage.queued  # shared: queued, training, done...; gate: gating, done...
    cached: bool = False  # a shared job whose artifact an earlier run made: nothing ran
    # Where its events.jsonl is: a shared job's work dir while it runs, its published
    # artifact folder after; a gate's folder (junit.xml, no events).
    output_dir: str = ""
    log_path: str = ""
    pid: int | None = None
    started: float | None = None
    finished: float | None = None
    exit_code: int | None = None
    reason: str = ""  # one line: why it failed or was cancelled
    gate: GateResult | None = None  # a gate's outcome, once it ended

    def __post_init__(self) -> None:
        self.stage = Stage(self.stage)

    @property
    def events_path(self) -> Path:
        return Path(self.output_dir) / "events.jsonl"


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
    phase_jobs: list[PhaseJob] = field(default_factory=list)  # shared jobs, then gates
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
        raise CorruptFile(path, error_text(error)) from None
