"""A variant's gate: its pytest directory, run in its worktree on CPU with the micro preset.

The gate's verdict is pytest's exit code; the per-test outcomes come from the junit XML it
writes, so `status` and the report can show which test failed and why.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from pathlib import Path

from orchestrator import phase_jobs
from orchestrator.config import Config, Variant
from orchestrator.executors import JobSpec
from orchestrator.formats import GateResult, JobState, Outcome, RunState, Stage, TestOutcome
from orchestrator.jobenv import job_env

JUNIT_OUTCOMES: dict[str, Outcome] = {"failure": "failed", "error": "error", "skipped": "skipped"}


def gate_spec(cfg: Config, v: Variant, worktree: Path, out_dir: Path, threads: int) -> JobSpec:
    junit = out_dir / "junit.xml"
    argv = [
        cfg.interpreter(),
        "-m",
        "pytest",
        v.gate_path,
        "-q",
        "-p",
        "no:cacheprovider",  # leave no .pytest_cache behind in the worktree
        f"--junitxml={junit}",
    ]
    return JobSpec(
        name=f"gate:{v.name}",
        argv=argv,
        cwd=worktree,
        log_path=out_dir / "gate.log",
        env=job_env(worktree, "", threads, cfg.gate_preset),
        threads=threads,
    )


def parse_junit(path: Path) -> list[TestOutcome]:
    """Per-test outcomes from a pytest junit XML file."""
    root = ET.parse(path).getroot()
    tests = []
    for case in root.iter("testcase"):
        classname = case.get("classname", "")
        name = case.get("name", "")
        module = classname.rsplit(".", 1)[-1] if classname else ""
        full = f"{module}::{name}" if module else name
        outcome: Outcome = "passed"
        message = ""
        for child in case:
            tag = child.tag
            if tag in ("failure", "error", "skipped"):
                outcome = JUNIT_OUTCOMES[tag]
                message = _one_line(child.get("message") or child.text or "")
                break
        tests.append(
            TestOutcome(
                name=full,
                outcome=outcome,
                seconds=float(case.get("time") or 0.0),
                message=message,
            )
        )
    return tests


def gate_result(junit: Path, exit_code: int, seconds: float, log_path: Path) -> GateResult:
    """The verdict: passed only if pytest exited 0 and ran at least one test."""
    tests: list[TestOutcome] = []
    if junit.exists():
        try:
            tests = parse_junit(junit)
        except ET.ParseError:
            tests = []
    passed = exit_code == 0 and any(t.outcome == "passed" for t in tests)
    if not passed and not any(t.outcome in ("failed", "error") for t in tests):
        why = "no tests collected" if exit_code == 5 else _last_line(log_path)
        why = why or f"exit {exit_code}"
        tests.append(TestOutcome("gate", "error", seconds, why))
    return GateResult(passed=passed, tests=tests, seconds=seconds, junit_path=str(junit))


def record_result(run: RunState, spec: JobSpec, code: int, result: GateResult,
                  jobs: list[JobState], final_stage: Stage) -> None:
    """What a gate's end changes in the run: its row, and each of its variant's ``jobs``
    goes on to ``final_stage`` if it passed, else ends as gate_failed with the reason."""
    reason = failure_reason(result)
    phase_jobs.gate_ended(run, spec.name, code, result, reason)
    for j in jobs:
        j.gate, j.pid = result, None
        if result.passed:
            j.stage = final_stage
            j.finished = time.time() if final_stage.finished else None
        else:
            j.stage, j.finished, j.reason = Stage.gate_failed, time.time(), reason


def failure_reason(result: GateResult) -> str:
    bad = [t for t in result.tests if t.outcome in ("failed", "error")]
    if not bad:
        return ""
    first = bad[0]
    more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
    return f"gate: {first.name} {first.outcome}: {first.message}"[:200] + more


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[0][:300] if lines else ""


def _last_line(path: Path) -> str:
    if not path.exists():
        return ""
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""
