"""`orch train --backend ray` on a real Ray instance bound to loopback (2 CPUs, no GPU).

One Ray instance serves the whole module (starting one takes seconds). The fake study runs on
it: events stream back while jobs run, results come back, the code that runs is the recorded
commit plus diff, a killed worker is reported and retried from its checkpoint, Ctrl-C
cancels the tasks, and a GPU job on a GPU-less cluster fails at once.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator import launcher
from orchestrator.cli.main import app
from orchestrator.config import load_config
from orchestrator.errors import Interrupted
from orchestrator.executors import JobSpec
from orchestrator.state import Stage
from tests.orch_fixtures import *  # noqa: F403
from tests.orch_fixtures import commit_all, git, wait_for, worktree

runner = CliRunner()

# Jobs need the fake study's switches and state folder; CPU fallback since there is no GPU.
RAY_CONFIG = """\
ray:
  max_retries: 1
  cpu_fallback: true
  forward_env: [FAKE_, ORCH_]
"""


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[object]:
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[ray]')")
    old = os.environ.get("RAY_AUTH_MODE")
    # A throwaway instance: no auth token written to the user's home.
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False,
             _node_ip_address="127.0.0.1", log_to_driver=False,
             object_store_memory=200 * 1024 * 1024)
    try:
        yield ray
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = old


@pytest.fixture
def ray_study(spawned: Path, ray_cluster: object) -> Path:
    with open(spawned / "config.yaml", "a") as f:
        f.write(RAY_CONFIG)
    commit_all(spawned, "study on ray")
    return spawned


def executor(handles: list | None = None):  # type: ignore[no-untyped-def]
    """A RayExecutor on the test's instance; `handles` collects what it submits."""
    from orchestrator.executors.ray import RayExecutor

    class Recording(RayExecutor):
        def submit(self, spec: JobSpec):  # type: ignore[no-untyped-def]
            h = super().submit(spec)
            if handles is not None:
                handles.append(h)
            return h

    return Recording(load_config().ray, "", grace=1.0)


