"""orch clean: removes worktrees, never uncommitted work without --force."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from orchestrator.cli.main import app
from tests.orch_fixtures import *  # noqa: F403
from tests.orch_fixtures import git, worktree

runner = CliRunner()


def test_clean_refuses_dirty_worktree_without_force(spawned: Path) -> None:
    dirty = worktree(spawned, "alpha")
    (dirty / "branches/alpha/model.py").write_text("VALUE = 7\n")
    result = runner.invoke(app, ["clean", "--json"])
    assert result.exit_code == 3
    rows = {r["variant"]: r for r in json.loads(result.stdout)}
    assert rows["alpha"]["action"] == "refused"
    assert rows["beta"]["action"] == "removed"
    assert "orch clean --force alpha" in result.stderr
    assert (dirty / "branches/alpha/model.py").read_text() == "VALUE = 7\n"
    assert not worktree(spawned, "beta").exists()
    # Branches stay by default.
    assert "exp-beta" in git(spawned, "branch", "--list", "exp-beta")

    forced = runner.invoke(app, ["clean", "--force", "alpha"])
    assert forced.exit_code == 0, forced.output
    assert not dirty.exists()
    assert "exp-alpha" in git(spawned, "branch", "--list", "exp-alpha")


def test_clean_untracked_file_counts_as_uncommitted(spawned: Path) -> None:
    (worktree(spawned, "beta") / "scratch.py").write_text("x = 1\n")
    result = runner.invoke(app, ["clean", "beta"])
    assert result.exit_code == 3
    assert (worktree(spawned, "beta") / "scratch.py").exists()


def test_clean_delete_branches(spawned: Path) -> None:
    result = runner.invoke(app, ["clean", "--delete-branches", "--json"])
    assert result.exit_code == 0, result.output
    assert all(r["branch_deleted"] for r in json.loads(result.stdout))
    assert git(spawned, "branch", "--list", "exp-*").strip() == ""
    assert git(spawned, "worktree", "list").count("\n") == 1
