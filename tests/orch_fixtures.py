"""Fixtures for the orchestrator's tests: a throwaway study repo with fake variants.

The template repo is built once per session and copied per test. Its variants follow
requirements.md in a few lines: the gate is a pytest folder, the train module writes
events.jsonl and results.json (and with --rehearse rehearsal.json, from a fake memory model:
1000 MB + 500 MB a clip for a step, 900 MB for setup, 1200 MB for evaluation). Environment
variables steer a fake train run: FAKE_SLEEP (seconds, default 0.2), FAKE_FAIL_<VARIANT>
("exit" or "oom"), FAKE_OOM_ABOVE (micro-batches above it run out of memory), FAKE_PEAK_MB
(the peak a real run reports instead of the model's).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import orchestrator

PROJECT_ROOT = Path(orchestrator.__file__).resolve().parents[1]

CONFIG = """\
base_ref: main
default_preset: tiny
gate_preset: micro
grace_seconds: 3
presets:
  micro: {}
  tiny: {}
shared_jobs:
  - name: tokenizer
    module: shared.tok
    presets: [tiny]
    depends_on: [shared/]
    artifact: tokenizer.ckpt
    pass_as: --tokenizer
variants:
  - name: alpha
    branch: exp-alpha
    folder: branches/alpha
    resources: {gpus: 1, gpu_memory_gb: 2, cpu_threads: 1}
  - name: beta
    branch: exp-beta
    folder: branches/beta
    resources: {gpus: 1, gpu_memory_gb: 2, cpu_threads: 1}
