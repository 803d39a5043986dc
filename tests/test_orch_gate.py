"""Gate verdicts and per-test outcomes from the junit XML that pytest really writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from orchestrator.gate import failure_reason, gate_result, parse_junit
from tests.orch_fixtures import *  # noqa: F403

TESTS = '''\
import pytest

def test_ok():
    assert 1 + 1 == 2

def test_bad():
    assert [1, 2] == [1, 3], "shapes differ"

@pytest.mark.skip(reason="needs a GPU")
def test_gpu():
    pass

@pytest.fixture
def broken():
    raise RuntimeError("fixture exploded")

def test_error(broken):
    pass
'''


def run_pytest(folder: Path, text: str) -> tuple[Path, int]:
    (folder / "test_gate.py").write_text(text)
    junit = folder / "junit.xml"
    code = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"--junitxml={junit}", str(folder / "test_gate.py")],
        cwd=folder, capture_output=True,
    ).returncode
    return junit, code


def test_junit_outcomes_of_a_failing_gate(tmp_path: Path) -> None:
    junit, code = run_pytest(tmp_path, TESTS)
    assert code == 1
    outcomes = {t.name: t for t in parse_junit(junit)}
    assert {n: t.outcome for n, t in outcomes.items()} == {
        "test_gate::test_ok": "passed",
        "test_gate::test_bad": "failed",
        "test_gate::test_gpu": "skipped",
        "test_gate::test_error": "error",
    }
    assert "shapes differ" in outcomes["test_gate::test_bad"].message
    assert "fixture exploded" in outcomes["test_gate::test_error"].message
    assert outcomes["test_gate::test_gpu"].message.endswith("needs a GPU")
    result = gate_result(junit, code, 1.5, tmp_path / "gate.log")
    assert not result.passed
    assert result.counts == {"passed": 1, "failed": 1, "error": 1, "skipped": 1}
    assert failure_reason(result).startswith("gate: test_gate::test_bad failed:")


def test_junit_of_a_passing_gate(tmp_path: Path) -> None:
    junit, code = run_pytest(tmp_path, "def test_ok():\n    assert True\n")
    result = gate_result(junit, code, 0.3, tmp_path / "gate.log")
    assert result.passed and [t.outcome for t in result.tests] == ["passed"]
    assert failure_reason(result) == ""


def test_gate_without_junit_or_tests_fails_with_the_reason(tmp_path: Path) -> None:
    log = tmp_path / "gate.log"
    log.write_text("ImportError: No module named 'branches.alpha'\n")
    crashed = gate_result(tmp_path / "missing.xml", 4, 0.1, log)
    assert not crashed.passed
    assert crashed.tests[-1].message == "ImportError: No module named 'branches.alpha'"
    junit, code = run_pytest(tmp_path, "x = 1\n")
    empty = gate_result(junit, code, 0.1, log)
    assert code == 5 and not empty.passed
    assert empty.tests[-1].message == "no tests collected"
