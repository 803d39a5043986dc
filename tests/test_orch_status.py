"""orch status reads the state on disk and tells the truth about dead processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from orchestrator.cli.main import app
from orchestrator.state import (
    GateResult,
    JobState,
    RunState,
    Stage,
    TestOutcome,
    load_run,
    refresh_liveness,
    run_dir,
    save_run,
)
from tests.orch_fixtures import *  # noqa: F403

runner = CliRunner()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_status_without_runs(git_repo: Path) -> None:
    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout) is None
    assert "no runs yet" in runner.invoke(app, ["status"]).stderr


def test_state_round_trip_and_liveness_computed_without_writing(
    git_repo: Path, orch_env: Path
) -> None:
    gate = GateResult(True, [TestOutcome("test_gate::test_ok", "passed", 0.1, "")], 0.5, "j.xml")
    run = RunState("r1", "tiny", time.time(), orchestrator_pid=dead_pid(), jobs=[
        JobState("alpha", stage=Stage.training, pid=dead_pid(), gate=gate,
                 output_dir=str(run_dir(orch_env, "r1") / "alpha")),
        JobState("beta", stage=Stage.done),
        JobState("gamma", stage=Stage.queued),
    ])
    save_run(orch_env, run)
    loaded = load_run(orch_env)
    assert loaded == run
    truth = refresh_liveness(loaded)
    assert truth.status == "died"
    assert [(j.stage, j.reason) for j in truth.jobs] == [
        (Stage.failed, "orchestrator died"), (Stage.done, ""),
        (Stage.failed, "orchestrator died"),
    ]
    assert load_run(orch_env) == run  # the reader wrote nothing

    result = runner.invoke(app, ["status", "--json"])
    data = json.loads(result.stdout)
    assert data["status"] == "died"
    assert data["jobs"][0]["gate"]["tests"][0]["name"] == "test_gate::test_ok"
    text = runner.invoke(app, ["status"])
    assert "orchestrator died" in text.stdout and "1/1 passed" in text.stdout


def test_status_lists_the_shared_jobs_before_the_trainings(git_repo: Path,
                                                           orch_env: Path) -> None:
    from orchestrator.state import PhaseJob, RunStatus

    now = time.time()
    run = RunState("r2", "tiny", now, status=RunStatus.done, finished=now, phase_jobs=[
        PhaseJob("shared:tokenizer", "shared", Stage.done, cached=True),
        PhaseJob("shared:i3d", "shared", Stage.done, started=now - 98, finished=now),
        PhaseJob("gate:alpha", "gate", Stage.done),
    ], jobs=[JobState("alpha", name="alpha", stage=Stage.done)])
    save_run(orch_env, run)
    result = runner.invoke(app, ["status"], env={"COLUMNS": "150"})
    assert result.exit_code == 0, result.output
    rows = [line.replace("│", " ").split() for line in result.stdout.splitlines()]
    lines = [r for r in rows if r and r[0] in ("shared:tokenizer", "shared:i3d", "alpha")]
    assert [line[:2] for line in lines] == [
        ["shared:tokenizer", "cached"], ["shared:i3d", "done"], ["alpha", "done"]]
    assert "1m38s" in lines[1]
