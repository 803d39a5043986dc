"""The README's second study, for real: a small tabular study (tests/example_study) that is
not the video one, put under orch in a fresh repository and taken through spawn, test-all,
train, compare and clean, with its own metrics and reference rows in the report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent / "example_study"
VIDEO_WORDS = ("PSNR", "SSIM", "frame", "oracle", "copy-last", "tokenizer")


def orch(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli.main", *args], cwd=repo,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"orch {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.mark.slow
def test_a_tabular_study_goes_through_orch(tmp_path: Path) -> None:
    repo = tmp_path / "tabular-study"
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns("__pycache__"))
    for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                 ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "study"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    env = {k: v for k, v in os.environ.items() if k != "ORCH_CONFIG"}
    env |= {"ORCH_HOME": str(tmp_path / "state"), "ORCH_GPUS": "", "ORCH_CPU_CORES": "2",
            "COLUMNS": "200"}

    orch(repo, env, "spawn")
    gates = orch(repo, env, "test-all")
    assert "linear" in gates.stdout and "quadratic" in gates.stdout
    orch(repo, env, "train", "--plain")
    compared = json.loads(orch(repo, env, "compare", "--json").stdout)

    ranked = [(v["variant"], v["rank"]) for v in compared["variants"]]
    assert ranked == [("quadratic", 1), ("linear", 2)]
    quadratic, linear = compared["variants"]
    assert quadratic["metrics"]["accuracy"]["mean"] > 0.85 > linear["metrics"]["accuracy"]["mean"]
    assert [(r["label"], r["role"]) for r in compared["references"]] == [
        ("majority class", "floor"), ("label-noise ceiling", "ceiling")]
    assert not quadratic["flags"]  # above the floor, under the ceiling
    report = Path(compared["markdown_path"]).read_text()
    page = Path(compared["html_path"]).read_text()
    assert "ranked by mean accuracy (higher is better)" in report
    assert "log loss" in report and "accuracy per ring (thirds of the radius)" in page
    for word in VIDEO_WORDS:
        assert word not in report and word not in page, word

    orch(repo, env, "clean")
    assert not (repo / ".orch" / "worktrees" / "linear").exists()
