"""Bugs a new user met (issue 17): each one is a clear line and a distinct exit code now."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator import state as st
from orchestrator.cli.main import app
from orchestrator.config import parse_config
from orchestrator.errors import ConfigError
from tests.orch_fixtures import *  # noqa: F403
from tests.orch_fixtures import CONFIG

runner = CliRunner()


def one_line_error(result: object, code: int) -> str:
    """The stderr of a command that failed as a user error: one line, no traceback."""
    assert result.exit_code == code, result.output
    stderr: str = result.stderr
    assert stderr.strip().count("\n") == 0, stderr
    assert "Traceback" not in result.output and "hit a bug" not in stderr
    return stderr


def saved_run(home: Path, tmp_path: Path) -> None:
    """A finished run with one job and no results: enough for compare and monitor to find."""
    job = st.JobState("alpha", stage=st.Stage.done, output_dir=str(tmp_path / "alpha-out"))
    run = st.RunState("r1", "tiny", time.time(), finished=time.time(), status="done",
                      jobs=[job])
    st.save_run(home, run, latest=True)


@pytest.mark.parametrize("how", ["default", "--config", "ORCH_CONFIG"])
def test_compare_and_monitor_find_the_run_from_a_subfolder(
    how: str, git_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(st.HOME_ENV)  # the state dir is the repo's own .orch
    before: list[str] = []
    if how != "default":  # orch's config kept beside the repo's own, found from the subfolder
        (git_repo / "tools").mkdir()
        (git_repo / "config.yaml").rename(git_repo / "tools" / "orch.yaml")
        (git_repo / "config.yaml").write_text("learning_rate: 0.1\n")  # the repo's own config
        if how == "--config":
            before = ["--config", "../../tools/orch.yaml"]
        else:
            monkeypatch.setenv("ORCH_CONFIG", str(git_repo / "tools" / "orch.yaml"))
    saved_run(git_repo / ".orch", tmp_path)
    monkeypatch.chdir(git_repo / "branches" / "alpha")

    status = runner.invoke(app, [*before, "status", "--json"])
    assert status.exit_code == 0 and json.loads(status.stdout)["run_id"] == "r1", status.output
    compare = runner.invoke(app, [*before, "compare"])
    assert compare.exit_code == 5, compare.output  # found the run, which has no results yet
    assert "run r1 has no readable results" in compare.stderr
    monitor = runner.invoke(app, [*before, "monitor", "--once"])
    assert monitor.exit_code == 0, monitor.output
    assert "no run found" not in monitor.output


@pytest.mark.parametrize("command", ["run", "train", "spawn"])
def test_no_enabled_variant_is_a_usage_error(command: str, git_repo: Path) -> None:
    text = CONFIG.replace("    folder: branches/alpha\n",
                          "    folder: branches/alpha\n    enabled: false\n")
    text = text.replace("    folder: branches/beta\n", "    folder: branches/beta\n"
                        "    enabled: false\n")
    (git_repo / "config.yaml").write_text(text)
    result = runner.invoke(app, [command])
    message = one_line_error(result, 2)
    assert "no variant is enabled in config.yaml" in message and "enabled: true" in message
    assert "done" not in result.output and not (git_repo / ".orch" / "worktrees").exists()


@pytest.mark.parametrize("content", [b"\x00\xff\xfe\x00\x80binary", "café".encode("utf-16"),
                                     b"\x00\x01\x02 valid utf-8 but not text"])
def test_a_config_that_is_not_text_is_a_config_error(content: bytes, git_repo: Path) -> None:
    (git_repo / "config.yaml").write_bytes(content)
    message = one_line_error(runner.invoke(app, ["status"]), 2)
    assert "config.yaml: not a text file" in message and "YAML text" in message
    blob = git_repo / "weights.pt"
    blob.write_bytes(content)
    message = one_line_error(runner.invoke(app, ["--config", "weights.pt", "status"]), 2)
    assert "weights.pt: not a text file" in message


@pytest.mark.parametrize("artifact", ["../../x", "../x.ckpt", "out/../../x", ".", "", "ABS"])
def test_shared_job_artifact_must_stay_in_its_output_folder(
    artifact: str, tmp_path: Path
) -> None:
    for pkg in ("alpha", "beta"):
        (tmp_path / "branches" / pkg).mkdir(parents=True)
    name = str(tmp_path / "x") if artifact == "ABS" else artifact
    text = CONFIG.replace("artifact: tokenizer.ckpt", f"artifact: '{name}'")
    with pytest.raises(ConfigError) as e:
        parse_config(text, root=tmp_path)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "artifact:" in ln)
    assert str(e.value).startswith(f"config.yaml:{line}: shared_jobs[0].artifact: ")
    assert "not inside the job's output folder" in str(e.value)
    # A file in a subfolder of the output is fine, and a job's name cannot climb out either.
    ok = parse_config(CONFIG.replace("artifact: tokenizer.ckpt", "artifact: ckpt/tok.pt"),
                      root=tmp_path)
    assert ok.shared_jobs[0].artifact == "ckpt/tok.pt"
    with pytest.raises(ConfigError, match=r"shared_jobs\[0\]\.name: '\.\./up'"):
        parse_config(CONFIG.replace("name: tokenizer", "name: ../up"), root=tmp_path)


class Pickled:
    """Not a tensor nor a plain container: torch.save pickles it with its class."""

    def __init__(self) -> None:
        self.weights = [1.0, 2.0]


def test_an_unsafe_checkpoint_is_refused_without_torchs_advice(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from shared.checkpoint import read_checkpoint
    from shared.errors import CheckpointError

    path = tmp_path / "model.pt"
    torch.save({"model": Pickled()}, path)
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(path)
    message = str(e.value)
    assert "weights_only=False" not in message and "\n" not in message
    assert message.startswith(f"{path} holds Python objects beyond tensors and plain containers")
    assert f"unsupported global {Pickled.__module__}.Pickled" in message
    assert "weights-only on purpose" in message and "re-save it as a state dict" in message

    torch.save({"model": {"weight": torch.ones(2)}, "step": 3}, path)  # a state dict loads
    assert read_checkpoint(path)["step"] == 3
    path.write_bytes(b"not a checkpoint")  # any other failure keeps its own message
    with pytest.raises(CheckpointError, match="not a readable weights-only torch checkpoint"):
        read_checkpoint(path)
