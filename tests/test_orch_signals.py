"""Signals and crashes, with orch as a real subprocess: Ctrl-C stops every job's process
group and records it cancelled; after kill -9 of orch, status tells the truth and
train --resume finishes the unfinished jobs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from typer.testing import CliRunner

from orchestrator.cli.main import app
from orchestrator.state import pid_alive
from tests.orch_fixtures import *  # noqa: F403
from tests.orch_fixtures import orch_cmd, orch_env_vars, read_state, wait_for

runner = CliRunner()


def start_train(repo: Path, sleep: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        orch_cmd("train", "--plain"),
        cwd=repo,
        env=orch_env_vars(FAKE_SLEEP=sleep),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def training_pids(home: Path) -> list[int]:
    state = read_state(home)
    if state is None:
        return []
    jobs = state["jobs"]
    assert isinstance(jobs, list)
    if all(j["stage"] == "training" and j["pid"] for j in jobs):
        return [j["pid"] for j in jobs]
    return []


def events_started(home: Path) -> bool:
    state = read_state(home)
    return state is not None and all(
        (Path(j["output_dir"]) / "checkpoints" / "last.pt").exists() for j in state["jobs"]
    )


def test_ctrl_c_stops_every_job_group_and_records_cancelled(spawned: Path, orch_env: Path) -> None:
    proc = start_train(spawned, sleep="60")
    try:
        wait_for(lambda: len(training_pids(orch_env)) == 2 and events_started(orch_env))
        pids = training_pids(orch_env)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err.decode()
    assert b"orch train --resume" in err
    # Each job's whole process group is gone (orch waited for it before exiting).
    for pid in pids:
        assert not pid_alive(pid)
    state = read_state(orch_env)
    assert state is not None and state["status"] == "cancelled"
    for job in state["jobs"]:
        assert job["stage"] == "cancelled"
        assert (Path(job["output_dir"]) / "checkpoints" / "last.pt").exists()
        assert Path(job["worktree"]).is_dir()


def test_kill_9_then_status_tells_the_truth_and_resume_finishes(
    spawned: Path, orch_env: Path
) -> None:
    proc = start_train(spawned, sleep="60")
    try:
        wait_for(lambda: len(training_pids(orch_env)) == 2 and events_started(orch_env))
        pids = training_pids(orch_env)
        proc.kill()
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    try:
        # The file still says "training"; status computes the truth from the dead pid.
        assert read_state(orch_env)["status"] == "running"  # type: ignore[index]
        status = runner.invoke(app, ["status", "--json"])
        assert status.exit_code == 0
        run = json.loads(status.stdout)
        assert run["status"] == "died"
        assert all("orchestrator died" in j["reason"] for j in run["jobs"])
        assert "died" in runner.invoke(app, ["status"]).stderr

        resumed = runner.invoke(app, ["train", "--resume", "--json", "--plain"])
        assert resumed.exit_code == 0, resumed.output
        after = json.loads(resumed.stdout)
        assert after["run_id"] == run["run_id"]
        assert [j["stage"] for j in after["jobs"]] == ["done", "done"]
        for job in after["jobs"]:
            results = json.loads((Path(job["output_dir"]) / "results.json").read_text())
            assert results["resumed"] is True
        for pid in pids:  # the orphans of the killed orch were stopped, not left to race
            assert not pid_alive(pid)
    finally:
        for pid in pids:
            if pid_alive(pid):
                os.killpg(pid, signal.SIGKILL)


def test_resume_with_nothing_to_resume_is_a_usage_error(spawned: Path) -> None:
    result = runner.invoke(app, ["train", "--resume", "--plain"])
    assert result.exit_code == 2
    assert "nothing to resume" in result.stderr
