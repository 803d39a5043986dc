"""`--config PATH` and ORCH_CONFIG: orch's config kept where the user keeps it.

Folders and gates stay relative to the repo root (the git repository holding the config
file, else the one holding the current folder); files the config names are relative to the
config file.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator import state as st
from orchestrator.cli.main import app
from orchestrator.config import CONFIG_ENV, load_config, locate
from orchestrator.errors import ConfigError
from orchestrator.jobenv import train_argv
from tests.orch_fixtures import *  # noqa: F403
from tests.orch_fixtures import CONFIG

runner = CliRunner()

# The fixture study's config with a file input and a data file, kept in tools/orch.yaml.
KEPT = CONFIG.replace("  tiny: {}\n", "  tiny: {data: data/clips.npz}\n") + (
    "inputs:\n  - {name: weights, path: weights/m.pt, pass_as: --weights, presets: [tiny]}\n")


@pytest.fixture
def kept(git_repo: Path) -> Path:
    """The study repo whose config.yaml is its own; orch's config is tools/orch.yaml."""
    (git_repo / "tools").mkdir()
    (git_repo / "tools" / "orch.yaml").write_text(KEPT)
    (git_repo / "config.yaml").write_text("learning_rate: 0.1\n")
    return git_repo / "tools" / "orch.yaml"


def test_config_option_and_env_read_the_named_file(kept: Path, git_repo: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    mine = runner.invoke(app, ["status"])  # the repo's own config.yaml is not orch's
    assert mine.exit_code == 2 and "learning_rate: unknown key" in mine.stderr
    assert runner.invoke(app, ["--config", "tools/orch.yaml", "status"]).exit_code == 0
    monkeypatch.setenv(CONFIG_ENV, "tools/orch.yaml")
    assert runner.invoke(app, ["status"]).exit_code == 0
    # --config wins over ORCH_CONFIG
    monkeypatch.setenv(CONFIG_ENV, "config.yaml")
    assert runner.invoke(app, ["--config", str(kept), "status"]).exit_code == 0
    assert "--config" in runner.invoke(app, ["--help"]).stdout


def test_folders_are_relative_to_the_repo_and_files_to_the_config(
    kept: Path, git_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(git_repo / "branches")
    cfg = load_config(path=Path("../tools/orch.yaml"))
    assert cfg.root == git_repo.resolve() and cfg.path == kept.resolve()
    assert cfg.worktree_dir == git_repo.resolve() / ".orch" / "worktrees"
    assert (cfg.root / cfg.variants[0].gate_path).is_dir()  # branches/alpha/tests
    monkeypatch.delenv(st.HOME_ENV)
    from orchestrator.cli import setup, state_dir

    assert state_dir() == st.state_home(git_repo) == git_repo.resolve() / ".orch"
    monkeypatch.setenv(CONFIG_ENV, str(kept))
    assert setup() == (load_config(path=kept), git_repo.resolve() / ".orch")

    job = st.JobState("alpha", preset="tiny", output_dir=str(tmp_path / "out"))
    argv = train_argv(cfg, job, cfg.variants[0], threads=1, device="cpu", shared_args=[],
                      resume=False)
    tools = kept.resolve().parent
    assert argv[argv.index("--weights") + 1] == str(tools / "weights" / "m.pt")
    assert argv[argv.index("--data") + 1] == str(tools / "data" / "clips.npz")


def test_a_config_outside_the_repo_uses_the_repo_of_the_current_folder(
    git_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = tmp_path / "configs" / "study.yaml"
    outside.parent.mkdir()
    outside.write_text(CONFIG)
    monkeypatch.chdir(git_repo / "branches" / "beta")
    root, path = locate(outside)
    assert root == git_repo.resolve() and path == outside.resolve()
    result = runner.invoke(app, ["--config", str(outside), "spawn", "alpha"])
    assert result.exit_code == 0, result.output
    assert (git_repo / ".orch" / "worktrees" / "alpha" / "branches" / "alpha").is_dir()


def test_a_config_that_cannot_be_found_is_one_line(
    git_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for args, env, says in (
        (["--config", "nope.yaml"], None, "--config nope.yaml: "),
        (["--config", "branches"], None, "is a folder"),
        ([], "missing.yaml", f"{CONFIG_ENV} missing.yaml: "),
    ):
        if env is not None:
            monkeypatch.setenv(CONFIG_ENV, env)
        result = runner.invoke(app, [*args, "compare"])
        assert result.exit_code == 2, result.output
        assert says in result.stderr and result.stderr.strip().count("\n") == 0
        assert "Traceback" not in result.output
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "orch.yaml").write_text(CONFIG)
    with pytest.raises(ConfigError, match="is in a git repository"):
        locate(lonely / "orch.yaml", start=lonely)


def test_the_jobs_interpreter_is_the_configs_the_repos_venv_or_orchs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """config `python`: a name on PATH, or a path relative to the config file; by default
    the repo's .venv when it has one, else the interpreter running orch."""
    import sys

    from orchestrator.config import parse_config

    repo = tmp_path / "repo"
    (repo / "tools").mkdir(parents=True)
    base = "presets: {small: {}}\ndefault_preset: small\ngate_preset: small\n"

    def interpreter(extra: str = "") -> str:
        cfg = parse_config(base + extra, root=repo)
        cfg = replace(cfg, path=repo / "tools" / "orch.yaml")
        return cfg.interpreter()

    assert interpreter() == sys.executable
    venv_python = repo / ".venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.write_text("")
    assert interpreter() == str(venv_python)
    (repo / "tools" / "py").write_text("")
    assert interpreter("python: ./py\n") == str(repo / "tools" / "py")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "study-python").write_text("#!/bin/sh\n")
    (bin_dir / "study-python").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert interpreter("python: study-python\n") == str(bin_dir / "study-python")
    with pytest.raises(ConfigError, match="not on PATH"):
        interpreter("python: nowhere-python\n")
    with pytest.raises(ConfigError, match="does not exist"):
        interpreter("python: ./missing/python\n")