def test_study_runs_on_ray_with_events_streamed_and_results_back(
    ray_study: Path, orch_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_SLEEP", "1.5")
    alpha = worktree(ray_study, "alpha")
    # Uncommitted: recorded as the diff, and what runs on the worker.
    (alpha / "branches/alpha/model.py").write_text("VALUE = 7\n")
    seen_live: set[str] = set()

    def on_update(run):  # type: ignore[no-untyped-def]
        for j in run.jobs:
            if j.stage == Stage.training and j.events_path.exists():
                if '"start"' in j.events_path.read_text():
                    seen_live.add(j.variant)

    cfg = load_config()
    run = launcher.train(cfg, orch_env, cfg.select(None), preset="tiny", on_update=on_update,
                         executor=executor())
    jobs = {j.variant: j for j in run.jobs}
    assert run.status == "done", [(j.name, j.reason) for j in run.jobs]
    assert seen_live == {"alpha", "beta"}  # events arrived while the jobs ran
    a = json.loads(jobs["alpha"].results_path.read_text())
    b = json.loads(jobs["beta"].results_path.read_text())
    assert a["value"] == 7 and b["value"] == 1
    assert jobs["alpha"].dirty and "VALUE = 7" in Path(jobs["alpha"].diff_path).read_text()
    assert jobs["alpha"].commit == git(alpha, "rev-parse", "HEAD").strip()
    # It ran from a shipped copy, not from the worktree.
    assert not Path(a["model_file"]).resolve().is_relative_to(alpha.resolve())
    for r in (a, b):
        assert r["cuda_visible_devices"] == "" and r["omp_num_threads"] == "1"
        assert r["tokenizer"] and Path(r["tokenizer"]).read_text() == "tokenizer tiny"
    events = [json.loads(ln)["event"] for ln in jobs["beta"].events_path.read_text().split("\n")
              if ln]
    assert events[0] == "start" and events[-1] == "end"
    assert (Path(jobs["beta"].output_dir) / "checkpoints" / "last.pt").exists()
    log = Path(jobs["beta"].log_path).read_text()
    assert "orch: on the local Ray instance" in log and "training beta" in log
    assert all(j.gate is not None and j.gate.passed for j in run.jobs)

    # Status and compare read the same files as after a local run.
    assert runner.invoke(app, ["status"]).exit_code == 0
    compare = runner.invoke(app, ["compare"])
    assert compare.exit_code == 0, compare.output


def test_a_killed_worker_is_reported_and_retried_from_its_checkpoint(
    ray_study: Path, orch_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_SLEEP", "30")
    handles: list = []
    killed: list[int] = []

    def on_update(run):  # type: ignore[no-untyped-def]
        j = run.job("alpha")
        ckpt = Path(j.output_dir) / "checkpoints" / "last.pt"
        for h in handles:
            if h.spec.name == j.name and h.worker_pid and ckpt.exists() and not killed:
                os.kill(h.worker_pid, signal.SIGKILL)
                killed.append(h.worker_pid)

    cfg = load_config()
    run = launcher.train(cfg, orch_env, cfg.select(["alpha"]), preset="tiny",
                         on_update=on_update, executor=executor(handles))
    j = run.job("alpha")
    assert killed and j.stage == Stage.done, j.reason
    log = Path(j.log_path).read_text()
    assert "orch: Ray worker lost: The worker died unexpectedly" in log
    assert "retry 1/1 from the last checkpoint" in log
    r = json.loads(j.results_path.read_text())
    assert r["resumed"] is True


def test_ctrl_c_cancels_the_cluster_tasks(
    ray_study: Path, orch_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_SLEEP", "60")
    handles: list = []

    def on_update(run):  # type: ignore[no-untyped-def]
        j = run.job("alpha")
        if j.stage == Stage.training and any(h.worker_pid for h in handles
                                             if h.spec.name == j.name):
            raise KeyboardInterrupt

    cfg = load_config()
    with pytest.raises(Interrupted):
        launcher.train(cfg, orch_env, cfg.select(["alpha"]), preset="tiny",
                       on_update=on_update, executor=executor(handles))
    h = next(h for h in handles if h.spec.name == "alpha")
    assert not h.alive() and h.poll() == 130
    state = json.loads((orch_env / "runs" / (orch_env / "latest").read_text().strip()
                        / "state.json").read_text())
    assert {j["stage"] for j in state["jobs"]} == {"cancelled"}
    # The training process went with its task.
    wait_for(lambda: not [p for p in Path("/proc").glob("[0-9]*/cmdline")
                          if b"branches.alpha.train" in _read(p)], timeout=10)


def test_a_gpu_job_on_a_cluster_without_gpus_fails_at_once(
    ray_study: Path, orch_env: Path
) -> None:
    cfg = (ray_study / "config.yaml").read_text().replace("cpu_fallback: true",
                                                          "cpu_fallback: false")
    (ray_study / "config.yaml").write_text(cfg)
    result = runner.invoke(app, ["train", "alpha", "--backend", "ray", "--plain", "--json"])
    assert result.exit_code == 5, result.output
    job = json.loads(result.stdout)["jobs"][0]
    assert job["stage"] == "failed"
    assert job["reason"] == "cannot run here: needs 1 GPU(s); the local Ray instance has none"


def test_an_unreachable_address_is_one_line_and_exit_2(
    spawned: Path, ray_cluster: object
) -> None:
    result = runner.invoke(app, ["train", "--backend", "ray", "--address", "127.0.0.1:9"])
    assert result.exit_code == 2
    assert "cannot reach the Ray cluster at 127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.output


def test_backend_ray_without_ray_installed_is_one_line_and_exit_2(
    spawned: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    result = runner.invoke(app, ["train", "--backend", "ray"])
    assert result.exit_code == 2
    assert "--backend ray needs ray, which is not installed" in result.stderr
    bad = runner.invoke(app, ["train", "--address", "10.0.0.1:6379"])
    assert bad.exit_code == 2 and "--address is for --backend ray" in bad.stderr


def test_pack_is_the_commit_plus_the_recorded_diff(git_repo: Path) -> None:
    import io
    import tarfile

    from orchestrator.executors.ray import pack
    from orchestrator.worktrees import snapshot

    (git_repo / "branches/alpha/model.py").write_text("VALUE = 3\n")
    (git_repo / "untracked.txt").write_text("not shipped")
    snap = snapshot(git_repo)
    (git_repo / "branches/alpha/model.py").write_text("VALUE = 4\n")  # after the record
    with tarfile.open(fileobj=io.BytesIO(pack(git_repo, snap.commit, snap.diff))) as tar:
        names = tar.getnames()
        model = tar.extractfile("./branches/alpha/model.py")
        assert model is not None and model.read() == b"VALUE = 3\n"
    assert "./untracked.txt" not in names and "./.git" not in names


def test_gpu_share_packs_small_jobs_as_fractions() -> None:
    from orchestrator.config import RayBackend
    from orchestrator.executors.ray import RayExecutor

    ex = RayExecutor.__new__(RayExecutor)
    ex.cfg = RayBackend(gpu_memory_gb=24)
    spec = JobSpec("j", ["x"], Path("."), Path("log"), gpus=(0,), gpu_memory_mb=6 * 1024)
    assert ex.gpu_share(spec) == 0.25
    assert ex.gpu_share(JobSpec("j", ["x"], Path("."), Path("log"), gpus=(0, 1))) == 2.0
    assert ex.gpu_share(JobSpec("j", ["x"], Path("."), Path("log"))) == 0.0
    ex.cfg = RayBackend()  # GPU size unknown: a whole GPU each
    assert ex.gpu_share(spec) == 1.0


def _read(p: Path) -> bytes:
    try:
        return p.read_bytes()
    except OSError:
        return b""


@pytest.mark.slow
def test_a_real_variant_trains_on_ray_at_micro(
    tmp_path: Path, ray_cluster: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.orch_fixtures import PROJECT_ROOT

    if git(PROJECT_ROOT, "rev-parse", "--is-inside-work-tree").strip() != "true":
        pytest.skip("the project is not a git checkout")
    clone = tmp_path / "study"
    git(tmp_path, "clone", "-q", str(PROJECT_ROOT), str(clone))
    git(clone, "checkout", "-q", "-B", "main")  # the study's base_ref, whatever was checked out
    monkeypatch.chdir(clone)
    monkeypatch.setenv("ORCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert runner.invoke(app, ["spawn", "baseline"]).exit_code == 0
    with open(clone / "config.yaml", "a") as f:
        f.write("ray:\n  cpu_fallback: true\n  forward_env: [ORCH_, HF_]\n")
    result = runner.invoke(app, ["train", "baseline", "--preset", "micro", "--backend", "ray",
                                 "--json", "--plain"])
    assert result.exit_code == 0, result.output[-3000:]
    job = json.loads(result.stdout)["jobs"][0]
    results = json.loads((Path(job["output_dir"]) / "results.json").read_text())
    assert results["status"] == "success" and results["preset"] == "micro"
    assert results["environment"]["device"] == "cpu"
    assert (Path(job["output_dir"]) / "events.jsonl").exists()


def test_orch_run_takes_the_same_backend_options(ray_study: Path, orch_env: Path) -> None:
    result = runner.invoke(app, ["run", "--backend", "ray", "--plain"])
    assert result.exit_code == 0, result.output
    latest = (orch_env / "latest").read_text().strip()
    state = json.loads((orch_env / "runs" / latest / "state.json").read_text())
    assert state["command"] == "run" and {j["stage"] for j in state["jobs"]} == {"done"}
    log = Path(state["jobs"][0]["log_path"]).read_text()
    assert "orch: on the local Ray instance" in log
    assert (orch_env / "runs" / latest / "report.html").exists()
    bad = runner.invoke(app, ["run", "--address", "10.0.0.1:6379"])
    assert bad.exit_code == 2 and "--address is for --backend ray" in bad.stderr
