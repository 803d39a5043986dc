"""orch installs on its own: `pip install` of the repository into a fresh virtual environment
without torch gives a working `orch --help` and `orch status`, ships the orchestrator package
(and its JSON Schema) and nothing else, and brings none of the study's dependencies.

Needs the package registry (as CI has) for orch's own dependencies; slow (about a minute)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def orch_alone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with orch pip-installed from a copy of the repository's tracked files."""
    base = tmp_path_factory.mktemp("install")
    source = base / "source"
    tracked = _run(["git", "ls-files", "-z"], ROOT).stdout.split("\0")
    for name in filter(None, tracked):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    installed = _run([str(python), "-m", "pip", "install", "--quiet",
                      "--disable-pip-version-check", str(source)], base)
    assert installed.returncode == 0, installed.stderr[-2000:]
    return env_dir


def test_orch_alone_brings_nothing_of_the_study(orch_alone: Path) -> None:
    python = str(orch_alone / "bin" / "python")
    code = ("import importlib.util as u, json\n"
            "print(json.dumps({m: u.find_spec(m) is not None for m in "
            "('orchestrator', 'git', 'typer', 'rich', 'yaml', 'pydantic', 'psutil', "
            "'torch', 'numpy', 'huggingface_hub', 'shared', 'branches')}))\n")
    found = _run([python, "-c", code], orch_alone.parent)  # not the repo: nothing from it
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout) == {
        "orchestrator": True, "git": True, "typer": True, "rich": True, "yaml": True,
        "pydantic": True, "psutil": True,
        "torch": False, "numpy": False, "huggingface_hub": False,
        "shared": False, "branches": False}
    schema = _run([python, "-c", "from orchestrator.schemas import RESULTS_SCHEMA_FILE as f;"
                   "print(f.is_file())"], orch_alone.parent)
    assert schema.stdout.strip() == "True"


def test_orch_help_and_status_work_without_torch(orch_alone: Path, tmp_path: Path) -> None:
    orch = str(orch_alone / "bin" / "orch")
    env = {k: v for k, v in os.environ.items() if k not in ("ORCH_HOME", "ORCH_CONFIG")}
    helped = _run([orch, "--help"], tmp_path, env)
    assert helped.returncode == 0 and "spawn" in helped.stdout and "compare" in helped.stdout
    version = _run([orch, "--version"], tmp_path, env)
    assert version.returncode == 0 and version.stdout.startswith("orch ")
    repo = tmp_path / "project"
    repo.mkdir()
    assert _run(["git", "init", "-q"], repo).returncode == 0
    (repo / "config.yaml").write_text("presets: {small: {}}\ndefault_preset: small\n"
                                      "gate_preset: small\n")
    status = _run([orch, "status"], repo, env)
    assert status.returncode == 0, status.stderr
    assert "no runs yet" in status.stdout + status.stderr
