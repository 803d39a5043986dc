"""How fast is orch itself? Wall time of `orch spawn` for three variants, `orch test-all`
(gates in parallel) against the same gates run one after another, the CPU the live view
costs per second of watching, and the CPU orch's own process spends per training job when it
drives many short jobs (100 jobs of 0.5 s on 8 CPU slots, the git snapshot of each job
included).

    python -m benchmarks.orchestrator [--seconds N] [--jobs N] [--job-seconds S]

Works on a throwaway study repo with three small fake variants (built in a temp dir), so it
measures orch's overhead, not a model's.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.orch_fixtures import CONFIG, commit_all, git, template_files, write_tree  # noqa: E402

GAMMA = """\
  - name: gamma
    branch: exp-gamma
    folder: branches/gamma
    resources: {gpus: 1, gpu_memory_gb: 2, cpu_threads: 1}
"""


def make_study(root: Path, extra: tuple[str, ...] = ("gamma",)) -> None:
    """The test suite's fake study, with the variants ``extra`` beside alpha and beta."""
    files = template_files()
    files["config.yaml"] = CONFIG + "".join(GAMMA.replace("gamma", name) for name in extra)
    for variant in extra:
        for name in ("__init__.py", "model.py", "train.py", "tests/test_gate.py"):
            files[f"branches/{variant}/{name}"] = (
                files[f"branches/beta/{name}"].replace("beta", variant)
                .replace("BETA", variant.upper()))
    write_tree(root, files)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "bench@example.com")
    git(root, "config", "user.name", "bench")
    commit_all(root, "study")


def orch(root: Path, env: dict[str, str], *args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "orchestrator.cli.main", *args],
        cwd=root, env=env, check=True, capture_output=True,
    )
    return time.perf_counter() - t0


def sequential_gates(root: Path, env: dict[str, str]) -> float:
    from orchestrator.config import load_config
    from orchestrator.gate import gate_spec

    cfg = load_config(root)
    t0 = time.perf_counter()
    for v in cfg.enabled_variants():
        out = Path(env["ORCH_HOME"]) / "sequential" / v.name
        out.mkdir(parents=True, exist_ok=True)
        spec = gate_spec(cfg, v, cfg.worktree_path(v), out, threads=1)
        subprocess.run(spec.argv, cwd=spec.cwd, env={**env, **spec.env}, check=True,
                       capture_output=True)
    return time.perf_counter() - t0


def live_view_cpu(home: Path, seconds: float) -> float:
    """CPU seconds per second that the live view spends following three training jobs."""

    from orchestrator import ui
    from orchestrator.monitor import LiveView
    from orchestrator.state import JobState, RunState, Stage, save_run

    run = RunState("bench", "tiny", time.time(), orchestrator_pid=os.getpid())
    for name in ("alpha", "beta", "gamma"):
        out = home / "runs" / "bench" / name
        out.mkdir(parents=True, exist_ok=True)
        (out / "train.log").write_text("step 1\n")
        run.jobs.append(JobState(name, stage=Stage.training, device="cpu", started=time.time(),
                                 output_dir=str(out), log_path=str(out / "train.log")))
    save_run(home, run)
    devnull = open(os.devnull, "w")  # noqa: SIM115
    ui.err.file = devnull  # render fully, to nowhere
    ui.err._force_terminal = True
    step = 0
    c0 = time.process_time()
    t_end = time.monotonic() + seconds
    with LiveView(ui.err, live=True) as view:
        while time.monotonic() < t_end:
            step += 1
            for j in run.jobs:  # what a training job appends 4 times a second
                with open(Path(j.output_dir) / "events.jsonl", "a") as f:
                    f.write(f'{{"event": "progress", "time": {time.time()}, "epoch": 1, '
                            f'"step": {step}, "total_steps": 1000, "loss": {1 / step}}}\n')
            view.update(run)
            time.sleep(0.25)  # the launcher's update interval
    cpu = time.process_time() - c0
    devnull.close()
    return cpu / seconds