"""

SHARED_TOK = '''\
import argparse, os, pathlib, time
p = argparse.ArgumentParser()
p.add_argument("--preset"); p.add_argument("--output")
a = p.parse_args()
out = pathlib.Path(a.output)
(out / "tokenizer.ckpt").write_text(f"tokenizer {a.preset}")
counter = pathlib.Path(os.environ["ORCH_HOME"]) / "tokenizer-runs"
with open(counter, "a") as f:
    f.write(f"{time.time()}\\n")
'''

TRAIN = '''\
"""Fake train entry point: the contract of requirements.md in a few lines."""
import argparse, json, os, pathlib, sys, time

from branches.{pkg} import model

p = argparse.ArgumentParser()
p.add_argument("--preset"); p.add_argument("--output"); p.add_argument("--seed", type=int)
p.add_argument("--threads", type=int); p.add_argument("--tokenizer"); p.add_argument("--data")
p.add_argument("--resume", action="store_true"); p.add_argument("--device")
p.add_argument("--micro-batch", type=int); p.add_argument("--rehearse", action="store_true")
p.add_argument("--motion"); p.add_argument("--set", action="append", default=[])
a = p.parse_args()
BATCH = 8
REHEARSED = (1, 2)  # the micro-batch sizes a rehearsal measures, one step each
PHASES = {{"setup": 900.0, "evaluation": 1200.0}}  # memory that does not grow with the clips
micro = a.micro_batch or BATCH

def step_memory_mb(clips):  # grows by 500 MB a clip over 1000 MB, as a real one would
    return 1000.0 + 500.0 * clips
out = pathlib.Path(a.output)
ckpt = out / "checkpoints"
ckpt.mkdir(parents=True, exist_ok=True)
events = open(out / "events.jsonl", "a")

def emit(kind, **kw):
    events.write(json.dumps({{"event": kind, "time": time.time(), **kw}}) + "\\n")
    events.flush()

t0 = time.time()
emit("start", variant="{name}", preset=a.preset, seed=a.seed, pid=os.getpid(),
     resumed_from_epoch=1 if a.resume else 0, batch_size=BATCH, micro_batch=micro,
     accumulation=BATCH // micro)
print("training", "{name}", "on", a.device, "micro-batch", micro, flush=True)
stepped = max(REHEARSED) if a.rehearse else micro  # the largest micro-batch a step takes
oom_above = os.environ.get("FAKE_OOM_ABOVE")
if oom_above is not None and stepped > int(oom_above):
    emit("error", kind="oom", message=f"CUDA out of memory (injected: micro-batch {{stepped}})")
    sys.exit(5)
peak = max(step_memory_mb(stepped), *PHASES.values())
if a.rehearse:
    (out / "rehearsal.json").write_text(json.dumps({{
        "batch_size": BATCH, "micro_batch": micro, "accumulation": BATCH // micro,
        "device": a.device, "precision": "fp32", "memory_source": "process_peak_rss",
        "points": [{{"micro_batch": m, "peak_memory_mb": step_memory_mb(m),
                    "peak_allocated_mb": None, "step_seconds": 0.01, "flops": 1e9 * m}}
                   for m in REHEARSED],
        "phases": {{name: {{"peak_memory_mb": mb, "peak_allocated_mb": None}}
                   for name, mb in PHASES.items()}},
        "peak_memory_mb": peak, "parameters": {{"trainable": 10, "frozen": 5}},
        "run": {{"epochs": 2, "steps_per_epoch": 4, "eval_clips": 2, "evaluations": 2}},
        "evaluation": {{"precision": "fp32", "every_epochs": 1, "clips": 1,
                       "epoch": {{"seconds": 0.01, "flops": 1e9}},
                       "final": {{"seconds": 0.01, "flops": 2e9}}}},
        "stand_in": os.environ.get("FAKE_ASSET"), "motion": a.motion}}))
else:
    peak = float(os.environ.get("FAKE_PEAK_MB", peak))
fail = os.environ.get("FAKE_FAIL_{env}", "")
if fail == "oom":
    print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", flush=True)
    emit("error", kind="oom", message="CUDA out of memory. Tried to allocate 2.00 GiB")
    sys.exit(1)
if fail == "exit":
    print("Traceback (most recent call last):", flush=True)
    print("ValueError: loss is nan", flush=True)
    sys.exit(1)
(ckpt / "last.pt").write_text("epoch 1")
emit("checkpoint", epoch=1, path="checkpoints/last.pt")
sleep = float(os.environ.get("FAKE_SLEEP_{env}", os.environ.get("FAKE_SLEEP", "0.2")))
if a.resume:
    sleep = 0.1
time.sleep(sleep)
def row(mse):
    return {{"mse": mse, "mae": mse / 2, "psnr": 30 - mse, "ssim": 0.9, "mse_per_pixel": mse / 100,
            "per_frame": {{"mse": [mse, mse]}}}}

results = {{
    "schema": 1, "variant": "{name}", "preset": a.preset, "seed": a.seed, "status": "success",
    "config": {{"train": {{"batch_size": BATCH, "micro_batch": micro,
                          "accumulation": BATCH // micro}}, "rehearsal": a.rehearse,
               "overrides": dict(kv.split("=", 1) for kv in a.set)}},
    "parameters": {{"trainable": 10, "frozen": 5}},
    "environment": {{"python": sys.version.split()[0], "torch": "none",
                    "device": a.device or "cpu",
                    "cuda": None, "platform": sys.platform, "threads": a.threads}},
    "history": [{{"epoch": 1, "train_loss": 1.0, "eval": {{"mse": 5.0}}, "seconds": 0.1}}],
    "final": {{"model": row(5.0 - a.seed), "black": row(20.0), "copy_last": row(9.0),
              "oracle": row(1.0)}},
    "timings": {{"wall_s": 0.2, "train_s": 0.1, "samples_per_s": 100.0, "peak_memory_mb": peak}},
    "artifacts": {{"checkpoint": "checkpoints/last.pt", "frames": None}},
    "value": model.VALUE, "resumed": a.resume, "tokenizer": a.tokenizer, "threads": a.threads,
    "device": a.device, "micro_batch": micro, "motion": a.motion, "argv": sys.argv[1:],
    "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    "threads_granted": (pathlib.Path(os.environ["ORCH_THREADS_FILE"]).read_text().strip()
                        if pathlib.Path(os.environ["ORCH_THREADS_FILE"]).exists() else None),
    "cwd": os.getcwd(), "model_file": model.__file__, "start": t0, "end": time.time(),
}}
(out / "results.json").write_text(json.dumps(results))
emit("end", status="success", wall_s=time.time() - t0, results="results.json")
'''

GATE = '''\
from branches.{pkg} import model


def test_value_is_int():
    assert isinstance(model.VALUE, int)


def test_value_positive():
    assert model.VALUE > 0
'''

VARIANTS = {"alpha": "alpha", "beta": "beta"}


def write_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def commit_all(cwd: Path, message: str) -> None:
    git(cwd, "add", "-A")
    git(cwd, "commit", "-q", "-m", message)


def template_files() -> dict[str, str]:
    files = {
        ".gitignore": ".orch/\n__pycache__/\n*.pyc\n",
        "config.yaml": CONFIG,
        "shared/__init__.py": "",
        "shared/tok.py": SHARED_TOK,
        "branches/__init__.py": "",
    }
    for name, pkg in VARIANTS.items():
        files[f"branches/{pkg}/__init__.py"] = ""
        files[f"branches/{pkg}/model.py"] = "VALUE = 1\n"
        files[f"branches/{pkg}/train.py"] = TRAIN.format(
            name=name, pkg=pkg, env=name.upper().replace("-", "_")
        )
        files[f"branches/{pkg}/tests/test_gate.py"] = GATE.format(pkg=pkg)
    return files


@pytest.fixture(scope="session")
def template_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("template") / "study"
    root.mkdir()
    write_tree(root, template_files())
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "test@example.com")
    git(root, "config", "user.name", "orch test")
    git(root, "config", "commit.gpgsign", "false")
    commit_all(root, "study")
    return root


@pytest.fixture(autouse=True)
def orch_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test touches real state or real GPUs: state in tmp, a 2-core machine, no GPU."""
    home = tmp_path / "orch-home"
    monkeypatch.setenv("ORCH_HOME", str(home))
    monkeypatch.setenv("ORCH_GPUS", "")
    monkeypatch.setenv("ORCH_CPU_CORES", "2")
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("FAKE_SLEEP", raising=False)
    return home


@pytest.fixture
def git_repo(template_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy of the study repo, as the working directory."""
    root = tmp_path / "study"
    shutil.copytree(template_repo, root, symlinks=True)
    monkeypatch.chdir(root)
    return root


def orch_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator.cli.main", *args]


def orch_env_vars(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PROJECT_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def wait_for(predicate: object, timeout: float = 30.0, step: float = 0.05) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")


def read_state(home: Path) -> dict[str, object] | None:
    latest = home / "latest"
    if not latest.exists():
        return None
    rid = latest.read_text().strip()
    path = home / "runs" / rid / "state.json"
    return json.loads(path.read_text()) if path.exists() else None


@pytest.fixture
def spawned(git_repo: Path) -> Iterator[Path]:
    """The study repo with both variants' worktrees spawned."""
    from typer.testing import CliRunner

    from orchestrator.cli.main import app

    result = CliRunner().invoke(app, ["spawn"])
    assert result.exit_code == 0, result.output
    yield git_repo


def worktree(repo: Path, variant: str) -> Path:
    return repo / ".orch" / "worktrees" / variant


__all__ = [
    "PROJECT_ROOT",
    "commit_all",
    "git",
    "git_repo",
    "orch_cmd",
    "orch_env",
    "orch_env_vars",
    "read_state",
    "spawned",
    "template_repo",
    "wait_for",
    "worktree",
    "write_tree",
]
