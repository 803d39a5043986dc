"""`orch init`: a commented config that loads, never over a user's file, clear lines for
what is missing or wrong, and the next command."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli.main import app
from orchestrator.config import load_config
from tests.orch_fixtures import *  # noqa: F403
from tests.orch_fixtures import commit_all, git, write_tree

runner = CliRunner()

TRAIN = "print('training')\n"
GATE = "def test_runs():\n    assert 1 + 1 == 2\n"


def variant_files(folder: str, train: str = "train.py", gate: str = "tests") -> dict[str, str]:
    return {f"{folder}/{train}": TRAIN, f"{folder}/{gate}/test_gate.py": GATE}


def new_repo(root: Path, files: dict[str, str], commit: bool = True) -> Path:
    root.mkdir(parents=True)
    write_tree(root, {".gitignore": ".orch/\n__pycache__/\n", **files})
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "test@example.com")
    git(root, "config", "user.name", "orch test")
    git(root, "config", "commit.gpgsign", "false")
    if commit:
        commit_all(root, "project")
    return root


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project with two variants' folders, gates and train scripts, as the working dir."""
    monkeypatch.delenv("ORCH_CONFIG", raising=False)
    root = new_repo(tmp_path / "project", {**variant_files("branches/alpha"),
                                           **variant_files("branches/beta")})
    monkeypatch.chdir(root)
    return root


def one_line_error(result: object, code: int = 2) -> str:
    """The stderr of a command that failed as a user error: one line, no traceback."""
    assert result.exit_code == code, result.output
    stderr: str = result.stderr
    assert stderr.startswith("error: ") and stderr.strip().count("\n") == 0, stderr
    assert "Traceback" not in result.output and "hit a bug" not in stderr
    return stderr


