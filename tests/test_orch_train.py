"""orch test-all and orch train end to end on the fake study: gates, shared jobs, parallel
jobs, failure isolation, branch isolation, the lock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli.main import app
from orchestrator.lock import run_lock
from tests.orch_fixtures import *  # noqa: F403
from tests.orch_fixtures import commit_all, git, worktree

runner = CliRunner()


def train_json(*args: str) -> tuple[int, dict]:
    result = runner.invoke(app, ["train", "--json", "--plain", *args])
    data = json.loads(result.stdout) if result.stdout.strip() else {}
    return result.exit_code, data


def results_of(job: dict) -> dict:
    return json.loads((Path(job["output_dir"]) / "results.json").read_text())


def test_test_all_keeps_per_test_outcomes_and_fails_on_a_failing_gate(
    spawned: Path, orch_env: Path
) -> None:
    beta = worktree(spawned, "beta")
    (beta / "branches/beta/model.py").write_text("VALUE = -1\n")
    commit_all(beta, "break beta")

    result = runner.invoke(app, ["test-all", "--json", "--plain"])
    assert result.exit_code == 4, result.output
    assert "gate failed for beta" in result.stderr
    jobs = {j["variant"]: j for j in json.loads(result.stdout)["jobs"]}
    assert jobs["alpha"]["stage"] == "done"
    assert jobs["beta"]["stage"] == "gate_failed"
    outcomes = {t["name"]: t["outcome"] for t in jobs["beta"]["gate"]["tests"]}
    assert outcomes == {"test_gate::test_value_is_int": "passed",
                        "test_gate::test_value_positive": "failed"}
    assert "test_value_positive" in jobs["beta"]["reason"]
    assert all(t["outcome"] == "passed" for t in jobs["alpha"]["gate"]["tests"])

    status = runner.invoke(app, ["status"])
    assert status.exit_code == 0
    assert "test_value_positive" in status.stdout and "failed" in status.stdout


def test_train_runs_jobs_in_parallel_in_their_worktrees(
    spawned: Path, orch_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_SLEEP", "1.0")
    # A commit on alpha's branch must take effect in alpha's run, not the main checkout's.
    alpha = worktree(spawned, "alpha")
    (alpha / "branches/alpha/model.py").write_text("VALUE = 42\n")
    commit_all(alpha, "alpha: new value")

    code, run = train_json()
    assert code == 0, run
    assert run["status"] == "done"
    jobs = {j["variant"]: j for j in run["jobs"]}
    assert {j["stage"] for j in jobs.values()} == {"done"}
    a, b = results_of(jobs["alpha"]), results_of(jobs["beta"])
    assert a["value"] == 42 and b["value"] == 1
    assert Path(a["model_file"]).resolve().is_relative_to(alpha.resolve())
    assert Path(a["cwd"]).resolve() == alpha.resolve()
    # Two CPU slots on a 2-core machine with cpu_threads 1: the jobs overlap in time.
    assert a["start"] < b["end"] and b["start"] < a["end"]
    for r, j in ((a, jobs["alpha"]), (b, jobs["beta"])):
        assert r["cuda_visible_devices"] == ""
        assert r["omp_num_threads"] == "1" and r["threads"] == 1
        assert j["device"] == "cpu" and j["threads"] == 1
        assert r["tokenizer"] and Path(r["tokenizer"]).read_text() == "tokenizer tiny"
    assert jobs["alpha"]["commit"] == git(alpha, "rev-parse", "HEAD").strip()
    assert not jobs["alpha"]["dirty"]
    # The shared tokenizer job ran once; a second run reuses its cached artifact.
    assert len((orch_env / "tokenizer-runs").read_text().split()) == 1
    code, again = train_json("alpha")
    assert code == 0
    assert len((orch_env / "tokenizer-runs").read_text().split()) == 1
    assert results_of(again["jobs"][0])["tokenizer"] == a["tokenizer"]


def test_failed_job_is_isolated_and_named(
    spawned: Path, orch_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_FAIL_ALPHA", "oom")
    monkeypatch.setenv("FAKE_FAIL_BETA", "exit")
    (worktree(spawned, "beta") / "scratch.txt").write_text("uncommitted")
    result = runner.invoke(app, ["train", "--json", "--plain", "--seeds", "2", "alpha", "beta"])
    assert result.exit_code == 5, result.output
    jobs = {j["name"]: j for j in json.loads(result.stdout)["jobs"]}
    assert set(jobs) == {"alpha-s0", "alpha-s1", "beta-s0", "beta-s1"}
    assert jobs["alpha-s0"]["stage"] == "failed"
    assert jobs["alpha-s0"]["reason"].startswith("CUDA out of memory")
    assert jobs["beta-s1"]["reason"] == "exit 1: ValueError: loss is nan"
    assert any("loss is nan" in line for line in jobs["beta-s1"]["log_tail"])
    assert jobs["beta-s0"]["dirty"] and "scratch.txt" in Path(
        jobs["beta-s0"]["diff_path"]).read_text()


def test_one_failure_does_not_stop_the_others(
    spawned: Path, orch_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_FAIL_ALPHA", "exit")
    code, run = train_json()
    assert code == 5
    jobs = {j["variant"]: j for j in run["jobs"]}
    assert jobs["alpha"]["stage"] == "failed" and jobs["alpha"]["exit_code"] == 1
    assert jobs["beta"]["stage"] == "done"
    assert results_of(jobs["beta"])["value"] == 1


def test_gate_failure_blocks_training_of_that_variant_only(
    spawned: Path, orch_env: Path
) -> None:
    beta = worktree(spawned, "beta")
    (beta / "branches/beta/model.py").write_text("VALUE = 0\n")
    commit_all(beta, "break beta")
    code, run = train_json()
    assert code == 4
    jobs = {j["variant"]: j for j in run["jobs"]}
    assert jobs["alpha"]["stage"] == "done"
    assert jobs["beta"]["stage"] == "gate_failed"
    assert not (Path(jobs["beta"]["output_dir"]) / "events.jsonl").exists()


def test_second_train_is_refused_while_one_holds_the_lock(
    spawned: Path, orch_env: Path
) -> None:
    with run_lock(orch_env):
        result = runner.invoke(app, ["train", "--plain"])
    assert result.exit_code == 6
    assert "another orch run" in result.stderr
    assert "Traceback" not in result.output


def test_train_without_worktree_says_spawn(git_repo: Path) -> None:
    result = runner.invoke(app, ["train", "--plain", "alpha"])
    assert result.exit_code == 3
    assert "orch spawn alpha" in result.stderr


def test_run_spawns_gates_trains_and_reports(git_repo: Path, orch_env: Path) -> None:
    result = runner.invoke(app, ["run", "--plain"])
    assert result.exit_code == 0, result.output
    assert worktree(git_repo, "alpha").is_dir() and worktree(git_repo, "beta").is_dir()
    state = json.loads(runner.invoke(app, ["status", "--json"]).stdout)
    assert state["command"] == "run" and state["status"] == "done"
    assert [j["stage"] for j in state["jobs"]] == ["done", "done"]
    report = orch_env / "runs" / state["run_id"] / "report.md"
    assert report.exists() and f"report: {report}" in result.stdout
    assert "alpha" in report.read_text() and "beta" in report.read_text()


def test_failed_shared_job_stops_the_run_with_its_reason(spawned: Path, orch_env: Path) -> None:
    (spawned / "shared/tok.py").write_text("raise SystemExit('no trajectory videos found')\n")
    result = runner.invoke(app, ["train", "--plain"])
    assert result.exit_code == 5
    assert "shared job tokenizer (tiny) failed: exit 1: no trajectory videos found" in (
        result.stderr)
    state = json.loads(runner.invoke(app, ["status", "--json"]).stdout)
    assert state["status"] == "failed"
    assert all(j["stage"] == "failed" and "tokenizer" in j["reason"] for j in state["jobs"])


SLOW_SHARED_JOB = '''\
import argparse, os, pathlib, time
p = argparse.ArgumentParser()
p.add_argument("--preset"); p.add_argument("--output"); p.add_argument("--name")
a = p.parse_args()
start = time.time()
time.sleep(0.8)
(pathlib.Path(a.output) / "tokenizer.ckpt").write_text(a.name)
grant = pathlib.Path(os.environ["ORCH_THREADS_FILE"])
granted = grant.read_text().strip() if grant.exists() else "-"
with open(pathlib.Path(os.environ["ORCH_HOME"]) / "shared-spans", "a") as f:
    f.write(f"{a.name} {start} {time.time()} {os.environ['OMP_NUM_THREADS']} {granted}\\n")
'''


def test_shared_jobs_take_one_core_each_and_queue_in_config_order(
    spawned: Path, orch_env: Path
) -> None:
    (spawned / "shared/slow.py").write_text(SLOW_SHARED_JOB)
    jobs = "".join(
        f"  - name: {name}\n    module: shared.slow\n    args: [--name, {name}]\n"
        f"    presets: [tiny]\n    depends_on: [shared/]\n    artifact: tokenizer.ckpt\n"
        f"    pass_as: --tokenizer\n"
        for name in ("longest", "second", "third")
    )
    config = spawned / "config.yaml"
    text = config.read_text()
    config.write_text(text[: text.index("shared_jobs:\n")] + "shared_jobs:\n" + jobs
                      + text[text.index("variants:\n"):])

    code, run = train_json()
    assert code == 0, run
    spans = {}
    for line in (orch_env / "shared-spans").read_text().splitlines():
        name, start, end, threads, granted = line.split()
        spans[name] = (float(start), float(end), threads, granted)
    # Three jobs on two cores: one thread each, never three at once, started in config order,
    # the third only once one of the first two has ended (no core left idle or shared).
    assert {s[2] for s in spans.values()} == {"1"}
    assert spans["longest"][0] < spans["third"][0] and spans["second"][0] < spans["third"][0]
    assert spans["third"][0] >= min(spans["longest"][1], spans["second"][1])
    assert spans["longest"][0] < spans["second"][1] and spans["second"][0] < spans["longest"][1]
    assert sorted(run["artifacts"]) == ["longest", "second", "third"]
    # Once the first two had ended, the third ran alone and was granted both cores.
    assert spans["third"][3] == "2" and spans["longest"][3] == spans["second"][3] == "-"


def test_last_running_job_is_granted_the_cores_the_others_freed(
    spawned: Path, orch_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = spawned / "config.yaml"
    config.write_text(config.read_text().replace("cpu_threads: 1", "cpu_threads: null"))
    monkeypatch.setenv("FAKE_SLEEP_ALPHA", "0.2")
    monkeypatch.setenv("FAKE_SLEEP_BETA", "2.5")
    code, run = train_json()
    assert code == 0, run
    jobs = {j["variant"]: j for j in run["jobs"]}
    alpha, beta = results_of(jobs["alpha"]), results_of(jobs["beta"])
    # Both started on one of the two cores; when alpha ended, beta was granted both.
    assert alpha["omp_num_threads"] == beta["omp_num_threads"] == "1"
    assert alpha["threads_granted"] is None
    assert beta["threads_granted"] == "2" and jobs["beta"]["threads"] == 2
