"""CLI habits users bring from other tools: shell completion, and `--json` on the commands
that print results (`run`, `monitor --once`)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from typer.testing import CliRunner

from orchestrator.cli.main import app
from tests.orch_fixtures import *  # noqa: F403
from tests.orch_fixtures import orch_cmd, orch_env_vars


def complete(words: str, cwd: Path | None = None) -> list[str]:
    """What bash completion offers for the last of ``words`` (through Click's protocol)."""
    parts = words.split(" ")
    result = CliRunner().invoke(app, [], prog_name="orch", env={
        "_ORCH_COMPLETE": "complete_bash", "COMP_WORDS": words,
        "COMP_CWORD": str(len(parts) - 1)})
    assert result.exit_code == 0, result.output
    return result.output.split()


def test_completion_script_and_completions() -> None:
    script = CliRunner().invoke(app, ["--show-completion", "bash"], prog_name="orch")
    assert script.exit_code == 0
    assert "_ORCH_COMPLETE=complete_bash" in script.output and "complete " in script.output
    assert "--install-completion" in CliRunner().invoke(app, ["--help"]).output
    assert complete("orch tr") == ["train"]
    assert "--dry-run" in complete("orch run --dr")
    assert set(complete("orch s")) >= {"spawn", "status"}


def test_variant_names_complete_from_the_config(git_repo: Path,
                                                monkeypatch: object) -> None:
    import os

    os.chdir(git_repo)
    assert complete("orch train al") == ["alpha"]
    assert complete("orch train ") == ["alpha", "beta"]


def test_run_and_monitor_print_json(git_repo: Path) -> None:
    done = subprocess.run(orch_cmd("run", "--preset", "micro", "--json"), cwd=git_repo,
                          env=orch_env_vars(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    run = json.loads(done.stdout)
    assert run["status"] == "done" and Path(run["report"]).name == "report.md"
    assert {j["name"] for j in run["jobs"]} == {"alpha", "beta"}

    watched = subprocess.run(orch_cmd("monitor", "--once", "--json"), cwd=git_repo,
                             env=orch_env_vars(), capture_output=True, text=True, timeout=60)
    assert watched.returncode == 0, watched.stderr
    snapshot = json.loads(watched.stdout)
    assert snapshot["run_id"] == run["run_id"]
    for job in snapshot["jobs"]:
        assert job["stage"] == "done"
        assert set(job["progress"]) >= {"epoch", "step", "loss", "eta_s", "eval"}

    no_once = subprocess.run(orch_cmd("monitor", "--json"), cwd=git_repo,
                             env=orch_env_vars(), capture_output=True, text=True, timeout=60)
    assert no_once.returncode == 2 and "add --once" in no_once.stderr
