"""What every process orch starts gets: its environment (import path, devices, thread share)
and, for a training job, the train contract's command line (requirements.md section 3).

A job runs with its worktree first on the import path, sees only the devices it was given,
and uses the threads it was granted. A CPU job may be granted more threads while it runs
(cores freed by jobs that ended): orch rewrites a small file the job's training loop follows
(``shared.runtime.ThreadBudget``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.config import Config, Variant
from orchestrator.formats import JobState, write_text_atomic
from orchestrator.overrides import SET_FLAG

PRESET_ENV = "ORCH_PRESET"
THREADS_FILE_ENV = "ORCH_THREADS_FILE"
THREADS_FILE = "orch-threads"  # in a training job's output dir: its current thread grant


def job_env(worktree: Path, cuda_visible: str, threads: int, preset: str,
            threads_file: Path | None = None) -> dict[str, str]:
    """The variables orch sets for a process in ``worktree`` (merged over its own)."""
    path = os.environ.get("PYTHONPATH", "")
    env = {
        "PYTHONPATH": str(worktree) + (os.pathsep + path if path else ""),
        "CUDA_VISIBLE_DEVICES": cuda_visible,
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",  # the GPU indices nvidia-smi shows
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "PYTHONUNBUFFERED": "1",
        PRESET_ENV: preset,
    }
    if threads_file is not None:
        threads_file.unlink(missing_ok=True)  # a grant left by an earlier attempt
        env[THREADS_FILE_ENV] = str(threads_file)
    return env


def grant_threads(threads_file: Path, threads: int) -> None:
    """Let the job that follows ``threads_file`` use ``threads`` threads from now on."""
    write_text_atomic(threads_file, f"{threads}\n")


@dataclass(frozen=True)
class StandIns:
    """What a rehearsal uses in place of a preset's downloads (its rehearsal assets)."""

    env: dict[str, str] = field(default_factory=dict)  # e.g. HF_HOME of a private hub cache
    inputs: dict[str, str] = field(default_factory=dict)  # input name -> stand-in file


def train_argv(cfg: Config, job: JobState, variant: Variant, *, threads: int, device: str,
               shared_args: list[str], resume: bool, rehearsal: StandIns | None = None,
               ) -> list[str]:
    """The command that runs ``job``: preset, output, seed, threads, device and micro-batch,
    the shared jobs' artifacts and the preset's inputs, then the preset's and the variant's
    own arguments and the command line's overrides (``--set KEY=VALUE``); in a rehearsal
    `--rehearse` and the stand-in inputs."""
    out = Path(job.output_dir)
    preset = cfg.presets[job.preset]
    argv = [
        cfg.interpreter(), "-m", variant.module,
        "--preset", job.preset, "--output", str(out), "--seed", str(job.seed),
        "--threads", str(threads), "--device", "cpu" if device == "cpu" else "cuda",
        *shared_args,
    ]
    if job.micro_batch is not None:
        argv += ["--micro-batch", str(job.micro_batch)]
    if resume and (out / "checkpoints" / "last.pt").exists():
        argv.append("--resume")
    if rehearsal is not None:
        argv.append("--rehearse")
    for item in cfg.inputs:
        if job.preset in item.presets and item.serves(job.variant):
            path = (rehearsal.inputs.get(item.name) if rehearsal is not None else None)
            argv += [item.pass_as, path or str(cfg.file_path(item.path))]
    if preset.data:
        argv += ["--data", str(cfg.file_path(preset.data))]
    if preset.tokenizer and "--tokenizer" not in argv:
        argv += ["--tokenizer", preset.tokenizer]
    # The command line's overrides last: they win over the config's own train arguments.
    overrides = [a for key, value in job.overrides.items() for a in (SET_FLAG, f"{key}={value}")]
    return [*argv, *preset.train_args, *variant.train_args_at(job.preset), *overrides]