def test_init_writes_a_commented_config_that_loads_and_says_what_next(repo: Path) -> None:
    result = runner.invoke(app, ["init", "alpha", "beta"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # everything is committed: no warning
    assert "wrote config.yaml" in result.stdout
    assert ("next: `orch spawn` (a branch and a worktree per variant), then `orch test-all`"
            in result.stdout)

    cfg = load_config(repo)
    assert cfg.base_ref == "main" and cfg.study is None
    assert list(cfg.presets) == ["micro", "small"]
    assert (cfg.gate_preset, cfg.default_preset) == ("micro", "small")
    assert [(v.name, v.branch, v.folder, v.gate_path, v.module) for v in cfg.variants] == [
        ("alpha", "orch/alpha", "branches/alpha", "branches/alpha/tests", "branches.alpha.train"),
        ("beta", "orch/beta", "branches/beta", "branches/beta/tests", "branches.beta.train")]
    text = (repo / "config.yaml").read_text()
    assert "# study:\n#   metrics:" in text  # the study's skeleton, to fill in
    assert sum(line.lstrip().startswith("#") for line in text.splitlines()) > 30

    # The next step works on what it wrote.
    spawned = runner.invoke(app, ["spawn"])
    assert spawned.exit_code == 0, spawned.output
    assert "orch/alpha" in git(repo, "branch", "--list", "orch/*")
    gates = runner.invoke(app, ["test-all"])
    assert gates.exit_code == 0, gates.output


def test_the_commented_examples_load_once_uncommented(repo: Path) -> None:
    """The guidance is orch's format: uncommenting python, study, shared_jobs, inputs and ray
    gives a config that loads."""
    assert runner.invoke(app, ["init", "alpha", "beta"]).exit_code == 0
    keys = ("python:", "study:", "shared_jobs:", "inputs:", "ray:")
    lines = [line[2:] if line.startswith("# ") and line[2:].startswith((*keys, " ")) else line
             for line in (repo / "config.yaml").read_text().splitlines()]
    (repo / "config.yaml").write_text("\n".join(lines) + "\n")
    cfg = load_config(repo)
    assert cfg.python == ".venv/bin/python" and cfg.ray.max_retries == 1
    assert cfg.study is not None and cfg.study.spec().ranking is not None
    assert [j.name for j in cfg.shared_jobs] == ["vocab"] and cfg.inputs[0].name == "weights"


def test_init_is_in_the_help() -> None:
    assert "init" in runner.invoke(app, ["--help"]).stdout
    help_text = runner.invoke(app, ["init", "--help"]).stdout
    for option in ("--branch-prefix", "--folder", "--gate", "--train", "--preset", "--metric",
                   "--reference", "--force"):
        assert option in help_text


def test_options_shape_each_variant_and_the_study(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORCH_CONFIG", raising=False)
    root = new_repo(tmp_path / "project", {
        **variant_files("src/joint_i3d", train="run.py", gate="checks"),
        **variant_files("exp/wide", train="run.py", gate="checks")})
    monkeypatch.chdir(root)
    result = runner.invoke(app, [
        "init", "joint-i3d", "wide=exp/wide", "--branch-prefix", "study-", "--folder",
        "src/{pkg}", "--gate", "{folder}/checks", "--train", "{folder}/run.py",
        "--preset", "tiny", "--preset", "mid", "--preset", "full", "--base-ref", "main",
        "--metric", "accuracy:higher", "--metric", "loss:lower",
        "--reference", "majority_class:floor", "--reference", "oracle:ceiling"])
    assert result.exit_code == 0, result.output
    cfg = load_config(root)
    assert [(v.branch, v.folder, v.gate_path, v.module) for v in cfg.variants] == [
        ("study-joint-i3d", "src/joint_i3d", "src/joint_i3d/checks", "src.joint_i3d.run"),
        ("study-wide", "exp/wide", "exp/wide/checks", "exp.wide.run")]
    assert list(cfg.presets) == ["tiny", "mid", "full"]
    assert (cfg.gate_preset, cfg.default_preset) == ("tiny", "full")
    assert cfg.study is not None
    spec = cfg.study.spec()
    assert spec.ranking is not None and spec.ranking.name == "accuracy"
    assert [(m.name, m.better) for m in spec.metrics] == [("accuracy", "higher"),
                                                           ("loss", "lower")]
    assert [(r.name, r.role) for r in spec.references] == [("majority_class", "floor"),
                                                           ("oracle", "ceiling")]


def test_variants_sharing_the_repos_code_and_a_package_train(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Variants that differ by branch only: folder `.`, a package run through __main__."""
    monkeypatch.delenv("ORCH_CONFIG", raising=False)
    root = new_repo(tmp_path / "project", {"trainer/__init__.py": "",
                                           "trainer/__main__.py": TRAIN,
                                           "tests/test_gate.py": GATE})
    monkeypatch.chdir(root)
    result = runner.invoke(app, ["init", "base", "wide", "--folder", ".", "--train", "trainer",
                                 "--preset", "small"])
    assert result.exit_code == 0, result.output
    cfg = load_config(root)
    assert [(v.folder, v.gate_path, v.module) for v in cfg.variants] == [
        (".", "tests", "trainer"), (".", "tests", "trainer")]
    assert cfg.gate_preset == cfg.default_preset == "small"


def test_init_never_overwrites_a_config_and_force_keeps_a_backup(repo: Path) -> None:
    own = "learning_rate: 0.1\n"  # the repo's own config.yaml, not orch's
    (repo / "config.yaml").write_text(own)
    write_tree(repo, variant_files("branches/gamma"))  # uncommitted: the refusal comes first
    message = one_line_error(runner.invoke(app, ["init", "alpha", "gamma"]))
    assert "config.yaml exists already" in message and "never overwrites" in message
    assert "--config" in message and "--force" in message
    assert (repo / "config.yaml").read_text() == own and not (repo / "config.yaml.bak").exists()

    forced = runner.invoke(app, ["init", "alpha", "beta", "--force"])
    assert forced.exit_code == 0, forced.output
    assert "the old one kept as config.yaml.bak" in forced.stdout
    assert (repo / "config.yaml.bak").read_text() == own
    first = (repo / "config.yaml").read_text()
    assert [v.name for v in load_config(repo).variants] == ["alpha", "beta"]

    again = runner.invoke(app, ["init", "alpha", "--force"])  # an older backup stays too
    assert again.exit_code == 0, again.output
    assert (repo / "config.yaml.bak").read_text() == own
    assert (repo / "config.yaml.bak.1").read_text() == first
    assert [v.name for v in load_config(repo).variants] == ["alpha"]


@pytest.mark.parametrize("how", ["--config", "ORCH_CONFIG"])
def test_config_option_chooses_where_to_write(how: str, repo: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    own = "learning_rate: 0.1\n"
    (repo / "config.yaml").write_text(own)
    before = ["--config", "tools/orch.yaml"] if how == "--config" else []
    if how == "ORCH_CONFIG":
        monkeypatch.setenv("ORCH_CONFIG", "tools/orch.yaml")
    result = runner.invoke(app, [*before, "init", "alpha", "beta"])
    assert result.exit_code == 0, result.output
    assert (repo / "config.yaml").read_text() == own
    assert "wrote tools/orch.yaml" in result.stdout
    next_command = "orch --config tools/orch.yaml spawn" if before else "orch spawn"
    assert f"next: `{next_command}`" in result.stdout
    cfg = load_config(path=repo / "tools" / "orch.yaml")
    assert cfg.root == repo.resolve() and [v.name for v in cfg.variants] == ["alpha", "beta"]
    status = runner.invoke(app, [*before, "status"])
    assert status.exit_code == 0, status.output


def test_a_missing_train_module_is_reported_and_nothing_written(repo: Path) -> None:
    (repo / "branches/beta/train.py").unlink()
    message = one_line_error(runner.invoke(app, ["init", "alpha", "beta"]))
    assert "not in the repo: branches/beta/train.py (beta's train module branches.beta.train)"\
        in message
    assert "alpha" not in message and "nothing was written" in message
    assert not (repo / "config.yaml").exists()

    # Everything missing is named at once: a folder, a gate, a package without __main__.py.
    (repo / "branches/beta/train.py").write_text(TRAIN)
    (repo / "branches/alpha/tests/test_gate.py").unlink()
    (repo / "branches/alpha/tests").rmdir()
    (repo / "pkg").mkdir()
    (repo / "pkg/__init__.py").write_text("")
    message = one_line_error(runner.invoke(app, ["init", "alpha", "gamma"]))
    assert "branches/alpha/tests (alpha's gate)" in message
    assert "branches/gamma/ (gamma's folder)" in message
    message = one_line_error(runner.invoke(app, ["init", "beta", "--train", "pkg"]))
    assert "pkg/__main__.py (beta's train module pkg)" in message
    assert not (repo / "config.yaml").exists()


def test_outside_a_git_repository_is_a_usage_error(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORCH_CONFIG", raising=False)
    plain = tmp_path / "plain"
    write_tree(plain, variant_files("branches/alpha"))
    monkeypatch.chdir(plain)
    message = one_line_error(runner.invoke(app, ["init", "alpha"]))
    assert "is not in a git repository" in message and "git init" in message
    assert not (plain / "config.yaml").exists()


def test_uncommitted_code_is_a_warning(repo: Path) -> None:
    write_tree(repo, variant_files("branches/gamma"))  # written, not committed
    result = runner.invoke(app, ["init", "alpha", "gamma"])
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("warning: not committed on main: branches/gamma/train.py, "
                                    "branches/gamma/tests; commit before `orch spawn`")
    assert [v.name for v in load_config(repo).variants] == ["alpha", "gamma"]


def test_a_repository_without_a_commit_is_a_warning(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORCH_CONFIG", raising=False)
    root = new_repo(tmp_path / "fresh", variant_files("branches/alpha"), commit=False)
    monkeypatch.chdir(root)
    result = runner.invoke(app, ["init", "alpha"])
    assert result.exit_code == 0, result.output
    assert "warning: base_ref 'main' is not a commit yet" in result.stderr
    assert load_config(root).base_ref == "main"


@pytest.mark.parametrize(("args", "expected"), [
    (["Alpha"], "variant 'Alpha': use lowercase letters"),
    (["alpha", "alpha"], "variant 'alpha' is named twice"),
    (["alpha", "--branch-prefix", "a b/"], "'a b/alpha' is not a valid git branch name"),
    (["alpha", "--train", "python train.py"], "give the module (pkg.train) or its file"),
    (["alpha", "--folder", "../elsewhere"], "name a path inside the repo"),
    (["alpha", "--folder", "{nope}"], "the placeholders are {name}, {pkg}"),
    (["alpha=my-dir"], "'my-dir.train' is not a module `python -m` can run"),
    (["alpha", "--metric", "accuracy:up"], "write NAME:higher or NAME:lower"),
    (["alpha", "--reference", "black:floor"], "--reference needs --metric"),
    (["alpha", "--metric", "acc:higher", "--reference", "model:floor"], "own row is not a"),
    (["alpha", "--preset", "Big"], "--preset 'Big': use lowercase letters"),
])
def test_bad_input_is_one_line(args: list[str], expected: str, repo: Path) -> None:
    (repo / "my-dir").mkdir()
    message = one_line_error(runner.invoke(app, ["init", *args]))
    assert expected in message
    assert not (repo / "config.yaml").exists()
