"""`orch run --preset micro` on the real study: every variant spawned, gated, trained, compared.

Runs on a clone of this repository's HEAD (the committed study), so it tests what CI checks
out; skipped where the project is not a git checkout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def clone_study(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A clone of this repository's HEAD on a local main, and an environment whose state,
    cache and GPUs are the test's own."""
    if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"],
                      capture_output=True).returncode != 0:
        pytest.skip("the project is not a git checkout with a commit")
    clone = tmp_path / "study"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    # The study's base_ref is main; a clone of a feature branch has no local main.
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", "-B", "main"], check=True)
    return clone, {**os.environ, "ORCH_HOME": str(tmp_path / "state"),
                   "ORCH_CACHE_DIR": str(tmp_path / "cache"), "ORCH_GPUS": "",
                   "HF_HUB_OFFLINE": "1"}


@pytest.mark.slow
def test_orch_run_micro_trains_and_compares_every_variant(tmp_path: Path) -> None:
    clone, env = clone_study(tmp_path)
    done = subprocess.run(
        # An override typed as a user would: it reaches each variant's typed config.
        [sys.executable, "-m", "orchestrator.cli.main", "run", "--preset", "micro",
         "-s", "study.train.lr=2e-3"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    status = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli.main", "status", "--json"],
        cwd=clone, env=env, capture_output=True, text=True, check=True,
    )
    jobs = json.loads(status.stdout)["jobs"]
    assert {job["variant"] for job in jobs} == {"baseline", "joint-i3d", "slowfast-frozen"}
    assert all(job["stage"] == "done" for job in jobs), jobs
    run_dirs = list((tmp_path / "state" / "runs").iterdir())
    assert len(run_dirs) == 1
    report = (run_dirs[0] / "report.md").read_text()
    for name in ("baseline", "joint-i3d", "slowfast-frozen", "copy-last", "oracle"):
        assert name in report
    for job in jobs:
        results = json.loads((Path(job["output_dir"]) / "results.json").read_text())
        assert results["status"] == "success" and results["preset"] == "micro"
        assert results["config"]["study"]["train"]["lr"] == 2e-3
        assert results["config"]["overrides"] == {"study.train.lr": 2e-3}
        assert job["overrides"] == {"study.train.lr": "2e-3"}


@pytest.mark.slow
def test_rehearsal_plans_the_real_study_and_a_run_retries_out_of_memory(tmp_path: Path) -> None:
    """`orch run --preset micro --rehearse` measures every variant, one job each, at
    micro-batches 1 and 2 through the real train entry points; then a training that runs out
    of memory (injected through the train contract's hook) goes again at half the
    micro-batch, finishes, and its measured peak joins the plan."""
    clone, env = clone_study(tmp_path)

    def orch(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "orchestrator.cli.main", *args],
                              cwd=clone, env={**env, **extra}, capture_output=True, text=True,
                              timeout=600)

    rehearsed = orch("run", "--preset", "micro", "--rehearse", "--plan-gpus", "0:81920")
    assert rehearsed.returncode == 0, rehearsed.stdout[-3000:] + rehearsed.stderr[-3000:]
    assert "plan for micro" in rehearsed.stdout
    plan = json.loads((tmp_path / "state" / "plans" / "micro-cpu.json").read_text())
    assert {j["variant"] for j in plan["jobs"]} == {"baseline", "joint-i3d", "slowfast-frozen"}
    assert plan["memory_source"] == "process_peak_rss" and plan["measured_on"] == "cpu"
    for job in plan["jobs"]:
        assert job["fits"] and job["per_clip_mb"] >= 0 and job["flops_per_step"] > 0
        assert [p["micro_batch"] for p in job["measured"]] == [1, 2]
        assert job["other_phases_mb"] > 0 and job["precision"] in ("bf16", "fp32")

    trained = orch("train", "baseline", "--preset", "micro", "--json", "--plain",
                   SHARED_INJECT_OOM_ABOVE="4")
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    (job,) = json.loads(trained.stdout)["jobs"]
    assert job["retries"] == ["out of memory at micro-batch 8; retried at 4"]
    results = json.loads((Path(job["output_dir"]) / "results.json").read_text())
    assert results["config"]["train"]["micro_batch"] == 4
    # The run's peak at micro-batch 4 is now a measured point of baseline's plan.
    plan = json.loads((tmp_path / "state" / "plans" / "micro-cpu.json").read_text())
    baseline = next(j for j in plan["jobs"] if j["variant"] == "baseline")
    assert {p["micro_batch"]: p["source"] for p in baseline["measured"]}[4].startswith("run ")
