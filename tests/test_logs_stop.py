"""orch logs and orch stop against real runs: orch is a subprocess driving the fake study,
and the commands act on it from outside, as from another terminal."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from typer.testing import CliRunner

from orchestrator.cli.main import app
from orchestrator.state import pid_alive
from tests.orch_fixtures import *  # noqa: F403
from tests.orch_fixtures import orch_cmd, orch_env_vars, read_state, wait_for

runner = CliRunner()

# A shared job that writes its log over a couple of seconds, as a pretraining does.
TALKING_SHARED_JOB = '''\
import argparse, pathlib, time
p = argparse.ArgumentParser()
p.add_argument("--preset"); p.add_argument("--output")
a = p.parse_args()
for i in range(8):
    print(f"pretrain step {i}", flush=True)
    time.sleep(float(__import__("os").environ.get("TALK_SLEEP", "0.3")))
(pathlib.Path(a.output) / "tokenizer.ckpt").write_text("tokenizer")
print("pretrain done", flush=True)
'''


def start_train(repo: Path, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(orch_cmd("train", "--plain"), cwd=repo, env=orch_env_vars(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err.decode()


def row(home: Path, name: str) -> dict | None:
    state = read_state(home)
    rows = state.get("phase_jobs", []) if state else []
    return next((r for r in rows if r["name"] == name), None)  # type: ignore[union-attr]


def training_with_checkpoints(home: Path) -> bool:
    state = read_state(home)
    return state is not None and all(
        j["stage"] == "training" and j["pid"]
        and (Path(j["output_dir"]) / "checkpoints" / "last.pt").exists()
        for j in state["jobs"]  # type: ignore[union-attr]
    )


def test_stop_ends_a_training_run_as_ctrl_c_would(spawned: Path, orch_env: Path) -> None:
    proc = start_train(spawned, FAKE_SLEEP="60")
    try:
        wait_for(lambda: training_with_checkpoints(orch_env))
        state = read_state(orch_env)
        assert state is not None
        pids = [j["pid"] for j in state["jobs"]]  # type: ignore[union-attr]
        result = runner.invoke(app, ["stop", "--json"])
        code, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert result.exit_code == 0, result.output
    stopped = json.loads(result.stdout)
    assert stopped["outcome"] == "stopped" and stopped["status"] == "cancelled"
    assert stopped["pid"] == proc.pid and stopped["cancelled"] == ["alpha", "beta"]
    # The orchestrator did what Ctrl-C does: exit 130, jobs stopped, outputs kept.
    assert code == 130, err
    assert "orch train --resume" in err
    assert not any(pid_alive(pid) for pid in pids)
    after = read_state(orch_env)
    assert after is not None and after["status"] == "cancelled"
    for job in after["jobs"]:  # type: ignore[union-attr]
        assert job["stage"] == "cancelled" and job["reason"] == "stopped (`orch stop` or SIGTERM)"
        assert (Path(job["output_dir"]) / "checkpoints" / "last.pt").exists()
        assert Path(job["worktree"]).is_dir()

    again = runner.invoke(app, ["stop"])
    assert again.exit_code == 7
    assert f"run {after['run_id']} is not running (cancelled); nothing to stop" in again.stderr


def test_stop_during_the_shared_jobs_cancels_them_too(spawned: Path, orch_env: Path) -> None:
    (spawned / "shared/tok.py").write_text(TALKING_SHARED_JOB)
    proc = start_train(spawned, TALK_SLEEP="10")
    try:
        wait_for(lambda: (row(orch_env, "shared:tokenizer") or {}).get("pid") is not None)
        shared_pid = row(orch_env, "shared:tokenizer")["pid"]  # type: ignore[index]
        result = runner.invoke(app, ["stop"])
        code, _ = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert result.exit_code == 0, result.output
    assert "stopped run" in result.stdout and "cancelled: shared:tokenizer, alpha, beta" in (
        result.stdout.replace("\n", " "))
    assert code == 130 and not pid_alive(shared_pid)
    tokenizer = row(orch_env, "shared:tokenizer")
    assert tokenizer is not None and tokenizer["stage"] == "cancelled"
    assert tokenizer["reason"] == "stopped (`orch stop` or SIGTERM)"


def test_stop_with_nothing_running(spawned: Path) -> None:
    none_yet = runner.invoke(app, ["stop"])
    assert none_yet.exit_code == 2 and "no run found" in none_yet.stderr
    assert runner.invoke(app, ["test-all", "--plain"]).exit_code == 0
    result = runner.invoke(app, ["stop", "--json"])
    assert result.exit_code == 7
    assert json.loads(result.stdout)["outcome"] == "not_running"


def test_logs_follow_a_growing_log_until_its_job_ends(spawned: Path, orch_env: Path) -> None:
    (spawned / "shared/tok.py").write_text(TALKING_SHARED_JOB)
    proc = start_train(spawned, FAKE_SLEEP="60")
    try:
        wait_for(lambda: (row(orch_env, "shared:tokenizer") or {}).get("stage") == "training")
        log = Path(row(orch_env, "shared:tokenizer")["log_path"])  # type: ignore[index]
        assert "pretrain done" not in (log.read_text() if log.exists() else "")
        started = time.monotonic()
        followed = runner.invoke(app, ["logs", "-f", "tokenizer"])  # its bare name
        took = time.monotonic() - started
        # It returned because the job ended, not the run: the trainings are still going.
        assert proc.poll() is None
        assert row(orch_env, "shared:tokenizer")["stage"] == "done"  # type: ignore[index]

        stop = runner.invoke(app, ["stop"])
        assert stop.exit_code == 0, stop.output
    finally:
        finish(proc)
    assert followed.exit_code == 0, followed.output
    assert took > 1.0  # it waited for the lines to come
    lines = followed.stdout.splitlines()
    assert lines[0].startswith("$ ") and "shared.tok" in lines[0]
    assert lines[1:] == [f"pretrain step {i}" for i in range(8)] + ["pretrain done"]
    assert followed.stdout == log.read_text()


def test_logs_prints_any_jobs_log(spawned: Path, orch_env: Path) -> None:
    assert runner.invoke(app, ["train", "--plain"]).exit_code == 0
    state = read_state(orch_env)
    assert state is not None
    alpha_log = Path(state["jobs"][0]["log_path"])  # type: ignore[index]

    whole = runner.invoke(app, ["logs", "alpha"])
    assert whole.exit_code == 0 and whole.stdout == alpha_log.read_text()
    last = runner.invoke(app, ["logs", "alpha", "-n", "1"])
    assert last.stdout == alpha_log.read_text().splitlines(keepends=True)[-1]
    assert "training alpha on cpu" in last.stdout
    gate = runner.invoke(app, ["logs", "gate:beta"])
    assert gate.exit_code == 0 and "2 passed" in gate.stdout
    ended = runner.invoke(app, ["logs", "-f", "beta", "--run", str(state["run_id"])])
    assert ended.exit_code == 0 and "training beta" in ended.stdout  # it ended: no waiting
    as_json = json.loads(runner.invoke(app, ["logs", "shared:tokenizer", "--json"]).stdout)
    assert as_json["job"] == "shared:tokenizer" and as_json["finished"] is True
    assert as_json["text"].startswith("$ ") and as_json["path"].endswith(".log")

    unknown = runner.invoke(app, ["logs", "gamma"])
    assert unknown.exit_code == 2
    message = " ".join(unknown.stderr.split())
    assert "no job 'gamma'" in message
    assert "shared:tokenizer, gate:alpha, gate:beta, alpha, beta" in message
    assert runner.invoke(app, ["logs", "alpha", "-f", "--json"]).exit_code == 2
