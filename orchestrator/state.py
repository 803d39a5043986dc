"""Run state: typed records of what orch did, stored as JSON under the state directory.

Layout of the state directory (``.orch/`` at the repo root, or ``$ORCH_HOME``)::

    latest                      id of the newest run (one line)
    lock                        held (flock) by the orchestrator that is running
    runs/<run_id>/state.json    RunState, rewritten atomically on every change
    runs/<run_id>/<job>/        a job's output dir: events.jsonl, results.json, checkpoints/,
                                train.log, diff.patch (outside the worktree, so it survives
                                `orch clean`)
    runs/<run_id>/gates/<variant>/  junit.xml and gate.log of a variant's gate
    shared/<hash>/              artifacts of shared jobs, cached by a hash of what made them

The launcher is the only writer. Readers (status, monitor, compare) call `load_run` and then
`refresh_liveness`, which reports dead processes as such without writing anything.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any, Literal

HOME_ENV = "ORCH_HOME"
STATE_FILE = "state.json"

Outcome = Literal["passed", "failed", "error", "skipped"]


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

    @property
    def finished(self) -> bool:
        return self in FINISHED_STAGES

    @property
    def active(self) -> bool:
        """A process of ours is (or should be) running for this job."""
        return self in (Stage.gating, Stage.training)


FINISHED_STAGES = frozenset({Stage.gate_failed, Stage.done, Stage.failed, Stage.cancelled})


@dataclass
class TestOutcome:
    """One test of a gate, from pytest's junit XML."""

    __test__ = False  # not a pytest test class

    name: str
    outcome: Outcome
    seconds: float = 0.0
    message: str = ""


@dataclass
class GateResult:
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
    pgid: int | None = None
    started: float | None = None
    finished: float | None = None
    exit_code: int | None = None
    reason: str = ""  # one line: why it failed or was cancelled
    log_tail: list[str] = field(default_factory=list)  # last log lines of a failed job
    log_path: str = ""
    output_dir: str = ""
    gate: GateResult | None = None

    def __post_init__(self) -> None:
        if not self.name:
            self.name = self.variant

    @property
    def events_path(self) -> Path:
        return Path(self.output_dir) / "events.jsonl"

    @property
    def results_path(self) -> Path:
        return Path(self.output_dir) / "results.json"


RunStatus = Literal["running", "done", "failed", "cancelled", "died"]


@dataclass
class RunState:
    run_id: str
    preset: str
    started: float
    finished: float | None = None
    orchestrator_pid: int | None = None
    status: str = "running"  # RunStatus
    command: str = "train"  # the orch command that made this run: test-all, train or run
    artifacts: dict[str, str] = field(default_factory=dict)  # shared job name -> artifact path
    shared_running: list[str] = field(default_factory=list)  # shared jobs in flight, by name
    jobs: list[JobState] = field(default_factory=list)

    def job(self, name: str) -> JobState:
        for j in self.jobs:
            if j.name == name:
                return j
        raise KeyError(name)


# ---------------------------------------------------------------------------- paths


def state_home(repo_root: Path | None = None) -> Path:
    """The state directory: $ORCH_HOME if set, else <repo root>/.orch."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return (repo_root or Path.cwd()).resolve() / ".orch"


def runs_dir(home: Path) -> Path:
    return home / "runs"


def run_dir(home: Path, run_id: str) -> Path:
    return runs_dir(home) / run_id


def state_path(home: Path, run_id: str) -> Path:
    return run_dir(home, run_id) / STATE_FILE


def new_run_id(now: float | None = None) -> str:
    """Sortable, readable and unique enough for one machine: 20250101-120000-<pid>."""
    t = time.localtime(now if now is not None else time.time())
    return time.strftime("%Y%m%d-%H%M%S", t) + f"-{os.getpid()}"


def job_name(variant: str, seed: int, n_seeds: int) -> str:
    return variant if n_seeds <= 1 else f"{variant}-s{seed}"


# ---------------------------------------------------------------------------- JSON I/O


def write_atomic(path: Path, text: str) -> None:
    """Write via a temp file in the same folder + os.replace: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_to_dict(run: RunState) -> dict[str, Any]:
    d = asdict(run)
    for j in d["jobs"]:
        j["stage"] = Stage(j["stage"]).value
    return d


