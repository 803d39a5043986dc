"""The app itself: help text, exit codes, thin commands, startup cost."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from orchestrator import launcher
from orchestrator.cli.main import app
from orchestrator.state import RunState
from tests.orch_fixtures import *  # noqa: F403
from tests.orch_fixtures import orch_env_vars

runner = CliRunner()


def test_help_lists_commands_and_exit_codes() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("spawn", "test-all", "train", "run", "status", "clean"):
        assert command in result.stdout
    assert "4 a gate failed" in result.stdout and "6 another run holds the lock" in result.stdout


def test_version_is_the_installed_packages() -> None:
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"orch {version('orch')}"


def test_help_does_not_import_torch(git_repo: Path) -> None:
    code = ("import sys, runpy; sys.argv=['orch','--help']\n"
            "try:\n runpy.run_module('orchestrator.cli.main', run_name='__main__')\n"
            "except SystemExit: pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], env=orch_env_vars(),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_train_command_passes_options_to_the_launcher(
    spawned: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def fake_train(cfg: Any, home: Path, variants: list[Any], **kwargs: Any) -> RunState:
        seen.update(kwargs, variants=[v.name for v in variants], home=home)
        return RunState("r", kwargs["preset"], 0.0, status="done")

    monkeypatch.setattr(launcher, "train", fake_train)
    result = runner.invoke(app, ["train", "beta", "--preset", "micro", "--seeds", "3"])
    assert result.exit_code == 0, result.output
    assert seen["variants"] == ["beta"]
    assert (seen["preset"], seen["seeds"], seen["resume"]) == ("micro", 3, False)
    bad = runner.invoke(app, ["train", "--preset", "huge"])
    assert bad.exit_code == 2 and "unknown preset 'huge'" in bad.stderr
    both = runner.invoke(app, ["train", "--resume", "--seeds", "2"])
    assert both.exit_code == 2 and "--resume" in both.stderr
