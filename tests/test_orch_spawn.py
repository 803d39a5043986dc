"""orch spawn: branches and worktrees, idempotent, with a clear error for each conflict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from orchestrator.cli.main import app
from tests.orch_fixtures import *  # noqa: F403
from tests.orch_fixtures import git, worktree

runner = CliRunner()


def spawn_json(*names: str) -> list[dict[str, object]]:
    result = runner.invoke(app, ["spawn", "--json", *names])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_spawn_creates_branches_and_worktrees_then_is_idempotent(git_repo: Path) -> None:
    first = spawn_json()
    assert [(r["variant"], r["action"], r["branch_created"]) for r in first] == [
        ("alpha", "created", True),
        ("beta", "created", True),
    ]
    wt = worktree(git_repo, "alpha")
    assert git(wt, "rev-parse", "--abbrev-ref", "HEAD").strip() == "exp-alpha"
    assert git(wt, "rev-parse", "HEAD") == git(git_repo, "rev-parse", "main")
    # The worktree root is ignored by git: the main checkout stays clean.
    assert git(git_repo, "status", "--porcelain") == ""

    (wt / "notes.txt").write_text("work in progress")
    (wt / "branches/alpha/model.py").write_text("VALUE = 2\n")
    second = spawn_json()
    assert [r["action"] for r in second] == ["exists", "exists"]
    assert not any(r["branch_created"] for r in second)
    assert (wt / "notes.txt").read_text() == "work in progress"
    assert (wt / "branches/alpha/model.py").read_text() == "VALUE = 2\n"


def test_stale_worktree_is_pruned_and_recreated(git_repo: Path) -> None:
    spawn_json("alpha")
    shutil.rmtree(worktree(git_repo, "alpha"))
    again = spawn_json("alpha")
    assert again[0]["action"] == "recreated"
    assert (worktree(git_repo, "alpha") / "branches/alpha/train.py").exists()


def test_branch_checked_out_elsewhere_is_refused(git_repo: Path, tmp_path: Path) -> None:
    git(git_repo, "branch", "exp-alpha")
    git(git_repo, "worktree", "add", str(tmp_path / "elsewhere"), "exp-alpha")
    result = runner.invoke(app, ["spawn", "alpha"])
    assert result.exit_code == 3
    assert "already checked out at" in result.stderr
    assert "Traceback" not in result.output
    assert not worktree(git_repo, "alpha").exists()


def test_path_in_the_way_is_refused_and_left_alone(git_repo: Path) -> None:
    in_the_way = worktree(git_repo, "beta")
    in_the_way.mkdir(parents=True)
    (in_the_way / "mine.txt").write_text("keep me")
    result = runner.invoke(app, ["spawn", "beta"])
    assert result.exit_code == 3
    assert "in the way" in result.stderr
    assert (in_the_way / "mine.txt").read_text() == "keep me"


def test_unknown_variant_is_a_usage_error(git_repo: Path) -> None:
    result = runner.invoke(app, ["spawn", "gamma"])
    assert result.exit_code == 2
    assert "unknown variant 'gamma'" in result.stderr