def run_from_dict(d: dict[str, Any]) -> RunState:
    jobs = []
    for j in d.get("jobs", []):
        j = dict(j)
        gate = j.pop("gate", None)
        j["stage"] = Stage(j.get("stage", "pending"))
        known = {k: v for k, v in j.items() if k in JobState.__dataclass_fields__}
        job = JobState(**known)
        if gate is not None:
            tests = [TestOutcome(**t) for t in gate.get("tests", [])]
            job.gate = GateResult(
                passed=bool(gate["passed"]),
                tests=tests,
                seconds=float(gate.get("seconds", 0.0)),
                junit_path=str(gate.get("junit_path", "")),
            )
        jobs.append(job)
    fields = {k: v for k, v in d.items() if k in RunState.__dataclass_fields__ and k != "jobs"}
    return RunState(**fields, jobs=jobs)


def save_run(home: Path, run: RunState) -> Path:
    path = state_path(home, run.run_id)
    write_atomic(path, json.dumps(run_to_dict(run), indent=2) + "\n")
    write_atomic(home / "latest", run.run_id + "\n")
    return path


def load_run(home: Path, run_id: str | None = None) -> RunState | None:
    """The run `run_id`, or the latest run; None if there is none."""
    if run_id is None:
        run_id = latest_run_id(home)
        if run_id is None:
            return None
    path = state_path(home, run_id)
    if not path.exists():
        return None
    return run_from_dict(json.loads(path.read_text(encoding="utf-8")))


def latest_run_id(home: Path, commands: tuple[str, ...] | None = None) -> str | None:
    """The newest run, or the newest made by one of `commands` (e.g. ("train", "run"))."""
    latest = home / "latest"
    if commands is None and latest.exists():
        rid = latest.read_text(encoding="utf-8").strip()
        if rid and state_path(home, rid).exists():
            return rid
    for rid in reversed(list_runs(home)):
        if commands is None:
            return rid
        try:
            data = json.loads(state_path(home, rid).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if data.get("command") in commands:
            return rid
    return None


def list_runs(home: Path) -> list[str]:
    return sorted(p.name for p in runs_dir(home).glob("*") if (p / STATE_FILE).exists())


def read_events(path: Path) -> list[dict[str, Any]]:
    """The events of an events.jsonl file; a half-written last line is skipped."""
    if not path.exists():
        return []
    events = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(ev, dict):
            events.append(ev)
    return events


# ---------------------------------------------------------------------------- liveness


def pid_alive(pid: int | None) -> bool:
    """True if a process with this pid exists and is not a zombie."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        # The state letter follows the parenthesised command name, which may hold spaces.
        state = stat.read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def refresh_liveness(run: RunState) -> RunState:
    """The truth about a run read from disk, computed without writing anything.

    If the orchestrator that owns a running run is dead, the run is "died", and each job that
    was not finished is reported failed with reason "orchestrator died" (or done, if its
    results.json exists, or still training if its own process outlived the orchestrator).
    If the orchestrator is alive but a job's recorded process is gone, the job is failed.
    """
    if run.status != "running":
        return run
    orch_alive = pid_alive(run.orchestrator_pid)
    jobs = []
    for job in run.jobs:
        if job.stage.finished:
            jobs.append(job)
            continue
        job_alive = pid_alive(job.pid)
        if orch_alive:
            if job.stage.active and job.pid and not job_alive and not _just_exited(job):
                job = replace(job, stage=Stage.failed, reason="process died")
        elif job.stage.active and job_alive:
            job = replace(job, reason="orchestrator died; job still running")
        elif job.stage == Stage.training and job.results_path.exists():
            job = replace(job, stage=Stage.done, reason="finished after the orchestrator died")
        else:
            job = replace(job, stage=Stage.failed, reason="orchestrator died")
        jobs.append(job)
    return replace(run, jobs=jobs, status="running" if orch_alive else "died")


def _just_exited(job: JobState) -> bool:
    # The launcher reaps a job and records its exit within one poll; don't call that a death.
    return job.results_path.exists()