def _cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def orch_cpu_per_job(tmp: Path, n_jobs: int, job_seconds: float, slots: int) -> dict[str, float]:
    """Drive ``n_jobs`` fake trainings of ``job_seconds`` each on ``slots`` CPU slots through
    the launcher, in this process, with the plain live view `orch train --plain` uses. The
    CPU of orch's own process is measured, plus the git commands of each job's snapshot
    (children of orch; the trainings' own CPU is not orch's)."""
    from rich.console import Console

    from orchestrator import launcher
    from orchestrator import worktrees as wt
    from orchestrator.config import load_config
    from orchestrator.monitor import LiveView

    variants = ("gamma", "delta")
    root = tmp / "many"
    root.mkdir()
    make_study(root, variants)
    os.environ.update({"ORCH_HOME": str(tmp / "many-home"), "ORCH_GPUS": "",
                       "ORCH_CPU_CORES": str(slots), "FAKE_SLEEP": str(job_seconds),
                       "PYTHONPATH": str(ROOT)})
    cwd = os.getcwd()
    os.chdir(root)
    git_cpu = [0.0]
    snapshot = wt.snapshot

    def measured_snapshot(worktree: Path) -> wt.Snapshot:
        before = _cpu_seconds(resource.RUSAGE_CHILDREN)  # only git ends while this runs
        try:
            return snapshot(worktree)
        finally:
            git_cpu[0] += _cpu_seconds(resource.RUSAGE_CHILDREN) - before

    try:
        cfg = load_config(root)
        wt.spawn(cfg, cfg.variants)
        seeds = -(-n_jobs // len(cfg.variants))
        wt.snapshot = measured_snapshot  # type: ignore[assignment]
        view = LiveView(Console(file=io.StringIO()), live=False)
        with view:
            t0, cpu0 = time.perf_counter(), _cpu_seconds(resource.RUSAGE_SELF)
            run = launcher.train(cfg, Path(os.environ["ORCH_HOME"]), cfg.variants, "micro",
                                 seeds=seeds, on_update=view.update)
            cpu = _cpu_seconds(resource.RUSAGE_SELF) - cpu0
            wall = time.perf_counter() - t0
    finally:
        wt.snapshot = snapshot  # type: ignore[assignment]
        os.chdir(cwd)
    jobs = len(run.jobs)
    assert all(j.stage.value == "done" for j in run.jobs), [j.reason for j in run.jobs]
    return {"jobs": jobs, "wall_s": wall, "orch_cpu_s": cpu, "git_cpu_s": git_cpu[0],
            "per_job_ms": (cpu + git_cpu[0]) / jobs * 1000}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0, help="how long to watch the live view")
    p.add_argument("--jobs", type=int, default=100, help="training jobs for the CPU per job")
    p.add_argument("--job-seconds", type=float, default=0.5, help="length of each such job")
    p.add_argument("--slots", type=int, default=8, help="CPU slots they share")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="orch-bench-") as tmp:
        root = Path(tmp) / "study"
        root.mkdir()
        make_study(root)
        env = {**os.environ, "ORCH_HOME": str(Path(tmp) / "home"), "ORCH_GPUS": "",
               "PYTHONPATH": str(ROOT)}
        spawn_s = orch(root, env, "spawn")
        respawn_s = orch(root, env, "spawn")
        parallel_s = orch(root, env, "test-all", "--plain")
        seq_s = sequential_gates(root, env)
        cpu = live_view_cpu(Path(tmp) / "view", a.seconds)
        many = orch_cpu_per_job(Path(tmp), a.jobs, a.job_seconds, a.slots)
    print(f"cores                         {os.cpu_count()}")
    print(f"spawn, 3 variants (new)       {spawn_s:6.2f} s")
    print(f"spawn, 3 variants (existing)  {respawn_s:6.2f} s")
    print(f"test-all, gates in parallel   {parallel_s:6.2f} s")
    print(f"the same gates one by one     {seq_s:6.2f} s")
    print(f"sequential / parallel         {seq_s / parallel_s:6.2f} x")
    print(f"live view CPU                 {cpu * 100:6.2f} % of one core")
    print(f"{many['jobs']:.0f} jobs of {a.job_seconds} s on {a.slots} slots  "
          f"{many['wall_s']:6.2f} s wall")
    print(f"  orch process CPU            {many['orch_cpu_s']:6.2f} s")
    print(f"  git snapshots CPU           {many['git_cpu_s']:6.2f} s")
    print(f"  orch CPU per job            {many['per_job_ms']:6.1f} ms")


if __name__ == "__main__":
    main()
